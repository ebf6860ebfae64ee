"""Bring keypoint files into a clip store, streaming in bounded memory.

The original project's sources (this package grew out of it; `--from seed-mmap` is its
memory-map format, the name kept from then):

- `npz`: `{root}/{signer}-{split}/{sign:04}.npz`, one float array (frames, 184, 4) per video,
  or (frames, 184, 3) without visibility (its files before 2026-01-23; data/seed_files.py
  derives visibility from detection). Files of its "adjusted" option are refused.
  An optional array named `frame_size` (not a clip) gives the videos' width, height in
  pixels: shape (2,) for every clip of the file, or (clips, 2), one row per clip in the
  order of the file's other arrays (0, 0: unknown).
- `seed-mmap`: `{split}_X.mmap` (raw float32 frames of all clips back to back),
  `{split}_X_shape.npy`, `{split}_y.npz` (labels = sign - 1, key `arr_0`) and
  `{split}_X_map_samples_lens.npy`, a pickled dict {sign: {signer: [clip lengths]}}. Clips
  run sign-major, then signer, then in recording order. Unpickling runs code, so this source
  is read only with `allow_pickle=True`. An optional `{split}_frame_sizes.npy`, (clips, 2)
  width, height in the memory map's clip order (0, 0: unknown), gives per-clip frame sizes.

Neither format recorded frame sizes originally: `frame_size` (`--frame-size WxH`) is the size
of every clip the source gives none for. Without any, x and y are taken as if the video were
square, which stretches the hands of 16:9 recordings.

Both write clips in that same order (sign, signer, file order), so the two sources of one
data set give clip-for-clip identical stores. Frames are read with plain file reads, never
memory-mapped, so the process's resident memory stays bounded by one clip (or one npz file)
whatever the size of the data.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from accel_signs.core.errors import ConfigError, DatasetError
from accel_signs.core.progress import progress_bar
from accel_signs.data.extractor import SEED_RECIPE, ExtractorRecord
from accel_signs.data.layout import NUM_CHANNELS, KeypointLayout, builtin_layout, karsl_glosses
from accel_signs.data.pipeline import format_ranges
from accel_signs.data.seed_files import check_not_adjusted, with_detected_visibility
from accel_signs.data.store import NUMPY_LOAD_ERRORS, ClassInfo, StoreWriter

logger = logging.getLogger(__name__)
# The original project's formats hold the 184-point KArSL layout.
NUM_POINTS = 184
SOURCES = ("npz", "seed-mmap", "clips", "gislr")
_FRAME_BYTES = NUM_POINTS * NUM_CHANNELS * 4  # float32
# The npz source's optional per-clip frame sizes: an array of that name is not a clip.
NPZ_FRAME_SIZE_KEY = "frame_size"

# One clip from a source: frames (T, points, 4), sign number, signer name, video (width, height)
# or None, where it comes from (for messages: a file, a line), and the file it was read from
# when a source can list one file twice (a manifest, train.csv), else None.
SourceClip = tuple[np.ndarray, int, str, tuple[float, float] | None, str, str | None]
# How many clips a warning or an error lists by name before it counts the rest.
_LIST_FIRST = 5


class SourcePlan(Protocol):
    """What `prepare` reads a source through (one class per `--from`): the store's classes,
    signers, layout and splits, the source files found missing, and the clips of each split,
    sign-major, then signer, then recording order."""

    unit: str  # what the progress bar counts: "files", "clips", "sequences"
    layout: KeypointLayout
    classes: list[ClassInfo]
    signers: list[str]
    splits: list[str]
    missing: list[str]

    def total(self, split_name: str) -> int:
        """How many units `clips(split_name, ...)` advances the progress bar by."""
        ...

    def clips(self, split_name: str, report: PrepareReport, advance: Callable[[int], None]) -> Iterator[SourceClip]:
        """Each clip of the split in store order; counts the files it reads in `report`."""
        ...

    def extractor(self) -> ExtractorRecord | None:
        """The extractor that made the clips read so far, where the source says (None: unknown)."""
        ...


@dataclass
class PrepareReport:
    """What a prepare run found."""

    clips: dict[str, int] = field(default_factory=dict)  # per split
    frames: dict[str, int] = field(default_factory=dict)
    files: int = 0
    missing: list[str] = field(default_factory=list)  # "{signer}-{split}/{sign:04}.npz" not found
    # Clips with no detection in any frame: (split, where); dropped from the store with drop_empty.
    empty: list[tuple[str, str]] = field(default_factory=list)
    dropped_empty: bool = False
    # Groups of identical clips (the same file listed twice, or byte-identical frames): [(split, where), ...].
    duplicates: list[list[tuple[str, str]]] = field(default_factory=list)
    unknown_sizes: dict[str, int] = field(default_factory=dict)  # per split: clips without a frame size
    derived_visibility: int = 0  # clips read from 3-channel (x, y, z) files: visibility from detection

    def summary(self) -> str:
        found = ", ".join(f"{s}: {self.clips[s]} clips / {self.frames[s]} frames" for s in self.clips)
        text = f"found {self.files} source files ({found})"
        if self.missing:
            text += f"; missing {len(self.missing)}: {_missing_summary(self.missing)}"
        if self.empty:
            text += f"; {len(self.empty)} clip(s) with no detection" + (
                " dropped" if self.dropped_empty else " kept (--drop-empty drops them)"
            )
        if self.duplicates:
            text += (
                f"; {len(self.duplicates)} group(s) of duplicate clips "
                f"({sum(len(g) for g in self.duplicates)} clips, {len(self.cross_split())} across splits)"
            )
        if self.derived_visibility:
            text += f"; {self.derived_visibility} clip(s) had 3 channels (x, y, z): visibility derived from detection"
        unknown = sum(self.unknown_sizes.values())
        if unknown:
            text += f"; frame size unknown for {unknown} of {sum(self.clips.values())} clips (taken as square)"
        return text

    def cross_split(self) -> list[list[tuple[str, str]]]:
        """The duplicate groups that span several splits."""
        return [g for g in self.duplicates if len({s for s, _ in g}) > 1]


def _missing_summary(missing: list[str]) -> str:
    """['01-train/0005.npz', '01-train/0006.npz', '02-test/0001.npz'] -> '01-train signs 5-6; 02-test sign 1'."""
    by_folder: dict[str, list[int]] = {}
    for m in missing:
        folder, _, name = m.partition("/")
        by_folder.setdefault(folder, [])
        if name:
            by_folder[folder].append(int(name.split(".")[0]))
    return "; ".join(f"{f} " + (f"signs {format_ranges(s)}" if s else "(whole folder)") for f, s in by_folder.items())


def _classes(signs: Sequence[int]) -> list[ClassInfo]:
    en, ar = karsl_glosses()
    return [ClassInfo(s, en[s - 1] if s <= len(en) else f"sign {s}", ar[s - 1] if s <= len(ar) else "") for s in signs]


def parse_frame_size(text: str | None) -> tuple[float, float] | None:
    """`--frame-size` text `1920x1080` -> (1920.0, 1080.0): positive whole pixels; None stays None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m[1]) == 0 or int(m[2]) == 0:
        raise ConfigError(f"--frame-size: expected WIDTHxHEIGHT in whole pixels above 0, e.g. 1920x1080, got {text!r}")
    return float(m[1]), float(m[2])


def check_frame_sizes(sizes: np.ndarray, where: str, rows: int | None = None) -> np.ndarray:
    """Frame sizes read from a source file: numeric (rows, 2) width, height, finite, each row
    > 0 or (0, 0) for unknown. (2,) is one size for all `rows`. Returns (rows, 2) float32."""
    sizes = np.asarray(sizes)
    if sizes.dtype.kind not in "fiu":
        raise DatasetError(f"{where}: frame sizes must be numbers (width, height), got dtype {sizes.dtype}")
    if sizes.shape == (2,) and rows is not None:
        sizes = np.broadcast_to(sizes, (rows, 2))
    if sizes.ndim != 2 or sizes.shape[1] != 2 or (rows is not None and len(sizes) != rows):
        expected = "(2,) or " if rows is not None else ""
        raise DatasetError(
            f"{where}: frame sizes have shape {sizes.shape}, expected {expected}({rows if rows is not None else 'clips'}, 2): "
            "width, height per clip"
        )
    sizes = sizes.astype(np.float32)
    unknown = (sizes == 0).all(1)
    bad = ~unknown & ~(np.isfinite(sizes).all(1) & (sizes > 0).all(1))
    if bad.any():
        i = int(np.argmax(bad))
        raise DatasetError(
            f"{where}: frame size {sizes[i].tolist()} of clip {i}: width and height must be > 0 (or both 0: unknown)"
        )
    return sizes


def _size_or_none(row: np.ndarray) -> tuple[float, float] | None:
    return None if (row == 0).all() else (float(row[0]), float(row[1]))


def _list_first(items: Sequence[str]) -> str:
    """The first few of `items`, and how many more."""
    shown = "; ".join(items[:_LIST_FIRST])
    return shown + (f"; and {len(items) - _LIST_FIRST} more" if len(items) > _LIST_FIRST else "")


def _group_text(group: Sequence[tuple[str, str]]) -> str:
    return " = ".join(f"{where} ({split})" for split, where in group)


def check_clip(clip: np.ndarray, where: str, num_points: int = NUM_POINTS) -> np.ndarray:
    """A clip must be (frames >= 1, points, 4), numeric and finite."""
    if not isinstance(clip, np.ndarray):  # np.load gives the bytes of an .npz member that is no .npy
        raise DatasetError(f"{where}: not an .npy array")
    if clip.dtype.kind not in "fiu":
        raise DatasetError(f"{where}: dtype {clip.dtype} is not numeric")
    if clip.ndim != 3 or clip.shape[1:] != (num_points, NUM_CHANNELS):
        raise DatasetError(f"{where}: shape {clip.shape}, expected (frames, {num_points}, {NUM_CHANNELS})")
    if len(clip) == 0:
        raise DatasetError(f"{where}: the clip has no frames")
    if not np.isfinite(clip).all():
        frame = int(np.argmax(~np.isfinite(clip).all(axis=(1, 2))))
        raise DatasetError(f"{where}: frame {frame} holds NaN or inf values")
    return clip


def prepare(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    source: str,
    *,
    signs: Sequence[int] | None = None,
    signers: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    dtype: str = "float32",
    allow_pickle: bool = False,
    allow_missing: bool = False,
    layout: str | None = None,
    coords: str = "normalized",
    frame_size: tuple[float, float] | None = None,
    allow_duplicates: bool = False,
    drop_empty: bool = False,
    extractor: ExtractorRecord | None = None,
) -> PrepareReport:
    """Convert `src` into a new clip store at `out` (atomically: a failure leaves nothing).

    `layout` (a built-in name or a layout file) is the clips' keypoint layout for `clips`
    (default karsl184) and `gislr` (default holistic543); the original project's formats are
    karsl184. `splits` defaults to train and test for those, to all found for the others.
    `frame_size` (width, height; npz and seed-mmap) is the video size of every clip whose
    source file gives none.

    Checks while writing: clips in which nothing is ever detected are listed (a warning) or,
    with `drop_empty`, left out; duplicates (one file listed twice, or byte-identical frames)
    within a split or across train and val are listed (a warning), and across the test split
    and any other are an error unless `allow_duplicates`.

    The store records the extractor that made the keypoints: `extractor` where given, else what
    the source says (the original project's files: its recipe, SEED_RECIPE; extracted npz files:
    the record they carry), else none (unknown)."""
    src, out = Path(src), Path(out)
    if source not in SOURCES:
        raise DatasetError(f"--from must be one of {', '.join(SOURCES)}, got {source!r}")
    if frame_size is not None and source not in ("npz", "seed-mmap"):
        raise ConfigError(
            "--frame-size is for --from npz and --from seed-mmap; a manifest gives sizes in its width and "
            "height columns, and GISLR's coordinates need none"
        )
    if layout is not None and source in ("npz", "seed-mmap"):
        raise DatasetError(
            f"--layout: the original project's {source} files hold the karsl184 layout; --layout is for "
            "--from clips and --from gislr"
        )
    if source != "clips" and not src.is_dir():
        raise DatasetError(
            f"source folder {src} does not exist" if not src.exists() else f"source {src} is not a folder"
        )
    if out.exists():
        raise DatasetError(f"{out} already exists; choose a new folder for the store")
    plan = _open_source(src, source, signs, signers, splits, allow_pickle, layout, coords)
    report = PrepareReport(missing=plan.missing)
    if plan.missing and not allow_missing:
        raise DatasetError(
            f"{src}: {len(plan.missing)} expected source file(s) are missing: "
            f"{_missing_summary(plan.missing)}; pass --allow-missing to prepare what is there"
        )
    record = {"from": source, "path": str(src.resolve()), "missing": plan.missing}
    if frame_size is not None:
        record["frame_size"] = list(frame_size)
    report.dropped_empty = drop_empty
    _write_store(plan, src, out, dtype, record, report, frame_size, allow_duplicates, extractor)
    logger.info("prepared %s: %s", out, report.summary())
    return report


def _open_source(
    src: Path,
    source: str,
    signs: Sequence[int] | None,
    signers: Sequence[str] | None,
    splits: Sequence[str] | None,
    allow_pickle: bool,
    layout: str | None,
    coords: str,
) -> SourcePlan:
    """The plan that reads `source` (a `--from` value)."""
    from accel_signs.data.importers import ClipsPlan, GislrPlan

    if source == "clips":
        return ClipsPlan(src, layout, coords, signs, signers, splits)
    if source == "gislr":
        return GislrPlan(src, layout, signs, signers)
    if source == "npz":
        return _NpzPlan(src, signs, signers, splits or ("train", "test"))
    splits = splits or ("train", "test")
    if not allow_pickle:
        raise DatasetError(
            f"{src}: the seed-mmap memory map's clip-length index ({splits[0]}_X_map_samples_lens.npy) is a pickle, and "
            "loading a pickle can run arbitrary code. If you trust these files, pass --allow-pickle; otherwise "
            "prepare from the npz tree (--from npz)"
        )
    return _OriginalMmapPlan(src, signs, signers, splits)


def _write_store(
    plan: SourcePlan,
    src: Path,
    out: Path,
    dtype: str,
    source: dict,
    report: PrepareReport,
    frame_size: tuple[float, float] | None = None,
    allow_duplicates: bool = False,
    extractor: ExtractorRecord | None = None,
) -> None:
    """Every split of the plan into a new store at `out`, counted and checked in `report`;
    `frame_size` for the clips the source gives no size for. A failed check raises before
    the store is moved into place, so it leaves nothing."""
    classes = list(plan.classes)
    label = {c.sign: i for i, c in enumerate(classes)}
    # (split, index in the store) -> where the clip came from; file -> the clips read from it
    wheres: dict[tuple[str, int], str] = {}
    files: dict[str, list[tuple[str, int]]] = {}
    with StoreWriter(out, classes, plan.signers, dtype, layout=plan.layout, source=source) as writer:
        for split_name in plan.splits:
            writer.begin_split(split_name)
            clips = frames = unknown = 0
            with progress_bar(f"{split_name}: {plan.unit}", plan.total(split_name)) as advance:
                for clip, sign, signer, size, where, origin in plan.clips(split_name, report, advance):
                    if not np.any(clip):  # no point detected in any frame
                        report.empty.append((split_name, where))
                        if report.dropped_empty:
                            continue
                    size = size or frame_size
                    writer.add_clip(clip, label[sign], plan.signers.index(signer), size)
                    wheres[split_name, clips] = where
                    if origin is not None:
                        files.setdefault(origin, []).append((split_name, clips))
                    clips, frames, unknown = clips + 1, frames + len(clip), unknown + (size is None)
            if clips == 0:
                raise DatasetError(
                    f"{src}: no clips for split {split_name!r} with the chosen signs and signers"
                    + (" (every one had no detection and --drop-empty dropped it)" if report.empty else "")
                )
            report.clips[split_name], report.frames[split_name] = clips, frames
            report.unknown_sizes[split_name] = unknown
            logger.info("%s: %d clips, %d frames", split_name, clips, frames)
        if report.derived_visibility:  # written into meta.json's source when the writer closes
            source["visibility"] = {"derived_from_detection": report.derived_visibility}
        writer.extractor = _store_extractor(plan.extractor(), extractor, src)
        _check_clips(writer, wheres, files, report, allow_duplicates)


def _store_extractor(found: ExtractorRecord | None, given: ExtractorRecord | None, src: Path) -> ExtractorRecord | None:
    """The record the store keeps: `given` (prepare --extractor) over what the source says, except
    where the files themselves record another extractor (extract's npz files)."""
    if given is None:
        return found
    if found is not None and found is not SEED_RECIPE and found.differences(given):
        raise DatasetError(
            f"{src}: its files record {found.describe()}, not {given.describe()} (--extractor); "
            "drop --extractor to keep what the files say"
        )
    return given


def _check_clips(
    writer: StoreWriter,
    wheres: dict[tuple[str, int], str],
    files: dict[str, list[tuple[str, int]]],
    report: PrepareReport,
    allow_duplicates: bool,
) -> None:
    """Duplicates and empty clips into `report` and the log; raises for a duplicate across the
    test split and another unless `allow_duplicates`."""
    groups = {tuple(g) for g in writer.duplicates()}  # byte-identical frames
    # One file listed twice is a duplicate even where its clips differ (another frame size).
    groups |= {tuple(g) for g in files.values() if len(g) > 1}
    merged: list[set[tuple[str, int]]] = []
    for g in sorted(groups):
        overlapping = [m for m in merged if m & set(g)]
        for m in overlapping:
            merged.remove(m)
        merged.append(set(g).union(*overlapping))
    order = {split: n for n, split in enumerate(dict.fromkeys(split for split, _ in wheres))}  # the plan's
    report.duplicates = [
        [(split, wheres[split, i]) for split, i in sorted(m, key=lambda c: (order[c[0]], c[1]))] for m in merged
    ]
    if report.empty:
        logger.warning(
            "%d clip(s) with no detection in any frame (all keypoints zero)%s: %s",
            len(report.empty),
            ", dropped (--drop-empty)" if report.dropped_empty else "; --drop-empty leaves them out",
            _list_first([f"{where} ({split})" for split, where in report.empty]),
        )
    leaks = [g for g in report.cross_split() if any(s == "test" for s, _ in g)]
    if leaks and not allow_duplicates:
        raise DatasetError(
            f"{len(leaks)} clip(s) of the test split also appear in another split, which leaks the test: "
            f"{_list_first([_group_text(g) for g in leaks])}. Remove them, or pass --allow-duplicates to keep them"
        )
    if report.duplicates:
        logger.warning(
            "%d group(s) of duplicate clips (the same file listed twice, or identical frames), %d of them across "
            "splits: %s",
            len(report.duplicates),
            len(report.cross_split()),
            _list_first([_group_text(g) for g in report.duplicates]),
        )


class _OriginalPlan:
    """The original project's formats: karsl184 keypoints, KArSL sign numbers and glosses."""

    @property
    def layout(self) -> KeypointLayout:
        return builtin_layout("karsl184")

    @property
    def classes(self) -> list[ClassInfo]:
        return _classes(self.signs)

    def extractor(self) -> ExtractorRecord | None:
        """The original project's files do not record it; they were made by its recipe."""
        return SEED_RECIPE


class _NpzPlan(_OriginalPlan):
    def __init__(self, root: Path, signs: Sequence[int] | None, signers: Sequence[str] | None, splits: Sequence[str]):
        self.root, self.splits = root, list(splits)
        folders = {
            m.groups(): p
            for p in root.iterdir()
            if p.is_dir() and (m := re.fullmatch(r"(.+)-([^-]+)", p.name)) and m[2] in self.splits
        }
        if not folders:
            raise DatasetError(
                f"{root}: no '{{signer}}-{{split}}' folders for splits {', '.join(self.splits)} "
                "(expected e.g. 01-train/0001.npz)"
            )
        # Sorted, whatever order --signers came in: both sources write sign-major, then signer.
        self.signers = sorted(signers) if signers else sorted({s for s, _ in folders})
        found = set()
        for (signer, split), folder in folders.items():
            for f in folder.glob("*.npz"):
                if not re.fullmatch(r"\d{4}", f.stem):
                    raise DatasetError(
                        f"{f}: unexpected file name; sign files are named {{sign:04}}.npz, e.g. 0007.npz"
                    )
                found.add((int(f.stem), signer, split))
        self.signs = sorted(signs) if signs else sorted({sign for sign, _, _ in found})
        if not self.signs:
            raise DatasetError(f"{root}: no '{{sign:04}}.npz' files found")
        self.missing = [
            f"{signer}-{split}/{sign:04d}.npz"
            for split in self.splits
            for signer in self.signers
            for sign in self.signs
            if (sign, signer, split) not in found
        ]

    unit = "files"

    def total(self, split_name: str) -> int:
        return sum(
            (self.root / f"{g}-{split_name}" / f"{s:04d}.npz").exists() for s in self.signs for g in self.signers
        )

    def clips(self, split_name: str, report: PrepareReport, advance: Callable[[int], None]) -> Iterator[SourceClip]:
        for sign in self.signs:
            for signer in self.signers:
                path = self.root / f"{signer}-{split_name}" / f"{sign:04d}.npz"
                if not path.exists():
                    continue  # listed in report.missing
                report.files += 1
                advance(1)
                try:
                    npz = np.load(path, allow_pickle=False)  # what the file holds decides, not its name
                    if not isinstance(npz, np.lib.npyio.NpzFile):
                        raise DatasetError(f"{path}: a single .npy array, not an .npz archive of clips")
                    with npz:
                        keys = [k for k in npz.files if k != NPZ_FRAME_SIZE_KEY]
                        sizes = (
                            check_frame_sizes(npz[NPZ_FRAME_SIZE_KEY], f"{path} [{NPZ_FRAME_SIZE_KEY}]", len(keys))
                            if NPZ_FRAME_SIZE_KEY in npz.files
                            else np.zeros((len(keys), 2), dtype=np.float32)
                        )
                        # File order = recording order, as the original project concatenated them.
                        for key, size in zip(keys, sizes):
                            where = f"{path} [{key}]"
                            clip = npz[key]
                            if (
                                isinstance(clip, np.ndarray)
                                and clip.dtype.kind in "fiu"
                                and clip.ndim == 3
                                and clip.shape[2] == 3
                            ):
                                clip = with_detected_visibility(clip)  # the seed's files before 2026-01-23
                                report.derived_visibility += 1
                            clip = check_clip(clip, where)
                            check_not_adjusted(clip, where, self.layout)
                            yield clip, sign, signer, _size_or_none(size), where, None
                except NUMPY_LOAD_ERRORS as e:
                    raise DatasetError(f"{path}: not a readable numeric .npz file ({e})") from None


class _OriginalMmapPlan(_OriginalPlan):
    def __init__(self, root: Path, signs: Sequence[int] | None, signers: Sequence[str] | None, splits: Sequence[str]):
        self.root, self.splits, self.missing = root, list(splits), []
        # split -> [(sign, signer, length, offset, position in the file)], sign-major, then signer, then file order
        self.index: dict[str, list[tuple[int, str, int, int, int]]] = {}
        self.sizes: dict[str, np.ndarray | None] = {}  # split -> (clips, 2) in file order, or None
        for split_name in self.splits:
            self.index[split_name] = self._read_index(split_name)
            self.sizes[split_name] = self._read_sizes(split_name, len(self.index[split_name]))
        all_signs = sorted({c[0] for idx in self.index.values() for c in idx})
        all_signers = sorted({c[1] for idx in self.index.values() for c in idx})
        self.signs = sorted(signs) if signs else all_signs
        self.signers = sorted(signers) if signers else all_signers
        missing_signs = sorted(set(self.signs) - set(all_signs))
        if missing_signs:
            raise DatasetError(f"{root}: --signs {format_ranges(missing_signs)} are not in the memory map")
        unknown = sorted(set(self.signers) - set(all_signers))
        if unknown:
            raise DatasetError(
                f"{root}: --signers {', '.join(unknown)} are not in the memory map (it has {', '.join(all_signers)})"
            )

    def _file(self, name: str) -> Path:
        path = self.root / name
        if not path.exists():
            raise DatasetError(
                f"{path}: missing (a seed-mmap memory map needs {{split}}_X.mmap, _X_shape.npy, _y.npz and _X_map_samples_lens.npy)"
            )
        return path

    unit = "clips"

    def total(self, split_name: str) -> int:
        return sum(1 for c in self.index[split_name] if c[0] in self.signs and c[1] in self.signers)

    def _read_sizes(self, split_name: str, num_clips: int) -> np.ndarray | None:
        """The optional `{split}_frame_sizes.npy` sidecar (clips, 2), in the file's clip order."""
        path = self.root / f"{split_name}_frame_sizes.npy"
        if not path.exists():
            return None
        try:
            sizes = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DatasetError(f"{path}: not a readable .npy array ({e})") from None
        return check_frame_sizes(sizes, str(path), num_clips)

    def _read_index(self, split_name: str) -> list[tuple[int, str, int, int, int]]:
        shape_path, lens_path = (
            self._file(f"{split_name}_X_shape.npy"),
            self._file(f"{split_name}_X_map_samples_lens.npy"),
        )
        frames_path, y_path = self._file(f"{split_name}_X.mmap"), self._file(f"{split_name}_y.npz")
        try:
            shape = tuple(int(v) for v in np.load(shape_path, allow_pickle=False))
            lens = np.load(lens_path, allow_pickle=True).item()  # the opt-in pickle: the original project's format
            with np.load(y_path, allow_pickle=False) as y_file:
                labels = y_file["arr_0"]
        # AttributeError, TypeError: an .npz where an .npy belongs, or the other way round.
        except (*NUMPY_LOAD_ERRORS, KeyError, AttributeError, TypeError) as e:
            raise DatasetError(f"{self.root}: cannot read the {split_name} memory map's index files ({e})") from None
        if len(shape) != 3 or shape[1:] != (NUM_POINTS, NUM_CHANNELS):
            raise DatasetError(f"{shape_path}: shape {shape}, expected (frames, {NUM_POINTS}, {NUM_CHANNELS})")
        if frames_path.stat().st_size != shape[0] * _FRAME_BYTES:
            raise DatasetError(
                f"{frames_path}: {frames_path.stat().st_size} bytes, but {shape_path.name} says "
                f"{shape[0]} float32 frames ({shape[0] * _FRAME_BYTES} bytes)"
            )
        try:
            # The dict was filled as the clips were concatenated: its order is the file's order.
            in_file_order = [
                (int(sign), f"{int(signer):02d}", int(n))
                for sign, by_signer in lens.items()
                for signer, ns in by_signer.items()
                for n in ns
            ]
            labels = np.asarray(labels).reshape(-1)
        except (AttributeError, TypeError, ValueError):
            raise DatasetError(
                f"{lens_path}: expected a dict {{sign: {{signer: [clip lengths]}}}} of integers"
            ) from None
        if any(n < 1 for _, _, n in in_file_order):
            raise DatasetError(f"{lens_path}: a clip length is below 1")
        total = sum(n for _, _, n in in_file_order)
        if total != shape[0]:
            raise DatasetError(
                f"{lens_path}: clip lengths add up to {total} frames, but {frames_path.name} holds {shape[0]}"
            )
        if len(labels) != len(in_file_order):
            raise DatasetError(f"{y_path}: {len(labels)} labels for {len(in_file_order)} clips in {lens_path.name}")
        bad = [i for i, (sign, _, _) in enumerate(in_file_order) if labels[i] != sign - 1]
        if bad:
            i = bad[0]
            raise DatasetError(
                f"{y_path}: clip {i} is labelled {labels[i]}, but {lens_path.name} puts it "
                f"under sign {in_file_order[i][0]} (label {in_file_order[i][0] - 1})"
            )
        offsets = np.concatenate([[0], np.cumsum([n for _, _, n in in_file_order])[:-1]])
        # Written sign-major, then signer (sorted), like the npz source; the sort is stable.
        index = [
            (sign, signer, n, int(off), i) for i, ((sign, signer, n), off) in enumerate(zip(in_file_order, offsets))
        ]
        return sorted(index, key=lambda c: (c[0], c[1]))

    def clips(self, split_name: str, report: PrepareReport, advance: Callable[[int], None]) -> Iterator[SourceClip]:
        path = self.root / f"{split_name}_X.mmap"
        report.files += 1
        keep_signs, keep_signers = set(self.signs), set(self.signers)
        sizes = self.sizes[split_name]
        with open(path, "rb") as f:
            for sign, signer, n, offset, position in self.index[split_name]:
                if sign in keep_signs and signer in keep_signers:
                    f.seek(offset * _FRAME_BYTES)
                    clip = np.fromfile(f, dtype=np.float32, count=n * NUM_POINTS * NUM_CHANNELS)
                    clip = clip.reshape(n, NUM_POINTS, NUM_CHANNELS)  # (frames * 184 * 4,) -> (frames, 184, 4)
                    advance(1)
                    where = f"{path} clip {position}, frames {offset}-{offset + n} (sign {sign}, signer {signer})"
                    check_not_adjusted(check_clip(clip, where), where, self.layout)
                    yield (
                        clip,
                        sign,
                        signer,
                        None if sizes is None else _size_or_none(sizes[position]),
                        where,
                        None,
                    )
