"""The hostile-input corpus (tests/hostile.py) through the real commands: every malformed input
gives exit code 1, one `error:` line that names the problem, no traceback, and leaves the
folder it was given exactly as it was.

"One error line", as everywhere in the tests (helpers.assert_one_line_error): exactly one line of
stderr starts with `error: `, and it is the last. Here, stricter: nothing else may reach stderr
but the CLI's own log records (`HH:MM:SS LEVEL logger: message`); in the subprocess cases, run
with `--quiet`, stderr is that one line and nothing else.

Most cases run in this process (Typer's CliRunner; an exception escaping the command fails
them, since it is what would have been a traceback); a few representative ones run as real
`python -m accel_signs` processes, whose stderr holds whatever any library prints.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import hostile
from accel_signs.cli import app
from accel_signs.data.synth import SynthSpec, write_synthetic
from helpers import cli_env, train_tiny_run

runner = CliRunner()
LOG_RECORD = re.compile(r"\d\d:\d\d:\d\d (DEBUG|INFO|WARNING) [\w.]+: ")
# Run as real processes: one or two per reader, those that once escaped as tracebacks first.
SUBPROCESS = (
    "manifest-duplicate_header",
    "npy/npz-clips_huge_header",
    "config-binary_garbage",
    "checkpoint-seq_len_huge",
    "video-text_renamed",
    "clip-meta_deep_nesting",
)


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> hostile.Assets:
    root = tmp_path_factory.mktemp("hostile_assets")
    store = write_synthetic(root / "store", SynthSpec(classes=3, signers=2, reps=5, seed=1))
    run = train_tiny_run(store, root / "runs", "--num-epochs", "1", "--no-eval")
    return hostile.Assets(store, run / "best")


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file and folder under `folders`: a file's sha256, a folder's '/'."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            out[str(p)] = "/" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_clean_failure(exit_code: int, stdout: str, stderr: str, needles: tuple[str, ...], quiet: bool = False):
    assert "Traceback" not in stdout + stderr, stdout + stderr
    assert exit_code == 1, f"exit code {exit_code}\n{stdout}{stderr}"
    lines = stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"expected one error line, last:\n{stderr}"
    others = [line for line in lines[:-1] if not LOG_RECORD.match(line)]
    assert not others, f"stderr holds more than log records and the error:\n{stderr}"
    assert not (quiet and lines[:-1]), f"--quiet, yet more than the error line:\n{stderr}"
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"


def _prepared(case: hostile.Case, work: Path, assets: hostile.Assets) -> list[str]:
    if case.needs and importlib.util.find_spec(case.needs) is None:
        pytest.skip(f"{case.needs} is not installed (an optional extra)")
    work.mkdir()
    args = case.make(work, assets)
    (work / "tmp").mkdir()  # the temporary folder of the command: must be empty again afterwards
    return args


@pytest.fixture(autouse=True)
def _video_landmarkers(request, monkeypatch):
    """Video cases run the default extractor: where that is tasks, on the test bundles (conftest)."""
    params = request.node.callspec.params if hasattr(request.node, "callspec") else {}
    case = params.get("case")
    if (case is not None and case.reader == "video") or str(params.get("name", "")).startswith("video-"):
        cache = request.getfixturevalue("landmarker_cache")
        if cache is not None:
            monkeypatch.setenv("ACCEL_SIGNS_CACHE", str(cache))


def _landmarker_env() -> dict[str, str]:
    """The landmarker cache _video_landmarkers chose, for a subprocess (cli_env sets its own cache)."""
    cache = os.environ.get("ACCEL_SIGNS_CACHE")
    return {"ACCEL_SIGNS_CACHE": cache} if cache and Path(cache, "landmarkers").is_dir() else {}


def test_the_corpus_covers_every_reader():
    readers = {c.reader for c in hostile.CASES}
    assert len(hostile.CASES) >= 50 and len({c.id for c in hostile.CASES}) == len(hostile.CASES)
    assert readers == {
        "manifest CSV",
        "layout JSON",
        "npy/npz clip",
        "GISLR parquet",
        "seed mmap",
        "config JSON/YAML",
        "checkpoint JSON",
        "safetensors weights",
        "video",
        "clip store",
    }
    assert set(SUBPROCESS) <= {c.id for c in hostile.CASES}
    docs = " ".join((Path(__file__).parents[1] / "docs" / "development.md").read_text("utf-8").split())
    assert f"{len(hostile.CASES)} malformed inputs for {len(readers)} readers" in docs, "update the figure in the docs"


@pytest.mark.parametrize("case", hostile.CASES, ids=lambda c: c.id)
def test_hostile_input_in_process(case, assets, tmp_path, monkeypatch):
    work = tmp_path / "work"
    args = _prepared(case, work, assets)
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(work / "tmp"))
    before = snapshot(work, assets.store, assets.checkpoint)
    result = runner.invoke(app, args)
    if result.exception is None:
        pytest.fail(f"accepted (exit code {result.exit_code}):\n{result.stdout}{result.stderr}")
    if not isinstance(result.exception, SystemExit):  # what would have been a traceback
        pytest.fail("".join(traceback.format_exception(result.exception)) + result.stderr)
    assert_clean_failure(result.exit_code, result.stdout, result.stderr, case.needles)
    assert snapshot(work, assets.store, assets.checkpoint) == before


@pytest.mark.parametrize("name", SUBPROCESS)
def test_hostile_input_in_a_real_process(name, assets, tmp_path):
    case = next(c for c in hostile.CASES if c.id == name)
    work = tmp_path / "work"
    args = _prepared(case, work, assets)
    before = snapshot(work, assets.store, assets.checkpoint)
    result = subprocess.run(
        [sys.executable, "-m", "accel_signs", "--quiet", *args],
        cwd=work,
        env=cli_env(tmp_path, TMPDIR=str(work / "tmp"), **_landmarker_env()),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_clean_failure(result.returncode, result.stdout, result.stderr, case.needles, quiet=True)
    assert snapshot(work, assets.store, assets.checkpoint) == before


# Random edits of a valid file: a few flipped, removed or inserted bytes, or a cut.
EDITS = st.lists(
    st.tuples(
        st.sampled_from(("flip", "cut", "insert", "truncate")), st.floats(0, 1), st.binary(min_size=1, max_size=8)
    ),
    min_size=1,
    max_size=3,
)


@pytest.mark.parametrize("target", sorted(hostile.FUZZ))
def test_mutated_files_fail_cleanly_or_work(target, assets, tmp_path, monkeypatch):
    """Property: whatever the bytes, a command ends with exit code 0, or fails cleanly as the
    corpus's cases do (one error line, no traceback, nothing written). Deterministic: the
    examples are derived from the test, not drawn at random."""
    fuzz = hostile.FUZZ[target]
    valid = fuzz.valid(assets)
    # A safetensors file is mostly weights, which any bytes make: the edits go to its header.
    span = 8 + int.from_bytes(valid[:8], "little") if target == "safetensors_header" else None
    examples = iter(range(1000))

    @settings(
        max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "12")),  # more for a deeper search, e.g. 500
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(edits=EDITS)
    def check(edits):
        work = tmp_path / f"example{next(examples)}"
        work.mkdir()
        hostile._write(work, fuzz.file, hostile.mutate(valid, edits, span))
        args = fuzz.setup(work, assets)
        (work / "tmp").mkdir()
        monkeypatch.chdir(work)
        monkeypatch.setattr(tempfile, "tempdir", str(work / "tmp"))
        before = snapshot(work)
        result = runner.invoke(app, args)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            pytest.fail("".join(traceback.format_exception(result.exception)))
        if result.exit_code != 0:
            assert_clean_failure(result.exit_code, result.stdout, result.stderr, ())
            assert snapshot(work) == before

    check()
