"""prepare from the seed's npz tree and memory map, info, and training on the result."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.data.store import open_store
from helpers import assert_one_line_error

runner = CliRunner()
SIGNS, SIGNERS, SPLITS = (1, 2, 5), ("01", "02", "03"), ("train", "test")


def _clips():
    """{(split, sign, signer): [clip, ...]} with real-data quirks: undetected hands, short clips."""
    rng = np.random.default_rng(0)
    out = {}
    for split in SPLITS:
        for sign in SIGNS:
            for signer in SIGNERS:
                clips = []
                for _ in range(3 if split == "train" else 1):
                    n = int(rng.choice([4, 13, 40, 77]))
                    clip = rng.random((n, 184, 4), dtype=np.float32)
                    clip[rng.random(n) < 0.3, 142:163] = 0  # right hand not detected
                    clips.append(clip)
                out[split, sign, signer] = clips
    return out


def write_npz_tree(root, clips):
    for (split, sign, signer), arrays in clips.items():
        folder = root / f"{signer}-{split}"
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / f"{sign:04d}.npz", *arrays)
    return root


def write_seed_mmap(root, clips, signer_order=SIGNERS):
    """The seed's exact memory-map format, pickled length index included; clips concatenated
    in the order the index dict was filled (signer_order within each sign)."""
    root.mkdir(parents=True)
    for split in SPLITS:
        ordered = [(sign, signer, c) for sign in SIGNS for signer in signer_order for c in clips[split, sign, signer]]
        frames = np.concatenate([c for _, _, c in ordered]).astype(np.float32)
        mm = np.memmap(root / f"{split}_X.mmap", dtype=np.float32, mode="w+", shape=frames.shape)
        mm[:] = frames
        mm.flush()
        del mm
        np.save(root / f"{split}_X_shape.npy", np.array(frames.shape))
        np.savez(root / f"{split}_y.npz", np.array([sign - 1 for sign, _, _ in ordered], dtype=np.int64))
        lens = {
            sign: {int(signer): [len(c) for c in clips[split, sign, signer]] for signer in signer_order}
            for sign in SIGNS
        }
        np.save(root / f"{split}_X_map_samples_lens.npy", lens, allow_pickle=True)
    return root


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    base = tmp_path_factory.mktemp("seed")
    clips = _clips()
    return write_npz_tree(base / "npz", clips), write_seed_mmap(base / "mmap", clips), clips


def _prepare(*args):
    return runner.invoke(app, ["prepare", *map(str, args)])


def test_both_sources_give_identical_stores(sources, tmp_path):
    npz, mmap, clips = sources
    a, b = tmp_path / "from_npz", tmp_path / "from_mmap"
    r1 = _prepare(npz, a, "--from", "npz")
    r2 = _prepare(mmap, b, "--from", "seed-mmap", "--allow-pickle")
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.stderr + r2.stderr
    sa, sb = open_store(a), open_store(b)
    assert sa.classes == sb.classes and [c.sign for c in sa.classes] == list(SIGNS) and sa.classes[2].en == "4"
    assert sa.signers == sb.signers == SIGNERS
    for split in SPLITS:
        xa, xb = sa.split(split), sb.split(split)
        np.testing.assert_array_equal(xa.clips, xb.clips)
        assert len(xa) == sum(len(clips[split, s, g]) for s in SIGNS for g in SIGNERS)
        for i in range(len(xa)):
            np.testing.assert_array_equal(xa.clip(i), xb.clip(i))
        # Clip-for-clip the source arrays, in the seed's order: sign, signer, file order.
        expected = [c for s in SIGNS for g in SIGNERS for c in clips[split, s, g]]
        for i, c in enumerate(expected):
            np.testing.assert_array_equal(xa.clip(i), c)
    assert "found" in r1.stderr and "missing" not in r1.stderr


def test_seed_index_order_and_signer_order_do_not_matter(sources, tmp_path):
    npz, _, clips = sources
    shuffled = write_seed_mmap(tmp_path / "mmap", clips, signer_order=("02", "01", "03"))
    a, b = tmp_path / "a", tmp_path / "b"
    assert _prepare(npz, a, "--signers", "03,01").exit_code == 0
    assert _prepare(shuffled, b, "--from", "seed-mmap", "--allow-pickle", "--signers", "03,01").exit_code == 0
    sa, sb = open_store(a), open_store(b)
    assert sa.signers == sb.signers == ("01", "03")
    for split in SPLITS:
        np.testing.assert_array_equal(sa.split(split).clips, sb.split(split).clips)
        for i in range(len(sa.split(split))):
            np.testing.assert_array_equal(sa.split(split).clip(i), sb.split(split).clip(i))


def test_subsets_and_float16(sources, tmp_path):
    npz, mmap, _ = sources
    for src, extra in ((npz, ["--from", "npz"]), (mmap, ["--from", "seed-mmap", "--allow-pickle"])):
        out = tmp_path / src.name
        result = _prepare(
            src, out, *extra, "--signs", "2,5", "--signers", "03", "--splits", "train", "--dtype", "float16"
        )
        assert result.exit_code == 0, result.stderr
        store = open_store(out)
        assert (
            [c.sign for c in store.classes] == [2, 5] and store.signers == ("03",) and list(store.splits) == ["train"]
        )
        assert store.dtype == "float16" and len(store.split("train")) == 2 * 3


def test_info_on_store_and_checkpoint(sources, tmp_path):
    out = tmp_path / "s"
    assert _prepare(sources[0], out).exit_code == 0
    text = runner.invoke(app, ["info", str(out)]).stdout
    assert "split train: 27 clips" in text and "detected in frames:" in text and "right_hand" in text
    assert "clips shorter than 50 frames" in text and "signs 1-2,5" in text


def test_train_on_a_prepared_store_subsets_and_signer_independent(sources, tmp_path):
    store = tmp_path / "s"
    assert _prepare(sources[0], store).exit_code == 0
    common = [
        "train",
        "--data",
        str(store),
        "--output-dir",
        str(tmp_path / "runs"),
        "--num-epochs",
        "1",
        "--model-size",
        "t_1_1",
        "--batch-size",
        "8",
    ]
    sub = runner.invoke(app, [*common, "--run-name", "sub", "--signs", "1-2", "--signers", "01,02"])
    assert sub.exit_code == 0, sub.stderr
    meta = json.loads((tmp_path / "runs" / "sub" / "best" / "config.json").read_text())
    assert [c["sign"] for c in meta["classes"]] == [1, 2] and meta["data"]["signers"] == ["01", "02"]
    si = runner.invoke(app, [*common, "--run-name", "si", "--val-signers", "03", "--test-signers", "03"])
    assert si.exit_code == 0, si.stderr
    run = tmp_path / "runs" / "si"
    split = json.loads((run / "split.json").read_text())
    s = open_store(store).split("train")
    assert set(s.signers[split["val_ids"]]) == {2} and set(s.signers[split["train_ids"]]) == {0, 1}
    m = json.loads((run / "eval-test" / "metrics.json").read_text())
    assert m["signers"] == ["03"] and list(m["per_signer"]) == ["03"] and m["num_samples"] == 3
    info = runner.invoke(app, ["info", str(run / "best")]).stdout
    assert "val signers 03" in info and "test signers 03" in info


def _nan_npz(root):
    clip = np.zeros((5, 184, 4), np.float32)
    clip[2, 3, 1] = np.nan
    np.savez(root / "01-train" / "0002.npz", clip)


def _bad_shape_npz(root):
    np.savez(root / "01-train" / "0002.npz", np.zeros((5, 180, 4), np.float32))


def _drop_file(root):
    (root / "02-test" / "0005.npz").unlink()


def _pickled_npz(root):
    np.savez(root / "01-train" / "0002.npz", np.array([{"a": 1}], dtype=object))


BAD = {
    "missing_folder": (None, lambda src, tmp: [tmp / "nowhere"], "does not exist"),
    "nan": (_nan_npz, lambda src, tmp: [src], "0002.npz [arr_0]: frame 2 holds NaN"),
    "bad_shape": (_bad_shape_npz, lambda src, tmp: [src], "shape (5, 180, 4)"),
    "missing_file": (_drop_file, lambda src, tmp: [src], "02-test signs 5"),
    "object_array": (_pickled_npz, lambda src, tmp: [src], "not a readable numeric .npz"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_npz_sources(case, tmp_path):
    src = write_npz_tree(tmp_path / "npz", _clips())
    corrupt, args, needle = BAD[case]
    if corrupt:
        corrupt(src)
    out = tmp_path / "out" / "store"
    result = _prepare(*args(src, tmp_path), out, "--from", "npz")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, needle)
    assert not out.exists() and not (out.parent.exists() and list(out.parent.iterdir()))


def test_missing_files_can_be_allowed(tmp_path):
    src = write_npz_tree(tmp_path / "npz", _clips())
    _drop_file(src)
    result = _prepare(src, tmp_path / "s", "--allow-missing")
    assert result.exit_code == 0
    assert "missing 1: 02-test signs 5" in result.stderr
    assert json.loads((tmp_path / "s" / "meta.json").read_text())["source"]["missing"] == ["02-test/0005.npz"]


def test_seed_mmap_needs_allow_pickle(sources, tmp_path):
    out = tmp_path / "s"
    result = _prepare(sources[1], out, "--from", "seed-mmap")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "is a pickle", "--allow-pickle")
    assert not out.exists()


def test_seed_mmap_inconsistent_labels(sources, tmp_path):
    import shutil

    src = tmp_path / "mmap"
    shutil.copytree(sources[1], src)
    y = np.load(src / "train_y.npz")["arr_0"]
    y[4] = 4
    np.savez(src / "train_y.npz", y)
    result = _prepare(src, tmp_path / "s", "--from", "seed-mmap", "--allow-pickle")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "clip 4 is labelled 4")
    assert not (tmp_path / "s").exists()
