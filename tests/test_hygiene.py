"""Data hygiene in prepare, info and train: frame sizes for the original project's formats,
duplicate clips, and clips in which nothing was ever detected."""

import json
import logging

import numpy as np
import pytest
from accelerate import Accelerator
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.config import DataConfig, TrainConfig
from accel_signs.data.store import open_store
from accel_signs.data.training import training_data
from helpers import assert_one_line_error

runner = CliRunner()


def _clip(seed: int, frames: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).random((frames, 184, 4), dtype=np.float32) + 0.01  # never all zero


def _npz_tree(root, extra=None):
    """Signers 01 and 02, signs 1 and 2, train and test; two clips per train file, one per test
    file, all different. `extra`: {relative file: {key: array}} added or replaced."""
    files = {}
    seed = 0
    for split, n in (("train", 2), ("test", 1)):
        for signer in ("01", "02"):
            for sign in (1, 2):
                files[f"{signer}-{split}/{sign:04d}.npz"] = {f"arr_{i}": _clip(seed := seed + 1) for i in range(n)}
    files.update(extra or {})
    for name, arrays in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        np.savez(root / name, **arrays)
    return root


def _prepare(*args):
    return runner.invoke(app, ["prepare", *map(str, args)])


def _no_store_left(out):
    """Nothing at `out`, and no temporary folder beside it."""
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


# --- frame sizes ---


def test_frame_size_option_is_stored_and_shown_by_info(tmp_path):
    out = tmp_path / "s"
    result = _prepare(_npz_tree(tmp_path / "npz"), out, "--from", "npz", "--frame-size", "1920x1080")
    assert result.exit_code == 0, result.stderr
    store = open_store(out)
    for split in store.splits.values():
        assert split.frame_sizes.tolist() == [[1920.0, 1080.0]] * len(split)
        assert np.allclose(split.aspects, 1920 / 1080)
    assert store.meta["source"]["frame_size"] == [1920.0, 1080.0]
    info = runner.invoke(app, ["info", str(out)]).stdout
    assert "video frame sizes: 1920x1080 (8 clips)" in info and "video frame sizes: 1920x1080 (4 clips)" in info


def test_npz_per_clip_sizes_win_over_the_option(tmp_path):
    per_clip = {"arr_0": _clip(101), "arr_1": _clip(102), "frame_size": np.array([[720, 1280], [0, 0]])}
    one_for_all = {"arr_0": _clip(103), "arr_1": _clip(104), "frame_size": np.array([640, 480])}
    src = _npz_tree(tmp_path / "npz", {"01-train/0001.npz": per_clip, "02-train/0001.npz": one_for_all})
    out = tmp_path / "s"
    result = _prepare(src, out, "--from", "npz", "--splits", "train", "--frame-size", "1280x720")
    assert result.exit_code == 0, result.stderr
    split = open_store(out).split("train")
    # sign-major, then signer, then file order: sign 1 signer 01 (2 clips), sign 1 signer 02 (2), then sign 2
    assert split.frame_sizes[:4].tolist() == [[720, 1280], [1280, 720], [640, 480], [640, 480]]
    assert (split.frame_sizes[4:] == [1280, 720]).all()
    # Without the option, the clip of (0, 0) and the files without sizes stay unknown.
    out2 = tmp_path / "s2"
    assert _prepare(src, out2, "--from", "npz", "--splits", "train").exit_code == 0
    sizes = open_store(out2).split("train").frame_sizes
    assert sizes[:4].tolist() == [[720, 1280], [0, 0], [640, 480], [640, 480]] and (sizes[4:] == 0).all()


def _seed_mmap(root, sizes=None):
    """A one-split (train) memory map of 3 clips (sign 1: signers 01, 02; sign 2: signer 01)."""
    root.mkdir(parents=True)
    clips = [(1, 1, _clip(1, 4)), (1, 2, _clip(2, 5)), (2, 1, _clip(3, 3))]
    frames = np.concatenate([c for _, _, c in clips])
    frames.tofile(root / "train_X.mmap")
    np.save(root / "train_X_shape.npy", np.array(frames.shape))
    np.savez(root / "train_y.npz", np.array([sign - 1 for sign, _, _ in clips]))
    lens = {1: {1: [4], 2: [5]}, 2: {1: [3]}}
    np.save(root / "train_X_map_samples_lens.npy", lens, allow_pickle=True)
    if sizes is not None:
        np.save(root / "train_frame_sizes.npy", np.asarray(sizes))
    return root


def test_seed_mmap_sizes_from_the_option_and_the_sidecar(tmp_path):
    base = ["--from", "seed-mmap", "--allow-pickle", "--splits", "train"]
    plain = _seed_mmap(tmp_path / "plain")
    assert _prepare(plain, tmp_path / "a", *base, "--frame-size", "1280x720").exit_code == 0
    assert open_store(tmp_path / "a").split("train").frame_sizes.tolist() == [[1280, 720]] * 3
    side = _seed_mmap(tmp_path / "side", [[1920, 1080], [0, 0], [1080, 1920]])
    result = _prepare(side, tmp_path / "b", *base, "--frame-size", "640x480")
    assert result.exit_code == 0, result.stderr
    assert open_store(tmp_path / "b").split("train").frame_sizes.tolist() == [[1920, 1080], [640, 480], [1080, 1920]]


def test_a_bad_seed_mmap_sidecar_is_one_line(tmp_path):
    src = _seed_mmap(tmp_path / "side", [[1920, 1080], [1080, 1920]])  # 2 rows for 3 clips
    out = tmp_path / "s"
    result = _prepare(src, out, "--from", "seed-mmap", "--allow-pickle", "--splits", "train")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "train_frame_sizes.npy", "shape (2, 2), expected (2,) or (3, 2)")
    assert _no_store_left(out)


@pytest.mark.parametrize("value", ["0x720", "1280x0", "-1280x720", "1280", "1280x720x3", "wide", "1.5x2", "x720", ""])
def test_bad_frame_size_values(tmp_path, value):
    out = tmp_path / "s"
    result = _prepare(_npz_tree(tmp_path / "npz"), out, "--from", "npz", f"--frame-size={value}")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "--frame-size")
    assert _no_store_left(out)


def test_frame_size_is_only_for_the_original_formats(tmp_path):
    np.save(tmp_path / "a.npy", _clip(1))
    (tmp_path / "m.csv").write_text("path,sign,signer\na.npy,1,01\n")
    result = _prepare(tmp_path / "m.csv", tmp_path / "s", "--from", "clips", "--frame-size", "1280x720")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "--frame-size is for --from npz and --from seed-mmap")


@pytest.mark.parametrize(
    "sizes, needle",
    [
        (np.array([1, 2, 3]), "frame sizes have shape (3,)"),
        (np.array([[640, 480]] * 3), "frame sizes have shape (3, 2)"),
        (np.array([[640, -480], [640, 480]]), "width and height must be > 0"),
        (np.array([[640, 0], [640, 480]]), "width and height must be > 0"),
        (np.array([[np.inf, 480], [640, 480]]), "width and height must be > 0"),
        (np.array(["640", "480"]), "must be numbers"),
    ],
)
def test_bad_per_clip_sizes_in_an_npz(tmp_path, sizes, needle):
    src = _npz_tree(
        tmp_path / "npz", {"01-train/0002.npz": {"arr_0": _clip(7), "arr_1": _clip(8), "frame_size": sizes}}
    )
    out = tmp_path / "s"
    result = _prepare(src, out, "--from", "npz")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "0002.npz [frame_size]")
    assert needle in result.stderr
    assert _no_store_left(out)


def test_unknown_sizes_said_plainly_by_info_and_train(tmp_path, caplog):
    out = tmp_path / "s"
    assert _prepare(_npz_tree(tmp_path / "npz"), out, "--from", "npz").exit_code == 0
    info = runner.invoke(app, ["info", str(out)]).stdout
    assert "video frame sizes: unknown for all 8 clips (taken as square" in info and "--frame-size" in info
    with caplog.at_level(logging.WARNING, logger="accel_signs"):
        training_data(TrainConfig(data=DataConfig(path=out, val_signers=("02",))), Accelerator(cpu=True))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "frame size unknown for 4 of 4 training clips" in m and "square" in m and "prepare --frame-size" in m
        for m in warned
    ), warned
    # With sizes, no such warning.
    caplog.clear()
    sized = tmp_path / "sized"
    assert _prepare(tmp_path / "npz", sized, "--from", "npz", "--frame-size", "512x512").exit_code == 0
    with caplog.at_level(logging.WARNING, logger="accel_signs"):
        training_data(TrainConfig(data=DataConfig(path=sized, val_signers=("02",))), Accelerator(cpu=True))
    assert not [r for r in caplog.records if "frame size unknown" in r.getMessage()]


# --- duplicates ---


def _manifest(tmp_path, rows, arrays):
    """Clip files `arrays` {name: array} and a manifest with `rows` (path, sign, signer, split)."""
    for name, a in arrays.items():
        np.save(tmp_path / name, a)
    path = tmp_path / "m.csv"
    path.write_text("path,sign,signer,split\n" + "".join(f"{','.join(r)}\n" for r in rows))
    return path


BASE_ROWS = [("a.npy", "1", "01", "train"), ("b.npy", "2", "01", "train"), ("c.npy", "1", "02", "test")]
BASE_ARRAYS = {"a.npy": _clip(1), "b.npy": _clip(2), "c.npy": _clip(3)}


def test_a_file_listed_twice_within_a_split_is_a_warning(tmp_path, caplog):
    manifest = _manifest(tmp_path, [*BASE_ROWS, ("a.npy", "1", "01", "train")], BASE_ARRAYS)
    out = tmp_path / "s"
    with caplog.at_level(logging.WARNING):
        result = _prepare(manifest, out, "--from", "clips")
    assert result.exit_code == 0, result.stderr
    assert "1 group(s) of duplicate clips (2 clips, 0 across splits)" in result.stderr
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "a.npy (line 2) (train) = " in warned and "a.npy (line 5) (train)" in warned
    info = runner.invoke(app, ["info", str(out)]).stdout
    assert "duplicate clips (identical frames): 1 group(s), 0 across splits: train clip 0 = train clip 1" in info


def test_a_duplicate_across_train_and_test_is_an_error_unless_allowed(tmp_path):
    manifest = _manifest(tmp_path, [*BASE_ROWS, ("b.npy", "2", "02", "test")], BASE_ARRAYS)
    out = tmp_path / "s"
    result = _prepare(manifest, out, "--from", "clips")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "1 clip(s) of the test split also appear in another split")
    assert "b.npy (line 3) (train) = " in result.stderr and "b.npy (line 5) (test)" in result.stderr
    assert "--allow-duplicates" in result.stderr
    assert _no_store_left(out)
    allowed = _prepare(manifest, out, "--from", "clips", "--allow-duplicates")
    assert allowed.exit_code == 0, allowed.stderr
    assert "1 across splits" in allowed.stderr
    info = runner.invoke(app, ["info", str(out)]).stdout
    assert "1 group(s), 1 across splits: train clip 1 = test clip 1" in info


def test_identical_arrays_in_different_files_are_duplicates(tmp_path):
    # Same frames under another name, in the test split of an npz tree: an error naming both files.
    same = {"arr_0": _clip(1)}
    src = _npz_tree(tmp_path / "npz", {"01-train/0001.npz": {"arr_0": _clip(1), "arr_1": _clip(50)}})
    np.savez(src / "02-test" / "0002.npz", **same)
    out = tmp_path / "s"
    result = _prepare(src, out, "--from", "npz")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "01-train/0001.npz [arr_0] (train) = ")
    assert "02-test/0002.npz [arr_0] (test)" in result.stderr
    assert _no_store_left(out)
    # Between train and val (or within a split): a warning, the store is made.
    manifest = _manifest(
        tmp_path,
        [*BASE_ROWS, ("d.npy", "2", "03", "val")],
        {**BASE_ARRAYS, "d.npy": BASE_ARRAYS["b.npy"].copy()},
    )
    ok = _prepare(manifest, tmp_path / "s2", "--from", "clips")
    assert ok.exit_code == 0, ok.stderr
    assert "1 group(s) of duplicate clips (2 clips, 1 across splits)" in ok.stderr


# --- clips with no detection ---


def test_empty_clips_are_listed_and_can_be_dropped(tmp_path, caplog):
    empty = np.zeros((5, 184, 4), np.float32)
    src = _npz_tree(tmp_path / "npz", {"02-train/0002.npz": {"arr_0": _clip(60), "arr_1": empty}})
    out = tmp_path / "s"
    with caplog.at_level(logging.WARNING):
        kept = _prepare(src, out, "--from", "npz")
    assert kept.exit_code == 0, kept.stderr
    assert "1 clip(s) with no detection kept (--drop-empty drops them)" in kept.stderr
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "02-train/0002.npz [arr_1] (train)" in warned
    assert len(open_store(out).split("train")) == 8
    info = runner.invoke(app, ["info", str(out)]).stdout
    assert "clips with no detection in any frame: 1 (clips 7)" in info
    assert "clips with no detection in any frame: none" in info  # the test split
    # A store written before the checks existed: info computes them (a small store).
    meta = json.loads((out / "meta.json").read_text())
    del meta["clip_checks"]
    (out / "meta.json").write_text(json.dumps(meta))
    assert "clips with no detection in any frame: 1 (clips 7)" in runner.invoke(app, ["info", str(out)]).stdout
    dropped = _prepare(src, tmp_path / "d", "--from", "npz", "--drop-empty")
    assert dropped.exit_code == 0, dropped.stderr
    assert "1 clip(s) with no detection dropped" in dropped.stderr
    split = open_store(tmp_path / "d").split("train")
    assert len(split) == 7 and all(split.clip(i).any() for i in range(7))
    assert "clips with no detection in any frame: none" in runner.invoke(app, ["info", str(tmp_path / "d")]).stdout


def test_a_split_of_only_empty_clips_dropped_is_an_error(tmp_path):
    empty = np.zeros((3, 184, 4), np.float32)
    src = tmp_path / "npz"
    (src / "01-train").mkdir(parents=True)
    np.savez(src / "01-train" / "0001.npz", empty, empty + 0)
    out = tmp_path / "s"
    result = _prepare(src, out, "--from", "npz", "--splits", "train", "--drop-empty")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "--drop-empty dropped it")
    assert _no_store_left(out)
