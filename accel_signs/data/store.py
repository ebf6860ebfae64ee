"""The clip store: accel_signs' on-disk training format.

A store is a directory::

    meta.json               format, version, layout id, classes (sign number + glosses),
                            signers, dtype, and per split the clip and frame counts
    <split>/frames.npy      (total_frames, points, 4) float16/float32, all clips back to back,
                            opened with memory-mapping; the points are those of the store's
                            keypoint layout (meta.json records it whole; layout.py)
    <split>/clips.npy       (clips, 4) int64: offset, length, label, signer
    <split>/frame_sizes.npy (clips, 2) float32: width, height of each clip's video in pixels,
                            0 where unknown; optional (absent: every clip unknown)

`label` indexes `meta.json`'s classes and `signer` its signers. Plain `.npy` files, never
pickles. `meta.json`'s optional `extractor` records which extractor made the keypoints
(data/extractor.ExtractorRecord.to_json(); null or absent: not known). Its optional `clip_checks` records what the writer saw while writing:
`empty` (split -> indices of clips in which no point was ever detected, i.e. all zeros) and
`duplicates` (groups of [split, index] whose frames are byte-identical). MediaPipe divides x by the frame's width and y by its height, so the frame size is
what turns a clip back into undistorted shapes (see features.py); a clip of unknown size is
taken as square, which KArSL's videos are. `open_store` validates everything that is cheap to validate; `StoreSplit.check_finite`
scans the frames themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import tokenize
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from accel_signs.core.errors import ConfigError, DatasetError
from accel_signs.data.extractor import ExtractorRecord
from accel_signs.data.layout import NUM_CHANNELS, KeypointLayout, keypoint_layout, layout_from_record

# What np.load raises for a damaged file: a bad header (ValueError, SyntaxError, tokenize's
# TokenError), a short file (EOFError), a damaged zip or deflate stream (.npz), a header that
# claims more than memory holds (MemoryError), an encrypted or oddly compressed zip member.
NUMPY_LOAD_ERRORS = (
    ValueError,
    OSError,
    EOFError,
    SyntaxError,
    tokenize.TokenError,
    zipfile.BadZipFile,
    zlib.error,
    MemoryError,
    NotImplementedError,
    RuntimeError,
)
STORE_FORMAT = "accel_signs.clipstore"
STORE_VERSION = 1
CLIP_COLUMNS = ("offset", "length", "label", "signer")
FRAME_SIZES_FILE = "frame_sizes.npy"
FRAME_DTYPES = ("float16", "float32")
# The frames file's header is written before its length is known, so it gets a fixed size
# (a multiple of 64, as the .npy format asks) and is rewritten in place when the split ends.
_NPY_HEADER_BYTES = 128


@dataclass(frozen=True)
class ClassInfo:
    """One class of a store: its 1-based sign number and glosses."""

    sign: int
    en: str
    ar: str = ""


class StoreSplit:
    """One split of a store. `frames` is memory-mapped on first use (and again in each
    DataLoader worker, since a pickled memmap would copy the whole array)."""

    def __init__(
        self,
        name: str,
        directory: Path,
        clips: np.ndarray,
        num_frames: int,
        dtype: np.dtype,
        data_offset: int = 0,
        frame_sizes: np.ndarray | None = None,
        num_points: int = 184,
    ):
        self.name = name
        self.directory = directory
        self.num_points = num_points
        self.clips = clips  # (n, 4) int64: offset, length, label, signer
        self.frame_sizes = frame_sizes  # (n, 2) float32 width, height (0: unknown), or None: all unknown
        self.num_frames = num_frames
        self.dtype = dtype
        self.data_offset = data_offset  # where the frames start in frames.npy, after its header
        self._frames: np.ndarray | None = None

    @property
    def frames_path(self) -> Path:
        return self.directory / "frames.npy"

    @property
    def frames(self) -> np.ndarray:
        if self._frames is None:
            self._frames = np.load(self.frames_path, mmap_mode="r", allow_pickle=False)
        return self._frames

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_frames": None}

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def offsets(self) -> np.ndarray:
        return self.clips[:, 0]

    @property
    def lengths(self) -> np.ndarray:
        return self.clips[:, 1]

    @property
    def labels(self) -> np.ndarray:
        return self.clips[:, 2]

    @property
    def signer_index(self) -> np.ndarray:
        """(n,) int64: each clip's signer as an index into ClipStore.signers (which holds the names)."""
        return self.clips[:, 3]

    @property
    def signers(self) -> np.ndarray:
        """The old name of `signer_index` (ints, not names), kept for existing callers."""
        return self.signer_index

    @property
    def aspects(self) -> np.ndarray:
        """(n,) float32 width / height of each clip's video; 1 (square) where unknown."""
        if self.frame_sizes is None:
            return np.ones(len(self.clips), dtype=np.float32)
        w, h = self.frame_sizes[:, 0], self.frame_sizes[:, 1]
        known = (w > 0) & (h > 0)
        return np.where(known, w / np.where(known, h, 1), 1).astype(np.float32)

    def clip(self, i: int) -> np.ndarray:
        """Frames of clip i, (length, points, 4)."""
        off, length = int(self.clips[i, 0]), int(self.clips[i, 1])
        return np.asarray(self.frames[off : off + length])

    def read_frames(self, start: int, count: int) -> np.ndarray:
        """Frames [start, start + count) with a plain file read: unlike slicing the memory map,
        this leaves nothing resident in the process once the array is dropped."""
        count = max(0, min(count, self.num_frames - start))
        with open(self.frames_path, "rb") as f:
            f.seek(self.data_offset + start * self.num_points * NUM_CHANNELS * self.dtype.itemsize)
            data = np.fromfile(f, dtype=self.dtype, count=count * self.num_points * NUM_CHANNELS)
        return data.reshape(count, self.num_points, NUM_CHANNELS)  # flat -> (frames, P, 4)

    def check_finite(self, chunk_frames: int = 16384) -> None:
        """Scan every frame for NaN/inf in bounded memory; raise naming the first bad clip."""
        for start in range(0, self.num_frames, chunk_frames):
            chunk = self.read_frames(start, chunk_frames)
            bad = ~np.isfinite(chunk).all(axis=(1, 2))
            if bad.any():
                frame = start + int(np.argmax(bad))
                clip = int(np.searchsorted(self.offsets, frame, side="right")) - 1
                raise DatasetError(
                    f"{self.frames_path}: frame {frame} (clip {clip} of split {self.name!r}) holds NaN or inf values"
                )


@dataclass
class ClipStore:
    """An opened, validated store."""

    path: Path
    classes: tuple[ClassInfo, ...]
    signers: tuple[str, ...]
    dtype: str
    splits: dict[str, StoreSplit]
    meta: dict[str, Any] = field(repr=False)
    layout: KeypointLayout = field(default_factory=keypoint_layout, repr=False)
    # Which extractor made the keypoints (meta.json's "extractor"); None: not recorded (older stores).
    extractor: ExtractorRecord | None = field(default=None, repr=False)

    def split(self, name: str) -> StoreSplit:
        if name not in self.splits:
            raise DatasetError(f"store {self.path} has no split {name!r} (it has: {', '.join(self.splits) or 'none'})")
        return self.splits[name]


def _fail(path: Path, problem: str) -> DatasetError:
    return DatasetError(f"{path}: {problem}")


def _read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from an .npy header, without reading the data."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except FileNotFoundError:
        raise _fail(path, "file is missing") from None
    except NUMPY_LOAD_ERRORS as e:
        raise _fail(path, f"not a readable .npy file ({e})") from None
    if fortran:
        raise _fail(path, "Fortran-ordered arrays are not supported")
    if dtype.hasobject:
        raise _fail(path, "holds Python objects (a pickle); stores hold numbers only")
    return shape, dtype, offset


def _check_size(path: Path, shape: tuple[int, ...], dtype: np.dtype, offset: int) -> None:
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise _fail(
            path, f"file is truncated: {actual} bytes, but its header describes {shape} {dtype} ({expected} bytes)"
        )
    if actual > expected:
        raise _fail(
            path, f"file has {actual - expected} trailing bytes beyond the {shape} {dtype} array its header describes"
        )


def _load_meta(path: Path) -> dict[str, Any]:
    meta_path = path / "meta.json"
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
    except FileNotFoundError:
        raise _fail(
            meta_path,
            "missing: this folder is not an accel_signs clip store (create one with `accel-signs synth` or `accel-signs prepare`)",
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: nested too deep
        raise _fail(meta_path, f"not valid JSON ({e})") from None
    except OSError as e:
        raise _fail(meta_path, f"cannot be read ({e.strerror or e})") from None
    if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
        raise _fail(meta_path, f'not a clip store description (expected "format": "{STORE_FORMAT}")')
    if meta.get("version") != STORE_VERSION:
        raise _fail(
            meta_path,
            f"store version {meta.get('version')!r} is not supported (this accel_signs reads {STORE_VERSION})",
        )
    for key, kind in (("classes", list), ("signers", list), ("splits", dict), ("dtype", str)):
        if not isinstance(meta.get(key), kind):
            raise _fail(meta_path, f"key {key!r} is missing or not a {kind.__name__}")
    if meta["dtype"] not in FRAME_DTYPES:
        raise _fail(meta_path, f"dtype {meta['dtype']!r} is not one of {', '.join(FRAME_DTYPES)}")
    return meta


def open_store(path: str | os.PathLike[str]) -> ClipStore:
    """Open and validate a store: its description, every file's header and size, and every
    clip index entry (offsets, lengths, labels, signers). Raises DatasetError naming the file
    and the problem. Frame values are checked by `StoreSplit.check_finite`."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"data store {path} does not exist")
    if not path.is_dir():
        raise DatasetError(f"data store {path} is not a directory")
    meta = _load_meta(path)
    meta_path = path / "meta.json"
    try:
        layout = layout_from_record(meta.get("layout"), str(meta_path))
    except ConfigError as e:
        raise DatasetError(str(e)) from None
    classes = []
    for c in meta["classes"]:
        sign = c.get("sign") if isinstance(c, dict) else None
        if (
            type(sign) is not int
            or sign < 1
            or not isinstance(c.get("en", ""), str)
            or not isinstance(c.get("ar", ""), str)
        ):
            raise _fail(
                meta_path,
                'each class must be an object with an integer "sign" >= 1 and optional '
                f'"en"/"ar" gloss strings, got {c!r}',
            )
        classes.append(ClassInfo(sign, c.get("en", ""), c.get("ar", "")))
    classes = tuple(classes)
    if not classes:
        raise _fail(meta_path, "the store has no classes")
    if len({c.sign for c in classes}) != len(classes):
        raise _fail(meta_path, "two classes share a sign number")
    signers = tuple(str(s) for s in meta["signers"])
    if not signers or len(set(signers)) != len(signers):
        raise _fail(meta_path, "signers must be a non-empty list of distinct ids")
    dtype = np.dtype(meta["dtype"])
    splits = {}
    for name, info in meta["splits"].items():
        if not _valid_split_name(name):
            raise _fail(meta_path, f"invalid split name {name!r} (a plain folder name inside the store)")
        splits[name] = _open_split(path, name, info, dtype, len(classes), len(signers), layout.num_points)
    if not splits:
        raise _fail(meta_path, "the store has no splits")
    extractor = None if meta.get("extractor") is None else ExtractorRecord.from_json(meta["extractor"], str(meta_path))
    return ClipStore(path, classes, signers, meta["dtype"], splits, meta, layout, extractor)


def _open_split(
    root: Path, name: str, info: Any, dtype: np.dtype, num_classes: int, num_signers: int, num_points: int
) -> StoreSplit:
    directory = root / name
    if not isinstance(info, dict) or not isinstance(info.get("clips"), int) or not isinstance(info.get("frames"), int):
        raise _fail(root / "meta.json", f'split {name!r} must record integer "clips" and "frames" counts')
    frames_path, clips_path = directory / "frames.npy", directory / "clips.npy"
    shape, fdtype, offset = _read_npy_header(frames_path)
    if len(shape) != 3 or shape[1:] != (num_points, NUM_CHANNELS):
        raise _fail(
            frames_path,
            f"frames must have shape (frames, {num_points}, {NUM_CHANNELS}) (the store's keypoint "
            f"layout has {num_points} points), got {shape}",
        )
    if fdtype != dtype:
        raise _fail(frames_path, f"dtype {fdtype} differs from meta.json's {dtype}")
    _check_size(frames_path, shape, fdtype, offset)
    cshape, cdtype, coffset = _read_npy_header(clips_path)
    if len(cshape) != 2 or cshape[1] != len(CLIP_COLUMNS) or cdtype != np.int64:
        raise _fail(
            clips_path, f"clip index must be int64 with shape (clips, {len(CLIP_COLUMNS)}), got {cdtype} {cshape}"
        )
    _check_size(clips_path, cshape, cdtype, coffset)
    clips = np.load(clips_path, allow_pickle=False)
    if len(clips) == 0:
        raise _fail(clips_path, f"split {name!r} is empty (no clips)")
    _check_clips_back_to_back(clips, clips_path, frames_path, shape[0])
    if cshape[0] != info["clips"] or shape[0] != info["frames"]:
        raise _fail(
            root / "meta.json",
            f"split {name!r} records {info['clips']} clips / {info['frames']} frames, "
            f"but its files hold {cshape[0]} clips / {shape[0]} frames",
        )
    _check_clip_values(clips, clips_path, num_classes, num_signers)
    return StoreSplit(
        name, directory, clips, shape[0], dtype, offset, _open_frame_sizes(directory, len(clips)), num_points
    )


def _check_clips_back_to_back(clips: np.ndarray, clips_path: Path, frames_path: Path, num_frames: int) -> None:
    """Every clip at least 1 frame long, each starting where the previous ends, together covering the frames."""
    offsets, lengths = clips[:, 0], clips[:, 1]
    if (lengths < 1).any():
        i = int(np.argmax(lengths < 1))
        raise _fail(clips_path, f"clip {i} has length {lengths[i]} (every clip needs at least 1 frame)")
    ends = offsets + lengths
    if offsets[0] != 0 or (offsets[1:] != ends[:-1]).any():
        i = 0 if offsets[0] != 0 else int(np.argmax(offsets[1:] != ends[:-1])) + 1
        raise _fail(
            clips_path,
            f"clip {i} starts at frame {offsets[i]}, expected {0 if i == 0 else ends[i - 1]} (clips must be back to back)",
        )
    if ends[-1] != num_frames:
        raise _fail(
            frames_path,
            f"holds {num_frames} frames, but the clip index ({clips_path.name}) covers {ends[-1]}: "
            + (
                "the frames file is shorter than its index says"
                if ends[-1] > num_frames
                else "frames beyond the last clip"
            ),
        )


def _check_clip_values(clips: np.ndarray, clips_path: Path, num_classes: int, num_signers: int) -> None:
    """Labels and signer indices within the store's classes and signers."""
    labels, signers = clips[:, 2], clips[:, 3]
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise _fail(
            clips_path,
            f"clip {i} has label {labels[i]}, outside the store's {num_classes} classes (0..{num_classes - 1})",
        )
    bad = (signers < 0) | (signers >= num_signers)
    if bad.any():
        i = int(np.argmax(bad))
        raise _fail(clips_path, f"clip {i} has signer index {signers[i]}, outside the store's {num_signers} signers")


def _open_frame_sizes(directory: Path, num_clips: int) -> np.ndarray | None:
    """The optional per-clip frame sizes, checked: (clips, 2) float32, finite, >= 0."""
    path = directory / FRAME_SIZES_FILE
    if not path.exists():
        return None
    shape, dtype, offset = _read_npy_header(path)
    if shape != (num_clips, 2) or dtype != np.float32:
        raise _fail(
            path,
            f"frame sizes must be float32 with shape ({num_clips}, 2) (width, height per clip), got {dtype} {shape}",
        )
    _check_size(path, shape, dtype, offset)
    sizes = np.load(path, allow_pickle=False)
    bad = ~np.isfinite(sizes).all(1) | (sizes < 0).any(1)
    if bad.any():
        raise _fail(
            path,
            f"clip {int(np.argmax(bad))} has frame size {sizes[int(np.argmax(bad))].tolist()}; "
            "expected width, height >= 0 (0: unknown)",
        )
    return sizes


def _valid_split_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """A version 1.0 .npy header padded to exactly _NPY_HEADER_BYTES."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})
    room = _NPY_HEADER_BYTES - 10  # magic (6) + version (2) + header length (2)
    if len(text) + 1 > room:
        raise DatasetError(f"array shape {shape} is too large for the store's frames header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", room) + (text.ljust(room - 1) + "\n").encode("latin1")


class StoreWriter:
    """Writes a store split by split, clip by clip, in bounded memory, into a temporary
    folder that replaces nothing until `close()` renames it into place. On error (or
    `abort()`) the temporary folder is removed and nothing is left behind.

        with StoreWriter(out, classes, signers) as w:
            w.begin_split("train")
            w.add_clip(frames, label=0, signer=1)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        classes: Sequence[ClassInfo],
        signers: Sequence[str],
        dtype: str = "float32",
        source: dict[str, Any] | None = None,
        layout: KeypointLayout | None = None,
        extractor: ExtractorRecord | None = None,
    ):
        self.path = Path(path)
        self.layout = layout or keypoint_layout()
        self.points = self.layout.num_points
        if self.path.exists():
            raise DatasetError(f"{self.path} already exists; choose a new folder for the store")
        if dtype not in FRAME_DTYPES:
            raise DatasetError(f"store dtype must be one of {', '.join(FRAME_DTYPES)}, got {dtype!r}")
        self.classes, self.signers, self.dtype = tuple(classes), tuple(signers), np.dtype(dtype)
        self.source, self.extractor = source or {}, extractor
        # The folders made for the store, deepest first: abort() removes them again.
        self._made = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        self._splits: dict[str, dict[str, int]] = {}
        self._split: str | None = None
        self._frames_file = None
        self._clips: list[tuple[int, int, int, int]] = []
        self._frame_sizes: list[tuple[float, float]] = []
        self._num_frames = 0
        # What `clip_checks` records: each clip's frames digest -> its (split, index)es, and empty clips.
        self._digests: dict[bytes, list[tuple[str, int]]] = {}
        self._empty: dict[str, list[int]] = {}

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def begin_split(self, name: str) -> None:
        if not _valid_split_name(name):
            raise DatasetError(f"invalid split name {name!r}")
        self._end_split()
        (self._tmp / name).mkdir()
        self._split, self._clips, self._frame_sizes, self._num_frames = name, [], [], 0
        self._frames_file = open(self._tmp / name / "frames.npy", "wb")
        self._frames_file.write(_npy_header((0, self.points, NUM_CHANNELS), self.dtype))

    def add_clip(
        self, frames: np.ndarray, label: int, signer: int, frame_size: tuple[float, float] | None = None
    ) -> None:
        """Append one clip, (length, points, 4); label/signer index the store's classes/signers;
        `frame_size` is the (width, height) of its video in pixels, when known."""
        if self._split is None:
            raise DatasetError("add_clip before begin_split")
        frames = np.asarray(frames)
        if frames.ndim != 3 or frames.shape[1:] != (self.points, NUM_CHANNELS) or len(frames) == 0:
            raise DatasetError(
                f"a clip must have shape (frames>=1, {self.points}, {NUM_CHANNELS}) (layout "
                f"{self.layout.name}), got {frames.shape}"
            )
        if not 0 <= label < len(self.classes) or not 0 <= signer < len(self.signers):
            raise DatasetError(f"clip label {label} / signer {signer} out of range")
        width, height = frame_size if frame_size is not None else (0.0, 0.0)
        if not (np.isfinite(width) and np.isfinite(height) and width >= 0 and height >= 0):
            raise DatasetError(
                f"frame size {frame_size} of a clip of split {self._split!r}: expected width, height >= 0"
            )
        data = frames.astype(self.dtype, copy=False)
        if not np.isfinite(data).all():
            raise DatasetError(
                f"a clip of split {self._split!r} holds NaN or inf values (or values too large for {self.dtype})"
            )
        raw = np.ascontiguousarray(data).tobytes()
        self._frames_file.write(raw)
        index = len(self._clips)
        # SHA-256: with the CPU's SHA instructions about 2.5x faster than BLAKE2 here; 16 bytes are plenty.
        self._digests.setdefault(hashlib.sha256(raw).digest()[:16], []).append((self._split, index))
        if not data.any():
            self._empty.setdefault(self._split, []).append(index)
        self._clips.append((self._num_frames, len(frames), int(label), int(signer)))
        self._frame_sizes.append((float(width), float(height)))
        self._num_frames += len(frames)

    def duplicates(self) -> list[list[tuple[str, int]]]:
        """Groups of the clips written so far whose frames are byte-identical: [(split, index), ...]."""
        return [group for group in self._digests.values() if len(group) > 1]

    def empty_clips(self) -> dict[str, list[int]]:
        """split -> indices of the clips written so far in which no point is ever detected (all zeros)."""
        return {split: list(ids) for split, ids in self._empty.items()}

    def _end_split(self) -> None:
        if self._split is None:
            return
        if not self._clips:
            raise DatasetError(f"split {self._split!r} has no clips")
        f = self._frames_file
        f.seek(0)
        f.write(_npy_header((self._num_frames, self.points, NUM_CHANNELS), self.dtype))
        f.flush()
        os.fsync(f.fileno())
        f.close()
        np.save(self._tmp / self._split / "clips.npy", np.asarray(self._clips, dtype=np.int64).reshape(-1, 4))
        sizes = np.asarray(self._frame_sizes, dtype=np.float32).reshape(-1, 2)
        if sizes.any():  # only sources that know their videos' sizes write the file
            np.save(self._tmp / self._split / FRAME_SIZES_FILE, sizes)
        self._splits[self._split] = {"clips": len(self._clips), "frames": self._num_frames}
        self._split, self._frames_file = None, None

    def close(self) -> Path:
        """Finish the last split, write meta.json and move the store into place."""
        try:
            self._end_split()
            if not self._splits:
                raise DatasetError("a store needs at least one split")
            meta = {
                "format": STORE_FORMAT,
                "version": STORE_VERSION,
                "layout": self.layout.record(),
                "dtype": str(self.dtype),
                "clip_columns": list(CLIP_COLUMNS),
                "classes": [{"sign": c.sign, "en": c.en, "ar": c.ar} for c in self.classes],
                "signers": list(self.signers),
                "splits": self._splits,
                "source": self.source,
                "extractor": None if self.extractor is None else self.extractor.to_json(),
                "clip_checks": {
                    "empty": self.empty_clips(),
                    "duplicates": [[list(c) for c in group] for group in self.duplicates()],
                },
            }
            (self._tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1), "utf-8")
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        if self._frames_file is not None:
            self._frames_file.close()
            self._frames_file = None
        shutil.rmtree(self._tmp, ignore_errors=True)
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:  # not empty (something else is there now) or already gone
                break
