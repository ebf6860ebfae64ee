"""Keypoints in other shapes than the original project's -> a clip store (`prepare --from clips|gislr`).

- `clips`: a manifest CSV with a row per clip: `path` (an .npy array, or an .npz holding one
  array or a `keypoints` array), `sign`, `signer`, `split`, optionally `gloss`, `width`,
  `height`. Arrays are (frames, points, channels) in a named layout, with 2 (x, y), 3 (+ z)
  or 4 (+ visibility) channels. Undetected points are zeros or NaN. With `--coords pixels`,
  x and y (and z, which MediaPipe gives in x's scale) are in pixels of a width x height frame.
- `gislr`: the Kaggle isolated-sign-language data: `train.csv` (path, participant_id,
  sequence_id, sign) and one parquet file per sequence with columns frame, type,
  landmark_index, x, y, z; the 543 MediaPipe Holistic landmarks, NaN where undetected. Needs
  pyarrow (the `gislr` extra).

Both read one clip at a time (bounded memory), validate everything before and while writing,
and never load pickles. Each plan is a prepare.SourcePlan.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from accel_signs.config import normalize_signer
from accel_signs.core.errors import ConfigError, DatasetError
from accel_signs.data.extractor import NPZ_KEY, ExtractorRecord, record_from_npz
from accel_signs.data.layout import NUM_CHANNELS, KeypointLayout, builtin_layout, load_layout
from accel_signs.data.store import NUMPY_LOAD_ERRORS, ClassInfo

if TYPE_CHECKING:
    from accel_signs.data.prepare import SourceClip

logger = logging.getLogger(__name__)
COORDS = ("normalized", "pixels")
# The GISLR parquet's landmark types, in the order of its 543 points.
_GISLR_TYPES = {"face": 468, "left_hand": 21, "pose": 33, "right_hand": 21}


def _read_csv(path: Path, encoding: str, name: str) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a CSV file; one that cannot be read is a DatasetError naming `name`."""
    try:
        with open(path, newline="", encoding=encoding) as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or []), list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{name}: cannot be read as CSV ({e})") from None


def _layout(spec: str | None, default: str) -> KeypointLayout:
    try:
        return load_layout(spec) if spec else builtin_layout(default)
    except ConfigError as e:
        raise DatasetError(str(e)) from None


def _sign_numbers(labels: list[str], glosses: dict[str, str], where: str) -> tuple[dict[str, int], list[ClassInfo]]:
    """Class labels -> 1-based sign numbers and classes. All-integer labels are sign numbers
    (glosses from the `gloss` column); text labels are numbered in sorted order."""
    unique = sorted(set(labels))
    if all(label.isdigit() for label in unique):
        numbers = {label: int(label) for label in unique}
        if min(numbers.values()) < 1:
            raise DatasetError(f"{where}: sign numbers start at 1, got 0")
        by_number = sorted(numbers.items(), key=lambda kv: kv[1])
        return numbers, [ClassInfo(n, glosses.get(label) or f"sign {n}") for label, n in by_number]
    numbers = {label: i + 1 for i, label in enumerate(unique)}
    return numbers, [ClassInfo(numbers[label], glosses.get(label) or label) for label in unique]


def to_store_frames(
    array: np.ndarray, num_points: int, where: str, size: tuple[float, float] | None = None
) -> np.ndarray:
    """(frames, points, 2|3|4) keypoints -> (frames, points, 4) float32 as stores hold them:
    NaN -> undetected (zeros), visibility 1 for detected points when absent, and pixel
    coordinates of a width x height frame divided by its size when `size` is given."""
    if array.dtype.kind not in "fiu":
        raise DatasetError(f"{where}: dtype {array.dtype} is not numeric")
    if array.ndim != 3 or array.shape[1] != num_points or not 2 <= array.shape[2] <= NUM_CHANNELS:
        raise DatasetError(
            f"{where}: shape {array.shape}, expected (frames, {num_points}, 2-{NUM_CHANNELS}) for the "
            f"layout's {num_points} points"
        )
    if len(array) == 0:
        raise DatasetError(f"{where}: the clip has no frames")
    data = array.astype(np.float32)
    if np.isinf(data).any():
        raise DatasetError(f"{where}: holds infinite values")
    missing = np.isnan(data).any(-1) | (data == 0).all(-1)  # (frames, points)
    out = np.zeros((*data.shape[:2], NUM_CHANNELS), dtype=np.float32)
    out[..., : data.shape[2]] = np.nan_to_num(data)
    if data.shape[2] < NUM_CHANNELS:
        out[..., 3] = 1.0
    if size is not None:
        width, height = size
        out[..., 0] /= width
        out[..., 1] /= height
        out[..., 2] /= width
    out[missing] = 0
    return out


def _read_array(path: Path, where: str) -> tuple[np.ndarray, ExtractorRecord | None]:
    """The clip array of an .npy/.npz file, and the extractor record an npz of `extract` carries."""
    try:
        loaded = np.load(path, allow_pickle=False)  # an .npy array or an .npz archive, whatever the name says
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return loaded, None
        with loaded as npz:
            record = record_from_npz(npz, f"{where}: {path}")
            if "keypoints" not in npz.files and len(npz.files) != 1 + (record is not None):
                raise DatasetError(f"{where}: {path} holds {len(npz.files)} arrays; give one, or name it 'keypoints'")
            key = "keypoints" if "keypoints" in npz.files else next(k for k in npz.files if k != NPZ_KEY)
            array = npz[key]
            if not isinstance(array, np.ndarray):  # np.load gives the bytes of a member that is no .npy
                raise DatasetError(f"{where}: {path} holds {key!r}, which is not an .npy array")
            return array, record
    except FileNotFoundError:
        raise DatasetError(f"{where}: {path} does not exist") from None
    except NUMPY_LOAD_ERRORS as e:
        raise DatasetError(f"{where}: {path} is not a readable numeric .npy/.npz file ({e})") from None


class _ManifestRow(NamedTuple):
    where: str  # "manifest M, line N", for errors
    path: Path
    sign: str  # the label as written (a sign number or a gloss)
    signer: str
    split_name: str
    size: tuple[float, float] | None
    gloss: str


def _read_manifest(manifest: Path, coords: str) -> list[dict[str, str]]:
    """The manifest's rows, with the columns `coords` needs."""
    if not manifest.is_file():
        raise DatasetError(
            f"manifest {manifest} does not exist"
            if not manifest.exists()
            else f"--from clips reads a manifest CSV file; {manifest} is a folder"
        )
    header, rows = _read_csv(manifest, "utf-8-sig", f"manifest {manifest}")
    twice = next((c for c in header if header.count(c) > 1), None)
    if twice is not None:  # csv.DictReader would keep the last one's values without a word
        raise DatasetError(f"manifest {manifest}: column {twice!r} twice in the header")
    columns = set(header)
    need = {"path", "sign", "signer"} | ({"width", "height"} if coords == "pixels" else set())
    if not need <= columns:
        raise DatasetError(
            f"manifest {manifest}: missing column(s) {', '.join(sorted(need - columns))} (it has "
            f"{', '.join(sorted(columns)) or 'none'}; needs path, sign, signer, and optionally split, "
            "gloss, width, height)"
        )
    if not rows:
        raise DatasetError(f"manifest {manifest}: no rows")
    return rows


def _manifest_rows(manifest: Path, rows: list[dict[str, str]], coords: str) -> list[_ManifestRow]:
    """Each row checked: its clip file exists, sign and signer are given, its frame size is valid."""
    entries = []
    for line, row in enumerate(rows, start=2):
        where = f"manifest {manifest}, line {line}"
        _check_fields(row, where)
        path = (manifest.parent / row["path"].strip()) if row["path"].strip() else None
        if path is None or not path.is_file():
            raise DatasetError(
                f"{where}: clip file {row['path']!r} does not exist" + (f" (looked for {path})" if path else "")
            )
        sign, signer = row["sign"].strip(), row["signer"].strip()
        signer = normalize_signer(signer) if signer else signer  # "1" -> "01", as --signers reads it
        if not sign or not signer:
            raise DatasetError(f"{where}: empty sign or signer")
        size = _frame_size(row, where, required=coords == "pixels")
        split_name, gloss = (row.get("split") or "train").strip(), (row.get("gloss") or "").strip()
        entries.append(_ManifestRow(where, path, sign, signer, split_name, size, gloss))
    return entries


def _check_fields(row: dict[str | None, Any], where: str) -> None:
    """A row of as many fields as the header: csv.DictReader fills a short row with None and
    puts a long row's extra fields under the key None."""
    header = [k for k in row if k is not None]
    fields = sum(row[k] is not None for k in header) + len(row.get(None) or [])
    if fields != len(header):
        raise DatasetError(
            f"{where}: {fields} fields, but the header has {len(header)} (a comma in a value needs quotes)"
        )


class ClipsPlan:
    """A manifest CSV of .npy/.npz clips."""

    unit = "clips"

    def __init__(
        self,
        manifest: Path,
        layout: str | None,
        coords: str,
        signs: Sequence[int] | None,
        signers: Sequence[str] | None,
        splits: Sequence[str] | None,
    ):
        if coords not in COORDS:
            raise DatasetError(f"--coords must be one of {', '.join(COORDS)}, got {coords!r}")
        rows = _read_manifest(manifest, coords)
        self.layout, self.coords, self.missing = _layout(layout, "karsl184"), coords, []
        self.records: list[tuple[ExtractorRecord | None, str]] = []  # per clip read: its npz's record, its file
        entries = _manifest_rows(manifest, rows, coords)
        glosses: dict[str, str] = {}
        for e in entries:
            if e.gloss:
                glosses.setdefault(e.sign, e.gloss)
        numbers, classes = _sign_numbers([e.sign for e in entries], glosses, f"manifest {manifest}")
        if signs is not None:
            unknown = sorted(set(signs) - {c.sign for c in classes})
            if unknown:
                raise DatasetError(f"manifest {manifest}: --signs {unknown} are not in it")
            classes = [c for c in classes if c.sign in set(signs)]
        self.classes = classes
        keep = {c.sign for c in classes}
        all_signers = sorted({e.signer for e in entries})
        if signers is not None:
            unknown = sorted(set(signers) - set(all_signers))
            if unknown:
                raise DatasetError(f"manifest {manifest}: --signers {', '.join(unknown)} are not in it")
        self.signers = sorted(signers) if signers else all_signers
        all_splits = list(dict.fromkeys(e.split_name for e in entries))
        self.splits = [s for s in (splits or all_splits) if s in all_splits]
        if not self.splits:
            raise DatasetError(
                f"manifest {manifest}: no clips for split(s) {', '.join(splits or [])} (it has {', '.join(all_splits)})"
            )
        # Sign-major, then signer, then manifest order, as the other sources write.
        self.entries = sorted(
            (e for e in entries if numbers[e.sign] in keep and e.signer in self.signers),
            key=lambda e: (numbers[e.sign], e.signer),
        )
        self.numbers = numbers

    def total(self, split_name: str) -> int:
        return sum(e.split_name == split_name for e in self.entries)

    def extractor(self) -> ExtractorRecord | None:
        """The extractor every clip read records (npz files of `extract`), or None where some record
        none. Clips of two extractors in one store is an error: a model would learn both."""
        recorded = [(r, f) for r, f in self.records if r is not None]
        for record, file in recorded[1:]:
            if record.differences(recorded[0][0]):
                raise DatasetError(
                    f"{recorded[0][1]} was extracted with {recorded[0][0].describe()}, but {file} with "
                    f"{record.describe()}; one store holds keypoints of one extractor: extract them again alike, "
                    "or prepare them into separate stores"
                )
        if recorded and len(recorded) < len(self.records):
            logger.warning(
                "%d of %d clips record no extractor; the store records none",
                len(self.records) - len(recorded),
                len(self.records),
            )
        return recorded[0][0] if recorded and len(recorded) == len(self.records) else None

    def clips(self, split_name: str, report: Any, advance: Callable[[int], None]) -> Iterator[SourceClip]:
        for where, path, sign, signer, s, size, _ in self.entries:
            if s != split_name:
                continue
            report.files += 1
            advance(1)
            array, record = _read_array(path, where)
            self.records.append((record, str(path)))
            clip = to_store_frames(
                array,
                self.layout.num_points,
                f"{where} ({path.name})",
                size if self.coords == "pixels" else None,
            )
            yield clip, self.numbers[sign], signer, size, f"{path} ({where.rpartition(', ')[2]})", str(path.resolve())


def _frame_size(row: dict[str, str], where: str, required: bool) -> tuple[float, float] | None:
    w, h = (row.get("width") or "").strip(), (row.get("height") or "").strip()
    if not w and not h:
        if required:
            raise DatasetError(f"{where}: --coords pixels needs the frame's width and height")
        return None
    try:
        size = float(w), float(h)
    except ValueError:
        raise DatasetError(f"{where}: width/height {w!r}/{h!r} are not numbers") from None
    if not (size[0] > 0 and size[1] > 0 and all(math.isfinite(v) for v in size)):
        raise DatasetError(f"{where}: width and height must be > 0, got {w}x{h}")
    return size


class GislrPlan:
    """Kaggle's isolated-sign parquet files (train.csv + one parquet per sequence)."""

    unit = "sequences"

    def extractor(self) -> ExtractorRecord | None:
        """Kaggle's files do not say which MediaPipe made them."""
        return None

    def __init__(self, root: Path, layout: str | None, signs: Sequence[int] | None, signers: Sequence[str] | None):
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError as e:
            raise DatasetError(
                f"--from gislr reads parquet files and needs pyarrow: pip install 'accel-signs[gislr]' ({e})"
            ) from None
        self.layout, self.missing = _layout(layout, "holistic543"), []
        index = root / "train.csv"
        if not index.is_file():
            raise DatasetError(f"{root}: no train.csv (a GISLR folder holds train.csv and the parquet files it lists)")
        header, rows = _read_csv(index, "utf-8", str(index))
        if not {"path", "participant_id", "sign"} <= set(header):
            raise DatasetError(
                f"{index}: expected columns path, participant_id, sequence_id, sign; got {', '.join(header)}"
            )
        if not rows:
            raise DatasetError(f"{index}: no rows")
        for line, row in enumerate(rows, start=2):
            _check_fields(row, f"{index}, line {line}")
        order = root / "sign_to_prediction_index_map.json"
        labels = sorted({r["sign"] for r in rows})
        if order.exists():  # Kaggle's class order: keep it, so class ids match the competition's
            try:
                mapping = json.loads(order.read_text("utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
                raise DatasetError(f"{order}: unreadable ({e})") from None
            if not isinstance(mapping, dict) or not all(type(v) is int for v in mapping.values()):
                raise DatasetError(f"{order}: expected an object {{sign: class index}} with integer indices")
            missing = sorted(set(labels) - set(mapping))
            if missing:
                raise DatasetError(f"{order}: sign(s) {', '.join(missing[:5])} of train.csv are not in it")
            labels = sorted(mapping, key=mapping.get)
        numbers = {label: i + 1 for i, label in enumerate(labels)}
        self.classes = [ClassInfo(numbers[label], label) for label in labels]
        if signs is not None:
            unknown = sorted(set(signs) - set(numbers.values()))
            if unknown:
                raise DatasetError(f"{root}: --signs {unknown} are not among its {len(labels)} signs")
            self.classes = [c for c in self.classes if c.sign in set(signs)]
        keep = {c.sign for c in self.classes}
        all_signers = sorted({normalize_signer(r["participant_id"]) for r in rows})
        if signers is not None and set(signers) - set(all_signers):
            raise DatasetError(
                f"{root}: --signers {', '.join(sorted(set(signers) - set(all_signers)))} are not participants"
            )
        self.signers = sorted(signers) if signers else all_signers
        self.entries = []
        for line, r in enumerate(rows, start=2):
            signer = normalize_signer(r["participant_id"])
            if numbers[r["sign"]] not in keep or signer not in self.signers:
                continue
            path = root / r["path"]
            if not path.is_file():
                raise DatasetError(f"{index}, line {line}: {path} does not exist")
            self.entries.append((path, numbers[r["sign"]], signer, line))
        self.entries.sort(key=lambda e: (e[1], e[2]))
        self.splits = ["train"]

    def total(self, split_name: str) -> int:
        return len(self.entries)

    def clips(self, split_name: str, report: Any, advance: Callable[[int], None]) -> Iterator[SourceClip]:
        for path, sign, signer, line in self.entries:
            report.files += 1
            advance(1)
            clip = self.layout.assemble(read_gislr(path))
            yield clip, sign, signer, None, f"{path} (train.csv line {line})", str(path.resolve())


def read_gislr(path: Path) -> dict[str, np.ndarray]:
    """One GISLR parquet file -> MediaPipe sources {"face": (T, 468, 4), ...}; NaN -> undetected."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["frame", "type", "landmark_index", "x", "y", "z"])
    except Exception as e:  # noqa: BLE001 - pyarrow raises several error types for bad files
        raise DatasetError(f"{path}: not a readable GISLR parquet file ({type(e).__name__}: {e})") from None
    _check_gislr_columns(table, path)
    frame = table.column("frame").to_numpy()
    kind = np.asarray(table.column("type").to_pylist(), dtype=object)
    landmark = table.column("landmark_index").to_numpy()
    xyz = np.stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in "xyz"], axis=-1)
    if len(frame) == 0:
        raise DatasetError(f"{path}: no rows")
    frames, row = np.unique(frame, return_inverse=True)
    sources = {}
    for name, count in _GISLR_TYPES.items():
        mine = kind == name
        if ((landmark[mine] < 0) | (landmark[mine] >= count)).any():
            raise DatasetError(f"{path}: {name} landmark_index outside 0..{count - 1}")
        points = np.zeros((len(frames), count, NUM_CHANNELS), dtype=np.float32)
        values = xyz[mine]
        seen = ~np.isnan(values).any(-1)
        points[row[mine][seen], landmark[mine][seen], :3] = values[seen]
        points[row[mine][seen], landmark[mine][seen], 3] = 1.0
        sources[name] = points
    unknown = set(np.unique(kind)) - set(_GISLR_TYPES)
    if unknown:
        raise DatasetError(f"{path}: unknown landmark type(s) {', '.join(sorted(map(str, unknown)))}")
    if not np.isfinite(xyz[~np.isnan(xyz)]).all():
        raise DatasetError(f"{path}: holds infinite values")
    return sources


def _check_gislr_columns(table: Any, path: Path) -> None:
    """Integer frame and landmark_index, text type (none missing), numeric x, y, z (null: undetected)."""
    import pyarrow as pa

    def text(t: Any) -> bool:
        return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)

    def number(t: Any) -> bool:
        return pa.types.is_integer(t) or pa.types.is_floating(t)

    kinds = {"frame": (pa.types.is_integer, "integers"), "landmark_index": (pa.types.is_integer, "integers")}
    kinds |= {"type": (text, "text")} | {c: (number, "numbers") for c in "xyz"}
    for name, (accepts, what) in kinds.items():
        column = table.column(name)
        if not accepts(column.type):
            raise DatasetError(f"{path}: column {name} holds {column.type}, expected {what}")
        if name in ("frame", "landmark_index", "type") and column.null_count:
            raise DatasetError(f"{path}: column {name} has {column.null_count} empty value(s)")
