"""Sharing models: the model card, loading by Hub id from the Hugging Face cache (offline, through
huggingface_hub's own snapshot_download), and what `push` would upload. Nothing here reaches
the network: every Hub test runs with HF_HUB_OFFLINE=1 on a cache it lays out itself."""

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard, metadata_load
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.core.errors import ConfigError
from accel_signs.data.store import open_store
from accel_signs.model.card import model_card
from accel_signs.model.hub import parse_hub_spec, resolve_checkpoint
from accel_signs.tools.inference import predict
from helpers import assert_one_line_error, cli_env, train_tiny_run

runner = CliRunner()
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


@pytest.fixture(scope="module")
def run(tiny_store, tmp_path_factory):
    """Trained on signer 01, validated and tested on signer 02 (signer-independent), evaluated."""
    return train_tiny_run(tiny_store, tmp_path_factory.mktemp("runs"), "--num-epochs", "1", "--val-signers", "02")


def _card_metrics(path: Path) -> dict[str, float]:
    card = ModelCard.load(path)
    return {r.metric_type: r.metric_value for r in card.data.eval_results}


def test_card_validates_and_its_metrics_are_the_evaluations(run):
    best = run / "best"
    test = json.loads((run / "eval-test" / "metrics.json").read_text())
    assert json.loads((best / "eval-test" / "metrics.json").read_text()) == test  # the card's own copy
    card = ModelCard.load(best / "README.md")
    meta = metadata_load(best / "README.md")
    assert meta["library_name"] == "accel-signs" and "sign-language-recognition" in meta["tags"]
    assert _card_metrics(best / "README.md") == {
        "accuracy": test["top1"],
        "top_k_accuracy": test["top5"],
        "f1": test["macro_f1"],
    }
    result = card.data.eval_results[0]
    assert result.dataset_split == "test" and result.dataset_config == "signer-independent"
    text = card.text
    assert "| 02 |" in text and "Signers seen in training: 01" in text  # per signer; limitations
    assert "right_hand" in text and "Detection rates" in text and "frame sizes" in text
    ckpt = json.loads((best / "config.json").read_text())
    for c in ckpt["classes"]:
        assert f"| {c['id']} | {c['sign']} | {c['en']} |" in text
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert "training_curves.png" in images and "eval-test/confusion.png" in images
    assert all((best / p).is_file() for p in images)
    assert (best / "README.md").read_text() == model_card(best)  # nothing but the checkpoint's files


def test_evaluate_rewrites_the_card(run, tmp_path):
    copy = tmp_path / "r"
    shutil.copytree(run, copy)
    result = runner.invoke(app, ["evaluate", str(copy / "best"), "--signers", "01", "--no-plots"])
    assert result.exit_code == 0, result.stderr
    test = json.loads((copy / "eval-test" / "metrics.json").read_text())
    assert test["signers"] == ["01"]
    assert _card_metrics(copy / "best" / "README.md") == {
        "accuracy": test["top1"],
        "top_k_accuracy": test["top5"],
        "f1": test["macro_f1"],
    }
    card = ModelCard.load(copy / "best" / "README.md")
    assert card.data.eval_results[0].dataset_config == "signers seen in training"
    assert not (copy / "best" / "eval-test" / "confusion.png").exists()  # not drawn this time: not kept


def test_push_dry_run_lists_exactly_what_goes_up(run, tmp_path):
    best = tmp_path / "best"
    shutil.copytree(run / "best", best)
    (best / "notes.txt").write_text("mine")
    (best / "extra.pt").write_bytes(b"not uploaded")
    result = runner.invoke(app, ["push", str(best), "someone/tiny-signs", "--dry-run", "--private"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    listed = {line.split()[-1]: int(line.split()[0].replace(",", "")) for line in lines[:-1]}
    assert set(listed) == {
        "README.md",
        "config.json",
        "model.safetensors",
        "training_curves.png",
        "eval-test/metrics.json",
        "eval-test/confusion.png",
        "eval-test/per_class_f1.png",
        "eval-test/top_confusions.png",
    }
    assert listed["model.safetensors"] == (best / "model.safetensors").stat().st_size
    assert lines[-1] == "dry run: 8 files would go to hf://someone/tiny-signs"
    assert "hf://someone/tiny-signs" in model_card(best, "someone/tiny-signs")  # the pushed card names its repo


@pytest.mark.parametrize(
    "args,needle",
    [(["not a repo"], "not a Hub model id"), (["a/b", "--revision", "x"], "accel_signs checkpoint")],
)
def test_push_refusals(tmp_path, args, needle):
    (tmp_path / "config.json").write_text(json.dumps({"format": "other"}))
    result = runner.invoke(app, ["push", str(tmp_path), *args[:1], "--dry-run", *args[1:]])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, needle)


def test_hub_spec_syntax():
    assert parse_hub_spec("hf://user/name") == ("user/name", None)
    assert parse_hub_spec("hf://user/name@v1.0") == ("user/name", "v1.0")
    assert parse_hub_spec("hf:/user/name@" + COMMIT_A) == ("user/name", COMMIT_A)  # what Path() makes of it
    for bad in ("hf://name", "hf://a/b/c", "hf://a/b@", "hf://a/b@x@y"):
        with pytest.raises(ConfigError, match="not a Hub model id"):
            parse_hub_spec(bad)


def test_without_huggingface_hub_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ConfigError, match=r"pip install 'accel-signs\[hub\]'"):
        resolve_checkpoint("hf://user/name")


def _fill_cache(cache: Path, repo_id: str, commit: str, files: dict[str, bytes], refs: tuple[str, ...]) -> None:
    """One commit of a model repo in the Hugging Face cache, laid out as huggingface_hub lays it
    out: blobs/<hash> holds each file's bytes, snapshots/<commit>/<name> links to its blob, and
    refs/<branch> holds the commit hash."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (name.count("/") + 2)) / "blobs" / blob.name)
    for ref in refs:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


PROBE = """
import json, sys
from accel_signs.core.errors import AccelSignsError
from accel_signs.tools.inference import predict
out = {}
for spec in sys.argv[2:]:
    try:
        out[spec] = predict(spec, sys.argv[1], top_k=3)
    except AccelSignsError as e:
        out[spec] = {"error": str(e)}
print(json.dumps(out))
"""


def test_load_by_repo_id_offline_from_the_cache(run, tiny_store, tmp_path):
    best = run / "best"
    clip = tmp_path / "clip.npy"
    np.save(clip, open_store(tiny_store).split("test").clip(0))
    files = {n: (best / n).read_bytes() for n in ("model.safetensors", "config.json", "README.md")}
    cache = tmp_path / "hf" / "hub"
    _fill_cache(cache, "someone/tiny", COMMIT_A, files, ("main",))
    # a later commit on branch v2 with other weights; a repo that also holds a pickle
    other = {k: v + 0.5 for k, v in load_file(best / "model.safetensors").items()}
    save_file(other, tmp_path / "other.safetensors", metadata={"format": "accel_signs.checkpoint"})
    _fill_cache(
        cache,
        "someone/tiny",
        COMMIT_B,
        {**files, "model.safetensors": (tmp_path / "other.safetensors").read_bytes()},
        ("v2",),
    )
    _fill_cache(cache, "someone/pickled", COMMIT_A, {**files, "pytorch_model.bin": b"\x80\x04K\x01."}, ("main",))
    env = cli_env(tmp_path, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(cache))
    specs = ["hf://someone/tiny", f"hf://someone/tiny@{COMMIT_A}", "hf://someone/tiny@v2", "hf://someone/pickled"]
    specs.append("hf://someone/absent")
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(clip), *specs], env=env, capture_output=True, text=True, timeout=120
    )
    assert probe.returncode == 0, probe.stderr
    got = json.loads(probe.stdout)
    local = predict(best, clip, top_k=3)
    assert got["hf://someone/tiny"] == local and got[f"hf://someone/tiny@{COMMIT_A}"] == local
    assert got["hf://someone/tiny@v2"] != local and "error" not in got["hf://someone/tiny@v2"]  # the pinned branch
    assert "holds pickle files (pytorch_model.bin)" in got["hf://someone/pickled"]["error"]
    assert "not in the Hugging Face cache" in got["hf://someone/absent"]["error"]
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "accel_signs",
            "-q",
            "predict",
            "hf://someone/tiny",
            str(clip),
            "--top-k",
            "3",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == local
    info = subprocess.run(
        [sys.executable, "-m", "accel_signs", "info", "hf://someone/tiny@v2"], env=env, capture_output=True, text=True
    )
    assert info.returncode == 0 and f"snapshots/{COMMIT_B}" in info.stdout, info.stderr
    card = (cache / "models--someone--tiny" / "snapshots" / COMMIT_A / "README.md").read_text()
    ev = subprocess.run(
        [
            sys.executable,
            "-m",
            "accel_signs",
            "-q",
            "evaluate",
            f"hf://someone/tiny@{COMMIT_A}",
            "--data",
            str(tiny_store),
        ]
        + ["--no-plots"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ev.returncode == 0, ev.stderr
    out = json.loads((tmp_path / f"eval-test-someone--tiny-{COMMIT_A}" / "metrics.json").read_text())
    local = json.loads((run / "eval-test" / "metrics.json").read_text())
    # The run evaluated with this process's threads, the CLI with one (cli_env): the loss's sums
    # may round differently (they do on AVX-512 CPUs); the predictions, hence every count, may not.
    assert out.pop("mean_loss") == pytest.approx(local.pop("mean_loss"), rel=1e-6)
    assert out == local | {"checkpoint": out["checkpoint"], "mixed_precision": "no"}
    assert (cache / "models--someone--tiny" / "snapshots" / COMMIT_A / "README.md").read_text() == card  # untouched
