"""The hostile-input corpus: malformed files for every reader, each with the command that reads it.

A case writes its malformed input into an empty working folder and returns the command line
(`accel-signs ARGS`, paths relative to that folder) that reads it. tests/test_hostile.py runs
each and checks that it fails cleanly: exit code 1, one `error:` line naming the problem, no
traceback, and the folder exactly as it was (nothing written, nothing left, nothing changed).

Valid inputs to corrupt come from `Assets` (built once per test session): a small clip store,
a checkpoint trained on it, and a real video. Cases copy what they corrupt.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LAYOUT = "accel_signs.layout"
VIDEO = Path(__file__).parent / "data" / "signer_video.mp4"


@dataclass(frozen=True)
class Assets:
    """Valid inputs the cases start from (read-only: a case copies what it changes)."""

    store: Path  # a karsl184 clip store, train and test splits
    checkpoint: Path  # a checkpoint trained on it (model.safetensors + config.json)


@dataclass(frozen=True)
class Case:
    reader: str  # the file format under attack
    name: str
    make: Callable[[Path, Assets], list[str]]  # writes the input into the folder; returns the CLI args
    needles: tuple[str, ...]  # what the error line must say (the file, the problem)
    needs: str = ""  # an optional module the reader needs (pyarrow, mediapipe)

    @property
    def id(self) -> str:
        return f"{self.reader.split()[0]}-{self.name}"


CASES: list[Case] = []


def _add(reader: str, name: str, make: Callable[[Path, Assets], list[str]], *needles: str, needs: str = "") -> None:
    CASES.append(Case(reader, name, make, needles, needs))


# ---------------------------------------------------------------- valid inputs and their writers


def clip(frames: int = 12, points: int = 184, channels: int = 4, seed: int = 0) -> np.ndarray:
    """A valid clip: (frames, points, channels) float32 keypoints in 0..1."""
    return np.random.default_rng(seed).random((frames, points, channels)).astype(np.float32)


class CreatesFile:
    """Unpickling this creates a file named PWNED in the working folder: proof that code ran
    (the folder's snapshot catches the new file)."""

    def __reduce__(self):
        return (open, ("PWNED", "w"))


def _npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def _pickled_npy() -> bytes:
    return _npy_bytes(np.array([CreatesFile()], dtype=object), allow_pickle=True)


def _npz_bytes(compressed: bool = False, **arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _huge_npy_header() -> bytes:
    """An .npy whose header claims 10^12 frames and whose data is 100 bytes."""
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (10**12, 184, 4)}).encode("latin1")
    header = header.ljust(118) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(100)


def _flip_crc(npz: bytes) -> bytes:
    """An uncompressed npz with one byte of its member's data changed: the CRC no longer matches."""
    data = bytearray(npz)
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


def _garbage(n: int = 4096, seed: int = 7) -> bytes:
    """Random bytes with NULs and invalid UTF-8."""
    return b"\x00\xff\xfe" + np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _deep_json(depth: int = 100_000) -> str:
    """Valid-looking JSON nested deeper than any parser's recursion limit."""
    return '{"format": ' + "[" * depth + "]" * depth + "}"


def _write(work: Path, name: str, content: bytes | str | np.ndarray) -> Path:
    path = work / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, np.ndarray):
        content = _npy_bytes(content)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


# ---------------------------------------------------------------- manifest CSV (prepare --from clips)

MANIFEST = "path,sign,signer\nc.npy,1,01\n"


def _manifest_case(text: str | bytes, *extra: str) -> Callable[[Path, Assets], list[str]]:
    def make(work: Path, assets: Assets) -> list[str]:
        _write(work, "c.npy", clip())
        (work / "sub").mkdir()
        _write(work, "m.csv", text)
        return ["prepare", "m.csv", "out", "--from", "clips", *extra]

    return make


for _name, _text, _extra, _needle in [
    ("empty_file", "", (), "missing column(s) path, sign, signer"),
    ("header_only", "path,sign,signer\n", (), "no rows"),
    ("missing_column", "path,sign\nc.npy,1\n", (), "missing column(s) signer"),
    ("binary_garbage", _garbage(), (), "cannot be read as CSV"),
    ("utf16", MANIFEST.encode("utf-16"), (), "cannot be read as CSV"),
    ("nul_in_path", "path,sign,signer\nc.npy\x00,1,01\n", (), "line 2"),
    ("duplicate_header", "path,sign,signer,sign\nc.npy,1,01,2\n", (), "column 'sign' twice"),
    ("short_row", "path,sign,signer\nc.npy,1\n", (), "line 2"),
    ("long_row", "path,sign,signer\nc.npy,1,01,x\n", (), "line 2"),
    ("missing_clip", "path,sign,signer\ngone.npy,1,01\n", (), "'gone.npy' does not exist"),
    ("clip_is_folder", "path,sign,signer\nsub,1,01\n", (), "'sub'"),
    ("sign_zero", "path,sign,signer\nc.npy,0,01\n", (), "sign numbers start at 1"),
    ("empty_signer", "path,sign,signer\nc.npy,1,  \n", (), "empty sign or signer"),
    ("field_too_large", "path,sign,signer,gloss\nc.npy,1,01," + "g" * 200_000 + "\n", (), "cannot be read as CSV"),
    ("width_not_number", "path,sign,signer,width,height\nc.npy,1,01,wide,480\n", ("--coords", "pixels"), "not numbers"),
    ("width_zero", "path,sign,signer,width,height\nc.npy,1,01,0,480\n", ("--coords", "pixels"), "must be > 0"),
    ("width_inf", "path,sign,signer,width,height\nc.npy,1,01,inf,480\n", ("--coords", "pixels"), "must be > 0"),
    ("height_nan", "path,sign,signer,width,height\nc.npy,1,01,640,nan\n", ("--coords", "pixels"), "must be > 0"),
]:
    _add("manifest CSV", _name, _manifest_case(_text, *_extra), "m.csv", _needle)
_add("manifest CSV", "no_manifest", lambda w, a: ["prepare", "m.csv", "out", "--from", "clips"], "does not exist")


# ---------------------------------------------------------------- layout JSON (--layout FILE)


def _layout(**changes) -> dict:
    """A valid 3-point layout, with `changes` applied (None removes a key)."""
    raw = {
        "format": LAYOUT,
        "version": 1,
        "name": "tiny",
        "id": "tiny-v1",
        "parts": ["body"],
        "points": [
            {"name": "a", "part": "body", "mirror": "b"},
            {"name": "b", "part": "body", "mirror": "a"},
            {"name": "c", "part": "body"},
        ],
    }
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not None}


def _layout_case(content: dict | str | bytes) -> Callable[[Path, Assets], list[str]]:
    def make(work: Path, assets: Assets) -> list[str]:
        _write(work, "c.npy", clip(points=3))
        _write(work, "m.csv", MANIFEST)
        if content == "FOLDER":
            (work / "lay.json").mkdir()
        else:
            _write(work, "lay.json", json.dumps(content) if isinstance(content, dict) else content)
        return ["prepare", "m.csv", "out", "--from", "clips", "--layout", "lay.json"]

    return make


_POINTS = _layout()["points"]
for _name, _content, _needle in [
    ("not_json", '{"format": "accel_signs.layout",', "not valid JSON"),
    ("invalid_utf8", b'{"format": "\xff\xfe"}', "not valid JSON"),
    ("deep_nesting", _deep_json(), "lay.json"),
    ("top_level_list", "[]", "not a layout file"),
    ("wrong_format", _layout(format="openpose"), "not a layout file"),
    ("wrong_version", _layout(version=2), "version 2 is not supported"),
    ("no_points", _layout(points=[]), "'points' is missing"),
    ("point_not_object", _layout(points=[*_POINTS, "d"]), 'must be an object with a "name" and a "part"'),
    ("point_without_part", _layout(points=[*_POINTS, {"name": "d"}]), 'must be an object with a "name" and a "part"'),
    ("duplicate_point", _layout(points=[*_POINTS, {"name": "a", "part": "body"}]), "'a' is used twice"),
    ("unknown_part", _layout(points=[*_POINTS, {"name": "d", "part": "legs"}]), "'legs'"),
    ("empty_part", _layout(parts=["body", "legs"]), "legs have no points"),
    ("parts_not_names", _layout(parts=[["body"]]), "parts must be distinct names"),
    ("mirror_not_a_pair", _layout(points=[{**p, "mirror": m} for p, m in zip(_POINTS, "bca")]), "must pair up"),
    ("mirror_unknown", _layout(points=[{**_POINTS[0], "mirror": "zz"}, *_POINTS[1:]]), "unknown point 'zz'"),
    ("bad_channels", _layout(channels=["x", "y"]), "channels must be"),
    ("channels_not_a_list", _layout(channels=4), "channels must be"),
    ("bone_not_a_pair", _layout(bones=[["a"]]), "a bone must be a pair"),
    ("shoulder_out_of_range", _layout(roles={"shoulders": [0, 99]}), "99 is not a point index"),
    (
        "hand_part_not_a_name",
        _layout(roles={"hands": {"right": {"wrist": "a", "part": ["x"]}, "left": {"wrist": "b"}}}),
        "roles.hands.right.part",
    ),
    (
        "bad_source",
        _layout(points=[{**_POINTS[0], "source": "feet", "index": 1}, *_POINTS[1:]]),
        "source must be one of",
    ),
    ("layout_is_folder", "FOLDER", "cannot be read"),
]:
    _add("layout JSON", _name, _layout_case(_content), "lay.json", _needle)


# ---------------------------------------------------------------- npy/npz clips: prepare --from clips, --from npz, predict

# What each malformed clip file is: (file name, bytes, what the error says).
BAD_CLIPS: dict[str, tuple[str, bytes, str]] = {
    "pickle": ("c.npy", _pickled_npy(), "not a readable numeric"),
    "wrong_ndim": ("c.npy", _npy_bytes(clip().reshape(12, -1)), "shape (12, 736)"),
    "wrong_points": ("c.npy", _npy_bytes(clip(points=100)), "shape (12, 100, 4)"),
    "five_channels": ("c.npy", _npy_bytes(clip(channels=5)), "shape (12, 184, 5)"),
    "scalar": ("c.npy", _npy_bytes(np.float32(1.0)), "shape ()"),
    "text_dtype": ("c.npy", _npy_bytes(np.full((12, 184, 4), "x")), "dtype <U1 is not numeric"),
    "complex_dtype": ("c.npy", _npy_bytes(clip().astype(np.complex64)), "dtype complex64 is not numeric"),
    "structured_dtype": ("c.npy", _npy_bytes(np.zeros((12, 184, 4), dtype=[("x", "f4")])), "is not numeric"),
    "inf": ("c.npy", _npy_bytes(np.where(np.arange(4) == 2, np.inf, clip()).astype(np.float32)), "inf"),
    "zero_frames": ("c.npy", _npy_bytes(clip(frames=0)), "no frames"),
    "truncated": ("c.npy", _npy_bytes(clip())[:5000], "not a readable numeric"),
    "huge_header": ("c.npy", _huge_npy_header(), "c.npy"),
    "empty_file": ("c.npy", b"", "not a readable numeric"),
    "not_numpy": ("c.npy", b"frame,x,y\n0,0.5,0.5\n", "not a readable numeric"),
    "npz_two_arrays": ("c.npz", _npz_bytes(a=clip(), b=clip()), "holds 2 arrays"),
    "npz_no_arrays": ("c.npz", _npz_bytes(), "holds 0 arrays"),
    "npz_truncated": ("c.npz", _npz_bytes(keypoints=clip())[:3000], "not a readable numeric"),
    "npz_bad_crc": ("c.npz", _flip_crc(_npz_bytes(keypoints=clip())), "not a readable numeric"),
    "npz_member_not_npy": ("c.npz", _zip_bytes({"keypoints.txt": b"0.5 0.5"}), "keypoints.txt"),
    "npz_pickle": ("c.npz", _zip_bytes({"keypoints.npy": _pickled_npy()}), "not a readable numeric"),
}


def _clips_case(name: str, data: bytes) -> Callable[[Path, Assets], list[str]]:
    def make(work: Path, assets: Assets) -> list[str]:
        _write(work, name, data)
        _write(work, "m.csv", f"path,sign,signer\n{name},1,01\n")
        return ["prepare", "m.csv", "out", "--from", "clips"]

    return make


for _key, (_file, _data, _needle) in BAD_CLIPS.items():
    _add("npy/npz clip", f"clips_{_key}", _clips_case(_file, _data), _file, _needle)


def _into_new_folders(work: Path, assets: Assets) -> list[str]:
    """A clip found bad while the store is being written, into folders that do not exist yet."""
    args = _clips_case("c.npy", BAD_CLIPS["inf"][1])(work, assets)
    return [*args[:2], "new/folders/out", *args[3:]]


_add("npy/npz clip", "clips_inf_into_new_folders", _into_new_folders, "c.npy", "inf")


def _npz_tree_case(files: dict[str, bytes]) -> Callable[[Path, Assets], list[str]]:
    def make(work: Path, assets: Assets) -> list[str]:
        (work / "tree").mkdir()
        for name, data in files.items():
            _write(work, f"tree/{name}", data)
        return ["prepare", "tree", "out", "--from", "npz", "--splits", "train"]

    return make


for _name, _files, _needles in [
    ("not_a_zip", {"01-train/0001.npz": b"PK\x03\x04 not really"}, ("0001.npz", "not a readable numeric")),
    ("pickle", {"01-train/0001.npz": _zip_bytes({"arr_0.npy": _pickled_npy()})}, ("0001.npz", "not a readable")),
    ("nan", {"01-train/0001.npz": _npz_bytes(a=np.full((5, 184, 4), np.nan, np.float32))}, ("0001.npz", "NaN")),
    ("wrong_shape", {"01-train/0001.npz": _npz_bytes(a=clip(points=543))}, ("0001.npz", "shape (12, 543, 4)")),
    ("zero_frames", {"01-train/0001.npz": _npz_bytes(a=clip(frames=0))}, ("0001.npz", "no frames")),
    ("member_not_npy", {"01-train/0001.npz": _zip_bytes({"a.txt": b"1 2 3"})}, ("0001.npz", "a.txt")),
    ("plain_npy", {"01-train/0001.npz": _npy_bytes(clip())}, ("0001.npz", "not an .npz archive")),
    ("bad_file_name", {"01-train/1.npz": _npz_bytes(a=clip())}, ("1.npz", "unexpected file name")),
    ("no_split_folders", {"notes.txt": b"nothing here"}, ("tree", "no '{signer}-{split}' folders")),
]:
    _add("npy/npz clip", f"npz_tree_{_name}", _npz_tree_case(_files), *_needles)


def _copy_checkpoint(work: Path, assets: Assets) -> str:
    shutil.copytree(assets.checkpoint, work / "ckpt")
    return "ckpt"


def _predict_case(name: str, data: bytes | None) -> Callable[[Path, Assets], list[str]]:
    def make(work: Path, assets: Assets) -> list[str]:
        ckpt = _copy_checkpoint(work, assets)
        if data is None:
            (work / name).mkdir()
        else:
            _write(work, name, data)
        return ["predict", ckpt, name]

    return make


for _key in (
    "pickle",
    "wrong_points",
    "text_dtype",
    "zero_frames",
    "truncated",
    "not_numpy",
    "huge_header",
    "npz_member_not_npy",
):
    _file, _data, _needle = BAD_CLIPS[_key]
    _add("npy/npz clip", f"predict_{_key}", _predict_case(_file, _data), _file, _needle)
for _name, _file, _data, _needles in [
    ("nan", "c.npy", _npy_bytes(np.full((5, 184, 4), np.nan, np.float32)), ("c.npy", "NaN or inf")),
    ("npz_empty", "c.npz", _npz_bytes(), ("c.npz", "holds no arrays")),
    ("frame_size_scalar", "c.npz", _npz_bytes(keypoints=clip(), frame_size=np.float32(640)), ("c.npz", "frame_size")),
    (
        "frame_size_text",
        "c.npz",
        _npz_bytes(keypoints=clip(), frame_size=np.array(["w", "h"])),
        ("c.npz", "frame_size"),
    ),
    ("folder_without_frames", "frames", None, ("frames", "without frame images")),
]:
    _add("npy/npz clip", f"predict_{_name}", _predict_case(_file, _data), *_needles)
_add(
    "npy/npz clip",
    "predict_missing_file",
    lambda w, a: ["predict", _copy_checkpoint(w, a), "gone.npy"],
    "gone.npy",
    "does not exist",
)


# ---------------------------------------------------------------- GISLR parquet (prepare --from gislr)

_GISLR_TYPES = [("face", 468), ("left_hand", 21), ("pose", 33), ("right_hand", 21)]


def gislr_columns(frames: int = 2) -> dict[str, list]:
    """A valid GISLR sequence: every landmark of `frames` frames, as parquet columns."""
    cols: dict[str, list] = {"frame": [], "type": [], "landmark_index": [], "x": [], "y": [], "z": []}
    for f in range(frames):
        for kind, count in _GISLR_TYPES:
            for i in range(count):
                cols["frame"].append(f)
                cols["type"].append(kind)
                cols["landmark_index"].append(i)
                for c in "xyz":
                    cols[c].append(0.5)
    return cols


def _parquet_bytes(cols: dict[str, list], rows: int | None = None) -> bytes:
    """The columns as a parquet file; with `rows`, only the first rows (the column types kept)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(cols).slice(0, rows), buf)
    return buf.getvalue()


def _gislr_case(
    csv_text: str | bytes = "path,participant_id,sequence_id,sign\ns/1.parquet,16069,1,TV\n",
    parquet: Callable[[], bytes | None] = lambda: _parquet_bytes(gislr_columns()),
    index_map: str | None = None,
) -> Callable[[Path, Assets], list[str]]:
    def make(work: Path, assets: Assets) -> list[str]:
        (work / "g").mkdir()
        if csv_text is not None:
            _write(work, "g/train.csv", csv_text)
        data = parquet()
        if data is not None:
            _write(work, "g/s/1.parquet", data)
        if index_map is not None:
            _write(work, "g/sign_to_prediction_index_map.json", index_map)
        return ["prepare", "g", "out", "--from", "gislr"]

    return make


def _cols(**changes) -> Callable[[], bytes]:
    """A parquet of gislr_columns() with columns replaced (a function of the valid columns) or removed (None)."""

    def data() -> bytes:
        cols = gislr_columns()
        for key, change in changes.items():
            if change is None:
                del cols[key]
            else:
                cols[key] = change(cols[key])
        return _parquet_bytes(cols)

    return data


for _name, _case, _needles in [
    ("no_train_csv", _gislr_case(csv_text=None), ("no train.csv",)),
    ("csv_missing_columns", _gislr_case(csv_text="path,sign\ns/1.parquet,TV\n"), ("train.csv", "expected columns")),
    ("csv_binary", _gislr_case(csv_text=_garbage()), ("train.csv", "cannot be read")),
    (
        "csv_short_row",
        _gislr_case(csv_text="path,participant_id,sequence_id,sign\ns/1.parquet\n"),
        ("train.csv", "line 2"),
    ),
    ("csv_header_only", _gislr_case(csv_text="path,participant_id,sequence_id,sign\n"), ("train.csv", "no rows")),
    ("parquet_missing", _gislr_case(parquet=lambda: None), ("1.parquet", "does not exist")),
    (
        "parquet_truncated",
        _gislr_case(parquet=lambda: _parquet_bytes(gislr_columns())[:-200]),
        ("1.parquet", "not a readable GISLR parquet"),
    ),
    (
        "parquet_is_text",
        _gislr_case(parquet=lambda: b"frame,type\n0,face\n"),
        ("1.parquet", "not a readable GISLR parquet"),
    ),
    ("parquet_no_z", _gislr_case(parquet=_cols(z=None)), ("1.parquet", "not a readable GISLR parquet")),
    ("x_as_text", _gislr_case(parquet=_cols(x=lambda v: ["left"] * len(v))), ("1.parquet", "column x")),
    (
        "landmark_as_text",
        _gislr_case(parquet=_cols(landmark_index=lambda v: [str(i) for i in v])),
        ("1.parquet", "column landmark_index"),
    ),
    (
        "landmark_nan",
        _gislr_case(parquet=_cols(landmark_index=lambda v: [float("nan")] + [float(i) for i in v[1:]])),
        ("1.parquet", "landmark_index"),
    ),
    (
        "landmark_null",
        _gislr_case(parquet=_cols(landmark_index=lambda v: [None, *v[1:]])),
        ("1.parquet", "landmark_index has 1 empty"),
    ),
    (
        "landmark_out_of_range",
        _gislr_case(parquet=_cols(landmark_index=lambda v: [i + 500 for i in v])),
        ("1.parquet", "outside 0.."),
    ),
    (
        "unknown_type",
        _gislr_case(parquet=_cols(type=lambda v: ["torso"] * len(v))),
        ("1.parquet", "unknown landmark type"),
    ),
    ("inf", _gislr_case(parquet=_cols(y=lambda v: [float("inf")] * len(v))), ("1.parquet", "infinite")),
    ("no_rows", _gislr_case(parquet=lambda: _parquet_bytes(gislr_columns(), rows=0)), ("1.parquet", "no rows")),
    ("index_map_not_json", _gislr_case(index_map="{TV: 0"), ("sign_to_prediction_index_map.json", "unreadable")),
    ("index_map_a_list", _gislr_case(index_map='["TV"]'), ("sign_to_prediction_index_map.json",)),
    (
        "index_map_mixed_values",
        _gislr_case(index_map='{"TV": "first", "cat": 1}'),
        ("sign_to_prediction_index_map.json",),
    ),
]:
    CASES.append(Case("GISLR parquet", _name, _case, _needles, needs="pyarrow"))


# ---------------------------------------------------------------- the original project's memory map (prepare --from seed-mmap)


def seed_mmap_files(lens: object = None, frames: np.ndarray | None = None) -> dict[str, bytes]:
    """A valid train split: 2 clips (sign 1 signer 1: 3 frames; sign 2 signer 1: 2 frames)."""
    lens = {1: {1: [3]}, 2: {1: [2]}} if lens is None else lens
    frames = clip(frames=5) if frames is None else frames
    return {
        "train_X.mmap": frames.tobytes(),
        "train_X_shape.npy": _npy_bytes(np.array(frames.shape)),
        "train_X_map_samples_lens.npy": _npy_bytes(np.array(lens, dtype=object), allow_pickle=True),
        "train_y.npz": _npz_bytes(arr_0=np.array([0, 1])),
    }


def _mmap_case(change: Callable[[dict[str, bytes]], None], *extra: str) -> Callable[[Path, Assets], list[str]]:
    def make(work: Path, assets: Assets) -> list[str]:
        files = seed_mmap_files()
        change(files)
        (work / "mm").mkdir()
        for name, data in files.items():
            _write(work, f"mm/{name}", data)
        return ["prepare", "mm", "out", "--from", "seed-mmap", "--splits", "train", *(extra or ("--allow-pickle",))]

    return make


def _set(name: str, data: bytes) -> Callable[[dict[str, bytes]], None]:
    return lambda files: files.__setitem__(name, data)


def _drop(name: str) -> Callable[[dict[str, bytes]], None]:
    return lambda files: files.pop(name)


for _name, _change, _needles in [
    ("frames_short", _set("train_X.mmap", clip(frames=4).tobytes()), ("train_X.mmap", "bytes, but")),
    ("frames_ragged", _set("train_X.mmap", clip(frames=5).tobytes()[:-7]), ("train_X.mmap", "bytes, but")),
    ("no_labels", _drop("train_y.npz"), ("train_y.npz", "missing")),
    ("no_lengths", _drop("train_X_map_samples_lens.npy"), ("train_X_map_samples_lens.npy", "missing")),
    ("no_shape", _drop("train_X_shape.npy"), ("train_X_shape.npy", "missing")),
    (
        "shape_2d",
        _set("train_X_shape.npy", _npy_bytes(np.array([5, 736]))),
        ("train_X_shape.npy", "expected (frames, 184, 4)"),
    ),
    (
        "shape_wrong_points",
        _set("train_X_shape.npy", _npy_bytes(np.array([5, 543, 4]))),
        ("train_X_shape.npy", "expected (frames, 184, 4)"),
    ),
    ("shape_pickle", _set("train_X_shape.npy", _pickled_npy()), ("mm", "cannot read the train memory map's index")),
    ("shape_huge_header", _set("train_X_shape.npy", _huge_npy_header()), ("mm", "index")),
    ("shape_text", _set("train_X_shape.npy", b"5 184 4"), ("mm", "cannot read the train memory map's index")),
    ("lengths_a_list", _set("train_X_map_samples_lens.npy", _npy_bytes(np.array([3, 2]))), ("mm", "index")),
    (
        "lengths_not_nested",
        lambda f: f.update(seed_mmap_files(lens={1: [3, 2]})),
        ("train_X_map_samples_lens.npy", "expected a dict"),
    ),
    ("lengths_too_long", lambda f: f.update(seed_mmap_files(lens={1: {1: [4]}, 2: {1: [2]}})), ("add up to 6 frames",)),
    ("lengths_zero", lambda f: f.update(seed_mmap_files(lens={1: {1: [5, 0]}})), ("a clip length is below 1",)),
    (
        "labels_disagree",
        _set("train_y.npz", _npz_bytes(arr_0=np.array([0, 4]))),
        ("train_y.npz", "clip 1 is labelled 4"),
    ),
    ("labels_count", _set("train_y.npz", _npz_bytes(arr_0=np.array([0]))), ("train_y.npz", "1 labels for 2 clips")),
    ("labels_wrong_key", _set("train_y.npz", _npz_bytes(labels=np.array([0, 1]))), ("mm", "index")),
    ("labels_plain_npy", _set("train_y.npz", _npy_bytes(np.array([0, 1]))), ("mm", "index")),
    ("lengths_npz", _set("train_X_map_samples_lens.npy", _npz_bytes(a=np.array([3, 2]))), ("mm", "index")),
    ("labels_truncated", _set("train_y.npz", _npz_bytes(arr_0=np.array([0, 1]))[:40]), ("mm", "index")),
    (
        "frames_nan",
        _set("train_X.mmap", np.full((5, 184, 4), np.nan, np.float32).tobytes()),
        ("train_X.mmap", "NaN or inf"),
    ),
]:
    _add("seed mmap", _name, _mmap_case(_change), *_needles)
_add("seed mmap", "pickle_not_allowed", _mmap_case(lambda f: None, "--from", "seed-mmap"), "--allow-pickle")


# ---------------------------------------------------------------- config JSON/YAML (train --config FILE)


def _config_case(name: str, content: str | bytes | None) -> Callable[[Path, Assets], list[str]]:
    def make(work: Path, assets: Assets) -> list[str]:
        if content is None:
            (work / name).mkdir()
        else:
            _write(work, name, content)
        return ["train", "--config", name, "--data", str(assets.store), "--output-dir", "runs", "--num-epochs", "1"]

    return make


for _name, _file, _content, _needle in [
    ("json_syntax", "c.json", '{"optim": {"lr": 0.1,}}', "not valid JSON"),
    ("yaml_syntax", "c.yaml", "optim:\n  lr: [0.1\n", "not valid YAML"),
    ("yaml_python_tag", "c.yaml", "optim: !!python/object/apply:os.system ['touch PWNED']\n", "not valid YAML"),
    ("empty_yaml", "c.yaml", "", "must hold a mapping"),
    ("top_level_list", "c.json", "[1, 2]", "must hold a mapping"),
    ("binary_garbage", "c.json", _garbage(), "c.json"),
    ("deep_nesting", "c.json", _deep_json(), "not valid JSON"),
    ("unknown_key", "c.json", '{"optim": {"lr": 0.1, "momentum": 0.9}}', "unknown key(s) momentum"),
    ("unknown_section", "c.yaml", "trainer:\n  lr: 0.1\n", "unknown key(s) trainer"),
    ("wrong_type", "c.json", '{"optim": {"lr": "fast"}}', "optim.lr: expected float"),
    ("section_not_a_mapping", "c.json", '{"model": "big"}', "model: expected a mapping"),
    ("bool_for_int", "c.json", '{"batch_size": true}', "batch_size: expected int"),
    ("negative_batch", "c.yaml", "batch_size: -4\n", "--batch-size"),
    ("nan_lr", "c.json", '{"optim": {"lr": NaN}}', "--lr"),
    ("wrong_version", "c.json", '{"version": 99}', "config version 99 is not supported"),
    ("config_is_folder", "c.json", None, "cannot read config file"),
]:
    _add("config JSON/YAML", _name, _config_case(_file, _content), _needle)
_add(
    "config JSON/YAML",
    "missing_file",
    lambda w, a: ["train", "--config", "gone.yaml", "--data", str(a.store), "--output-dir", "runs"],
    "gone.yaml",
)


# ---------------------------------------------------------------- checkpoint config.json (info, predict, evaluate)


def _command(command: str, ckpt: str, work: Path, assets: Assets) -> list[str]:
    if command == "predict":
        _write(work, "c.npy", clip())
        return ["predict", ckpt, "c.npy"]
    if command == "evaluate":
        return ["evaluate", ckpt, "--data", str(assets.store), "--output", "ev"]
    return ["info", ckpt]


def _meta_case(command: str, change: Callable[[dict], object]) -> Callable[[Path, Assets], list[str]]:
    """The checkpoint's config.json changed by `change` (which edits the dict in place, or
    returns the file's new text or bytes)."""

    def make(work: Path, assets: Assets) -> list[str]:
        ckpt = _copy_checkpoint(work, assets)
        path = work / ckpt / "config.json"
        meta = json.loads(path.read_text("utf-8"))
        new = change(meta)
        if new == "DELETE":
            path.unlink()
        elif isinstance(new, (str, bytes)):
            _write(work, f"{ckpt}/config.json", new)
        else:
            path.write_text(json.dumps(meta), "utf-8")
        return _command(command, ckpt, work, assets)

    return make


def _pop(*keys: str) -> Callable[[dict], None]:
    def change(meta: dict) -> None:
        for key in keys[:-1]:
            meta = meta[key]
        meta.pop(keys[-1])

    return change


def _put(value: object, *keys: str) -> Callable[[dict], None]:
    def change(meta: dict) -> None:
        for key in keys[:-1]:
            meta = meta[key]
        meta[keys[-1]] = value

    return change


for _name, _command_name, _change, _needles in [
    ("missing", "info", lambda m: "DELETE", ("config.json: missing",)),
    ("not_json", "evaluate", lambda m: '{"format": "accel_signs.checkpoint",', ("config.json", "not valid JSON")),
    ("invalid_utf8", "predict", lambda m: b'{"format": "\xff"}', ("config.json", "not valid JSON")),
    ("deep_nesting", "info", lambda m: _deep_json(), ("config.json",)),
    ("a_list", "predict", lambda m: "[]", ("config.json", "not an accel_signs checkpoint")),
    ("wrong_format", "info", _put("pytorch", "format"), ("config.json", "not an accel_signs checkpoint")),
    ("wrong_version", "evaluate", _put(7, "version"), ("config.json", "checkpoint version 7")),
    ("unknown_class", "predict", _put("ResNet", "model", "class"), ("config.json", "unknown model class 'ResNet'")),
    ("model_a_string", "info", _put("STTransformer", "model"), ("config.json", "unknown model class")),
    ("classes_count", "info", _put([], "classes"), ("config.json", "class list does not match")),
    ("no_layout", "predict", _pop("layout"), ("config.json", "layout")),
    ("unknown_size", "predict", _put("x_9_9", "model", "size"), ("config.json", "cannot rebuild the model")),
    ("no_seq_len", "info", _pop("model", "seq_len"), ("config.json", "seq_len")),
    ("seq_len_huge", "predict", _put(10**12, "model", "seq_len"), ("config.json", "seq_len")),
    ("seq_len_zero", "predict", _put(0, "model", "seq_len"), ("config.json", "seq_len")),
    ("dropout_text", "predict", _put("a lot", "model", "dropout"), ("config.json", "dropout")),
    ("input_a_list", "predict", _put([1], "model", "input"), ("config.json", "input")),
    (
        "part_sizes_wrong",
        "evaluate",
        _put([1, 2, 3, 4], "model", "part_sizes"),
        ("config.json", "cannot rebuild the model"),
    ),
    ("class_without_sign", "predict", lambda m: [c.pop("sign") for c in m["classes"]], ("config.json", "class")),
    ("train_config_a_list", "info", _put([], "train_config"), ("config.json", "train_config")),
    ("metrics_a_list", "info", _put([1, 2], "metrics"), ("config.json", "metrics")),
    ("recipe_a_list", "info", _put([], "recipe"), ("config.json", "recipe: must be an object")),
    ("recipe_without_settings", "predict", _pop("recipe", "settings"), ("config.json", "recipe: settings")),
    ("epoch_text", "evaluate", _put("7", "epoch"), ("config.json", "epoch must be an integer")),
    ("signers_not_text", "info", _put([1, 2], "data", "signers"), ("config.json", "malformed")),
]:
    _add("checkpoint JSON", _name, _meta_case(_command_name, _change), *_needles)


# ---------------------------------------------------------------- checkpoint weights (model.safetensors)


def _weights_case(command: str, change: Callable[[Path], None]) -> Callable[[Path, Assets], list[str]]:
    def make(work: Path, assets: Assets) -> list[str]:
        ckpt = _copy_checkpoint(work, assets)
        change(work / ckpt / "model.safetensors")
        return _command(command, ckpt, work, assets)

    return make


def _tensors(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(path)
        edit(tensors)
        save_file(tensors, path)

    return change


def _first_weight(tensors: dict) -> str:
    return sorted(k for k in tensors if k.endswith("weight"))[0]


def _pickle_instead(path: Path) -> None:
    path.unlink()
    path.with_name("pytorch_model.bin").write_bytes(pickle.dumps(CreatesFile()))


for _name, _command_name, _change, _needles in [
    (
        "truncated",
        "predict",
        lambda p: p.write_bytes(p.read_bytes()[:-1000]),
        ("model.safetensors", "not a readable safetensors"),
    ),
    ("garbage", "evaluate", lambda p: p.write_bytes(_garbage()), ("model.safetensors", "not a readable safetensors")),
    ("empty", "predict", lambda p: p.write_bytes(b""), ("model.safetensors", "not a readable safetensors")),
    (
        "huge_header_length",
        "predict",
        lambda p: p.write_bytes(struct.pack("<Q", 2**60) + b"{}"),
        ("model.safetensors", "not a readable"),
    ),
    (
        "header_not_json",
        "predict",
        lambda p: p.write_bytes(struct.pack("<Q", 5) + b"{oops"),
        ("model.safetensors", "not a readable"),
    ),
    (
        "a_pickle",
        "predict",
        lambda p: p.write_bytes(pickle.dumps(CreatesFile())),
        ("model.safetensors", "not a readable"),
    ),
    ("pickle_instead", "evaluate", _pickle_instead, ("pytorch_model.bin", "never unpickles")),
    (
        "wrong_shape",
        "predict",
        _tensors(lambda t: t.__setitem__(_first_weight(t), t[_first_weight(t)][:1].clone())),
        ("model.safetensors", "does not match config.json"),
    ),
    ("missing_tensor", "evaluate", _tensors(lambda t: t.pop(_first_weight(t))), ("model.safetensors", "missing")),
    (
        "extra_tensor",
        "predict",
        _tensors(lambda t: t.__setitem__("backdoor.weight", t[_first_weight(t)].clone())),
        ("model.safetensors", "unexpected backdoor.weight"),
    ),
]:
    _add("safetensors weights", _name, _weights_case(_command_name, _change), *_needles)


# ---------------------------------------------------------------- videos (predict, extract)


def _small_video(path: Path, fourcc: str = "mp4v", frames: int = 3, size: tuple[int, int] = (64, 48)) -> bytes:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 60 + 40 * i, dtype=np.uint8))
    writer.release()
    data = path.read_bytes()
    path.unlink()
    return data


def _huge_resolution(work: Path, width: int, height: int) -> bytes:
    """A 3-frame motion-JPEG AVI whose headers (the AVI's and each JPEG's) claim width x height."""
    data = bytearray(_small_video(work / ".small.avi", "MJPG"))
    start = 0
    while (start := data.find(b"\xff\xc0", start)) >= 0:  # each frame's JPEG start-of-frame: length, precision, H, W
        struct.pack_into(">HH", data, start + 5, height, width)
        start += 2
    struct.pack_into("<II", data, data.find(b"avih") + 8 + 32, width, height)  # dwWidth, dwHeight
    struct.pack_into("<ii", data, data.find(b"strf") + 8 + 4, width, height)  # biWidth, biHeight
    return bytes(data)


def _video_case(
    command: str, name: str, content: Callable[[Path], bytes | dict[str, bytes]]
) -> Callable[[Path, Assets], list[str]]:
    def make(work: Path, assets: Assets) -> list[str]:
        data = content(work)
        if isinstance(data, dict):  # a folder of frame images
            for file, image in data.items():
                _write(work, f"{name}/{file}", image)
        else:
            _write(work, name, data)
        if command == "extract":
            return ["extract", name, "out"]
        return ["predict", _copy_checkpoint(work, assets), name]

    return make


def _png(width: int, height: int) -> bytes:
    import cv2

    return cv2.imencode(".png", np.full((height, width, 3), 90, dtype=np.uint8))[1].tobytes()


for _name, _command_name, _file, _content, _needles in [
    ("text_renamed", "predict", "v.mp4", lambda w: b"this is not a video\n", ("v.mp4", "not a readable video")),
    ("empty_file", "extract", "v.mp4", lambda w: b"", ("v.mp4", "not a readable video")),
    ("garbage", "predict", "v.mov", lambda w: _garbage(20_000), ("v.mov", "not a readable video")),
    ("no_frames", "extract", "v.mp4", lambda w: _small_video(w / ".v.mp4", frames=0), ("v.mp4",)),
    ("truncated_in_header", "predict", "v.mp4", lambda w: VIDEO.read_bytes()[:1000], ("v.mp4", "not a readable video")),
    ("truncated_before_a_frame", "extract", "v.mp4", lambda w: VIDEO.read_bytes()[:30_000], ("v.mp4", "no frames")),
    # The real video cut after a fifth of its frames' data: 7 of its 58 frames decode.
    ("truncated", "predict", "v.mp4", lambda w: VIDEO.read_bytes()[:68_000], ("v.mp4", "truncated", "7 of the 58")),
    ("truncated_extract", "extract", "v.mp4", lambda w: VIDEO.read_bytes()[:68_000], ("v.mp4", "truncated")),
    (
        "huge_resolution",
        "predict",
        "v.avi",
        lambda w: _huge_resolution(w, 9000, 9000),
        ("v.avi", "9000x9000", "larger than 8K"),
    ),
    (
        "resolution_beyond_ffmpeg",
        "extract",
        "v.avi",
        lambda w: _huge_resolution(w, 30000, 20000),
        ("v.avi", "no valid frame size"),
    ),
    (
        "frame_not_an_image",
        "predict",
        "frames",
        lambda w: {"000.png": _png(64, 48), "001.png": b"not a png"},
        ("001.png", "not a readable image"),
    ),
    (
        "frames_of_two_sizes",
        "extract",
        "frames",
        lambda w: {"000.png": _png(64, 48), "001.png": _png(48, 64)},
        ("001.png", "48x64"),
    ),
]:
    CASES.append(Case("video", _name, _video_case(_command_name, _file, _content), _needles, needs="mediapipe"))


# ---------------------------------------------------------------- the clip store (info, train --data)


def _store_case(command: str, change: Callable[[Path], None]) -> Callable[[Path, Assets], list[str]]:
    def make(work: Path, assets: Assets) -> list[str]:
        shutil.copytree(assets.store, work / "store")
        change(work / "store")
        if command == "train":
            return ["train", "--data", "store", "--output-dir", "runs", "--num-epochs", "1"]
        return ["info", "store"]

    return make


def _edit_meta(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def change(store: Path) -> None:
        meta = json.loads((store / "meta.json").read_text("utf-8"))
        edit(meta)
        (store / "meta.json").write_text(json.dumps(meta), "utf-8")

    return change


def _cut(name: str, keep: int) -> Callable[[Path], None]:
    return lambda store: (store / name).write_bytes((store / name).read_bytes()[:keep])


for _name, _command_name, _change, _needles in [
    (
        "frames_truncated",
        "info",
        lambda s: (s / "train/frames.npy").write_bytes((s / "train/frames.npy").read_bytes()[:-5000]),
        ("frames.npy", "truncated"),
    ),
    ("frames_header_only", "train", _cut("train/frames.npy", 60), ("frames.npy", "not a readable .npy")),
    (
        "frames_garbage",
        "info",
        lambda s: (s / "train/frames.npy").write_bytes(_garbage()),
        ("frames.npy", "not a readable .npy"),
    ),
    ("clips_pickle", "train", lambda s: (s / "train/clips.npy").write_bytes(_pickled_npy()), ("clips.npy", "pickle")),
    (
        "meta_not_json",
        "info",
        lambda s: (s / "meta.json").write_text('{"format": "accel_signs.clipstore",'),
        ("meta.json", "not valid JSON"),
    ),
    ("meta_binary", "train", lambda s: (s / "meta.json").write_bytes(_garbage()), ("meta.json", "not valid JSON")),
    ("meta_deep_nesting", "info", lambda s: (s / "meta.json").write_text(_deep_json()), ("meta.json",)),
    ("meta_split_folder_missing", "info", lambda s: shutil.rmtree(s / "test"), ("frames.npy", "missing")),
    (
        "meta_classes_not_objects",
        "train",
        _edit_meta(lambda m: m.__setitem__("classes", [1, 2])),
        ("meta.json", "each class must be an object"),
    ),
    (
        "meta_bad_layout",
        "info",
        _edit_meta(lambda m: m["layout"]["definition"].__setitem__("parts", [])),
        ("meta.json", "'parts'"),
    ),
    (
        "meta_split_escapes",
        "info",
        _edit_meta(lambda m: m.__setitem__("splits", {"../x": {"clips": 1, "frames": 1}})),
        ("meta.json", "invalid split name"),
    ),
    (
        "frame_sizes_nan",
        "info",
        lambda s: np.save(
            s / "train/frame_sizes.npy", np.full((len(np.load(s / "train/clips.npy")), 2), np.nan, np.float32)
        ),
        ("frame_sizes.npy", "frame size"),
    ),
]:
    _add("clip store", _name, _store_case(_command_name, _change), *_needles)


# ---------------------------------------------------------------- valid files for random mutation (test_hostile's hypothesis tests)


@dataclass(frozen=True)
class FuzzTarget:
    """A valid file that a property-based test mutates, and the command that reads it."""

    file: str  # where the (mutated) file goes in the working folder
    valid: Callable[[Assets], bytes]
    setup: Callable[[Path, Assets], list[str]]  # writes the rest; returns the CLI args


def _fuzz_prepare(
    clip_points: int = 184, layout: bool = False, name: str = "c.npy"
) -> Callable[[Path, Assets], list[str]]:
    def setup(work: Path, assets: Assets) -> list[str]:
        if not (work / name).exists():
            _write(work, name, clip(points=clip_points))
        if not (work / "m.csv").exists():
            _write(work, "m.csv", f"path,sign,signer,split\n{name},1,01,train\n{name},2,02,test\n")
        return ["prepare", "m.csv", "out", "--from", "clips", *(["--layout", "lay.json"] if layout else [])]

    return setup


def _fuzz_checkpoint(command: str) -> Callable[[Path, Assets], list[str]]:
    def setup(work: Path, assets: Assets) -> list[str]:
        for f in assets.checkpoint.iterdir():
            if not (work / "ckpt" / f.name).exists():
                _write(work, f"ckpt/{f.name}", f.read_bytes())
        return _command(command, "ckpt", work, assets)

    return setup


FUZZ = {
    "manifest": FuzzTarget(
        "m.csv", lambda a: b"path,sign,signer,split,gloss,width,height\nc.npy,1,01,train,one,640,480\n", _fuzz_prepare()
    ),
    "npy": FuzzTarget("c.npy", lambda a: _npy_bytes(clip(frames=3)), _fuzz_prepare()),
    "npz": FuzzTarget("c.npz", lambda a: _npz_bytes(keypoints=clip(frames=3)), _fuzz_prepare(name="c.npz")),
    "npz_compressed": FuzzTarget(  # what `extract` writes
        "c.npz", lambda a: _npz_bytes(keypoints=clip(frames=3), compressed=True), _fuzz_prepare(name="c.npz")
    ),
    "layout": FuzzTarget(
        "lay.json", lambda a: json.dumps(_layout()).encode(), _fuzz_prepare(clip_points=3, layout=True)
    ),
    "checkpoint_json": FuzzTarget(
        "ckpt/config.json", lambda a: (a.checkpoint / "config.json").read_bytes(), _fuzz_checkpoint("info")
    ),
    "safetensors_header": FuzzTarget(
        "ckpt/model.safetensors",
        lambda a: (a.checkpoint / "model.safetensors").read_bytes(),
        _fuzz_checkpoint("predict"),
    ),
}


def mutate(data: bytes, edits: list[tuple[str, float, bytes]], span: int | None = None) -> bytes:
    """`data` with each edit applied: (kind, where as a fraction of the first `span` bytes, bytes).
    Kinds: flip (xor a byte), cut (remove len(bytes) bytes), insert, truncate."""
    for kind, where, blob in edits:
        i = min(int(where * min(span or len(data), len(data))), max(len(data) - 1, 0))
        if kind == "flip" and data:
            data = data[:i] + bytes([data[i] ^ (blob[0] or 1)]) + data[i + 1 :]
        elif kind == "cut":
            data = data[:i] + data[i + len(blob) :]
        elif kind == "insert":
            data = data[:i] + blob + data[i:]
        else:
            data = data[:i]
    return data
