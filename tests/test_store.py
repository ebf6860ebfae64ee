import json
import shutil

import numpy as np
import pytest

from accel_signs.core.errors import DatasetError
from accel_signs.data.layout import keypoint_layout
from accel_signs.data.store import ClassInfo, StoreWriter, open_store


def _clips(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.random((int(rng.integers(1, 30)), 184, 4), dtype=np.float32), i % 3, i % 2) for i in range(n)]


def _write(path, splits, dtype="float32"):
    classes = [ClassInfo(s, f"en{s}", f"ar{s}") for s in (4, 5, 9)]
    with StoreWriter(path, classes, ["01", "02"], dtype) as w:
        for name, clips in splits.items():
            w.begin_split(name)
            for frames, label, signer in clips:
                w.add_clip(frames, label, signer)
    return path


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip(tmp_path, dtype):
    train, test = _clips(7, 0), _clips(3, 1)
    store = open_store(_write(tmp_path / "s", {"train": train, "test": test}, dtype))
    assert [c.sign for c in store.classes] == [4, 5, 9] and store.classes[1].en == "en5"
    assert store.signers == ("01", "02") and store.dtype == dtype
    for name, clips in (("train", train), ("test", test)):
        split = store.split(name)
        assert len(split) == len(clips)
        for i, (frames, label, signer) in enumerate(clips):
            np.testing.assert_array_equal(split.clip(i), frames.astype(dtype))
            assert split.labels[i] == label and split.signers[i] == signer
        split.check_finite()
    assert not list(tmp_path.glob(".s.tmp-*"))


def test_writer_failure_leaves_nothing(tmp_path):
    with pytest.raises(DatasetError, match="NaN"):
        bad = np.zeros((3, 184, 4), np.float32)
        bad[1, 2, 0] = np.nan
        _write(tmp_path / "s", {"train": [(bad, 0, 0)]})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DatasetError, match="shape"):
        _write(tmp_path / "s", {"train": [(np.zeros((3, 183, 4)), 0, 0)]})
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_existing(tmp_path):
    (tmp_path / "s").mkdir()
    with pytest.raises(DatasetError, match="already exists"):
        _write(tmp_path / "s", {"train": _clips()})


@pytest.fixture
def store(tmp_path):
    return _write(tmp_path / "s", {"train": _clips(6, 0), "test": _clips(2, 1)})


def _meta(store):
    return json.loads((store / "meta.json").read_text())


def _set_meta(store, **changes):
    meta = _meta(store)
    meta.update(changes)
    (store / "meta.json").write_text(json.dumps(meta))


def _save_clips(store, fn):
    clips = np.load(store / "train" / "clips.npy")
    fn(clips)
    np.save(store / "train" / "clips.npy", clips)


CORRUPTIONS = {
    "missing_meta": (lambda s: (s / "meta.json").unlink(), "meta.json: missing"),
    "malformed_meta": (lambda s: (s / "meta.json").write_text("{oops"), "not valid JSON"),
    "wrong_format": (lambda s: _set_meta(s, format="other"), "not a clip store"),
    "wrong_version": (lambda s: _set_meta(s, version=99), "version 99"),
    "wrong_layout": (lambda s: _set_meta(s, layout={"id": "openpose-25"}), "keypoint layout"),
    "missing_key": (lambda s: _set_meta(s, classes=None), "'classes'"),
    "bad_dtype": (lambda s: _set_meta(s, dtype="int8"), "dtype 'int8'"),
    "no_classes": (lambda s: _set_meta(s, classes=[]), "no classes"),
    "dup_sign": (lambda s: _set_meta(s, classes=[{"sign": 1}, {"sign": 1}, {"sign": 2}]), "share a sign"),
    "count_mismatch": (
        lambda s: _set_meta(s, splits={**_meta(s)["splits"], "train": {"clips": 99, "frames": 1}}),
        "records 99 clips",
    ),
    "missing_frames": (lambda s: (s / "train" / "frames.npy").unlink(), "frames.npy: file is missing"),
    "truncated_frames": (lambda s: _truncate(s / "train" / "frames.npy", 100), "truncated"),
    "trailing_bytes": (lambda s: _append(s / "train" / "frames.npy"), "trailing bytes"),
    "not_npy": (lambda s: (s / "train" / "frames.npy").write_bytes(b"garbage" * 20), "not a readable .npy"),
    "frames_shape": (
        lambda s: np.save(s / "train" / "frames.npy", np.zeros((10, 183, 4), np.float32)),
        "shape (frames, 184, 4)",
    ),
    "frames_dtype": (
        lambda s: np.save(s / "train" / "frames.npy", np.zeros((10, 184, 4), np.float64)),
        "differs from meta.json",
    ),
    "pickled_clips": (lambda s: np.save(s / "train" / "clips.npy", np.array([{"a": 1}], dtype=object)), "pickle"),
    "clips_dtype": (lambda s: np.save(s / "train" / "clips.npy", np.zeros((6, 4), np.int32)), "int64"),
    "zero_length": (lambda s: _save_clips(s, lambda c: c.__setitem__((2, 1), 0)), "clip 2 has length 0"),
    "gap": (lambda s: _save_clips(s, lambda c: c.__setitem__((3, 0), c[3, 0] + 1)), "clip 3 starts at frame"),
    "index_beyond_frames": (
        lambda s: _save_clips(s, lambda c: c.__setitem__((5, 1), c[5, 1] + 4)),
        "shorter than its index",
    ),
    "label_range": (lambda s: _save_clips(s, lambda c: c.__setitem__((1, 2), 3)), "label 3, outside"),
    "negative_label": (lambda s: _save_clips(s, lambda c: c.__setitem__((1, 2), -1)), "label -1"),
    "signer_range": (lambda s: _save_clips(s, lambda c: c.__setitem__((4, 3), 2)), "signer index 2"),
    "empty_split": (
        lambda s: (
            np.save(s / "test" / "clips.npy", np.zeros((0, 4), np.int64)),
            np.save(s / "test" / "frames.npy", np.zeros((0, 184, 4), np.float32)),
            _set_meta(s, splits={**_meta(s)["splits"], "test": {"clips": 0, "frames": 0}}),
        ),
        "empty",
    ),
}


def _truncate(path, n):
    data = path.read_bytes()
    path.write_bytes(data[:-n])


def _append(path):
    with open(path, "ab") as f:
        f.write(b"\0" * 16)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_open_rejects(store, name):
    corrupt, message = CORRUPTIONS[name]
    corrupt(store)
    with pytest.raises(DatasetError, match=None) as info:
        open_store(store)
    assert message in str(info.value), str(info.value)
    assert str(store) in str(info.value)


def test_missing_and_not_a_dir(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        open_store(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a directory"):
        open_store(tmp_path / "file")


def test_check_finite_names_the_clip(store):
    path = store / "train" / "frames.npy"
    frames = np.load(path, mmap_mode="r+")
    clips = np.load(store / "train" / "clips.npy")
    frames[clips[4, 0] + 1, 7, 1] = np.inf
    frames.flush()
    del frames
    split = open_store(store).split("train")
    with pytest.raises(DatasetError, match="clip 4 of split 'train'"):
        split.check_finite(chunk_frames=7)


def test_unknown_split(store):
    with pytest.raises(DatasetError, match="no split 'val'"):
        open_store(store).split("val")


def test_layout_id_recorded(store):
    assert _meta(store)["layout"]["id"] == keypoint_layout().id == "karsl-mediapipe-184-v1"
    shutil.rmtree(store)


@pytest.mark.parametrize(
    "classes,needle",
    [
        ([{"sign": 0}], 'integer "sign" >= 1'),
        ([{"sign": 1.7}], 'integer "sign"'),
        ([{"sign": True}], 'integer "sign"'),
        (["x"], 'integer "sign"'),
        ([{"sign": 2, "en": 5}], "gloss strings"),
    ],
)
def test_bad_class_entries(store, classes, needle):
    _set_meta(store, classes=classes)
    with pytest.raises(DatasetError, match=None) as info:
        open_store(store)
    assert needle in str(info.value)


@pytest.mark.parametrize("name", ["../outside", "/abs", ".hidden"])
def test_split_names_stay_inside(store, name):
    _set_meta(store, splits={name: {"clips": 1, "frames": 1}})
    with pytest.raises(DatasetError, match="invalid split name"):
        open_store(store)


def test_meta_that_is_a_folder(store):
    (store / "meta.json").unlink()
    (store / "meta.json").mkdir()
    with pytest.raises(DatasetError, match="cannot be read"):
        open_store(store)
