"""prepare --from clips (a manifest of arrays, any layout, pixel coordinates) and --from gislr
(Kaggle's parquet files): values survive point for point; bad input is one line, nothing written."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.data.layout import builtin_layout
from accel_signs.data.store import open_store
from helpers import assert_one_line_error

runner = CliRunner()


def _prepare(*args: str):
    return runner.invoke(app, ["prepare", *args])


def _clips(tmp_path, layout="pose33", points=33, channels=3, n=6, pixels=False):
    """n clips of random keypoints with undetected points (NaN and zeros) and a manifest."""
    rng = np.random.default_rng(0)
    rows, arrays = ["path,sign,signer,split,gloss,width,height"], []
    for i in range(n):
        clip = rng.random((10 + i, points, channels)).astype(np.float32)
        clip[0, :5] = np.nan  # undetected as NaN
        clip[1, 5:9] = 0  # undetected as zeros
        if pixels:
            clip[..., 0] *= 640
            clip[..., 1] *= 480
            if channels > 2:
                clip[..., 2] *= 640
        np.save(tmp_path / f"c{i}.npy", clip)
        arrays.append(clip)
        sign = ["hello", "thanks", "water"][i % 3]
        rows.append(f"c{i}.npy,{sign},{i % 2 + 1},{'test' if i == 5 else 'train'},,640,480")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "m.csv", arrays


@pytest.mark.parametrize("pixels", [False, True])
def test_clips_manifest_in_pose33(tmp_path, pixels):
    manifest, arrays = _clips(tmp_path, pixels=pixels)
    out = tmp_path / "store"
    result = _prepare(
        str(manifest), str(out), "--from", "clips", "--layout", "pose33", *(["--coords", "pixels"] if pixels else [])
    )
    assert result.exit_code == 0, result.stderr
    store = open_store(out)
    assert store.layout.name == "pose33" and store.signers == ("01", "02")
    assert [(c.sign, c.en) for c in store.classes] == [(1, "hello"), (2, "thanks"), (3, "water")]  # sorted labels
    train = store.split("train")
    assert sorted(store.splits) == ["test", "train"] and len(train) == 5
    assert train.frame_sizes.tolist() == [[640, 480]] * 5
    # sign-major: clip 0 (hello, signer 01) first; values scaled to 0..1 when they were pixels
    got, want = train.clip(0), arrays[0]
    scale = np.array([640, 480, 640]) if pixels else 1
    detected = ~np.isnan(want).any(-1) & (want != 0).any(-1)
    np.testing.assert_allclose(got[..., :3][detected], (want / scale)[detected], rtol=1e-6, atol=1e-6)
    assert (got[~detected] == 0).all() and (got[..., 3][detected] == 1).all()


def test_clips_numeric_signs_keep_their_numbers_and_glosses(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((4, 184, 4), dtype=np.float32))
    (tmp_path / "m.csv").write_text("path,sign,signer,gloss\na.npy,7,01,seven\na.npy,3,01,\n")
    result = _prepare(str(tmp_path / "m.csv"), str(tmp_path / "s"), "--from", "clips")
    assert result.exit_code == 0, result.stderr
    store = open_store(tmp_path / "s")
    assert [(c.sign, c.en) for c in store.classes] == [(3, "sign 3"), (7, "seven")] and store.layout.name == "karsl184"


@pytest.mark.parametrize(
    "case,needle",
    [
        ("missing_file", "clip file 'gone.npy' does not exist"),
        ("unknown_layout", "unknown layout 'pose34'"),
        ("wrong_shape", "shape (10, 34, 3), expected (frames, 33, 2-4)"),
        ("missing_column", "missing column(s) signer"),
        ("pixels_without_size", "--coords pixels needs the frame's width and height"),
    ],
)
def test_bad_manifest_is_one_line_and_writes_nothing(tmp_path, case, needle):
    manifest, _ = _clips(tmp_path)
    args = ["--layout", "pose33"]
    text = manifest.read_text()
    if case == "missing_file":
        manifest.write_text(text.replace("c3.npy", "gone.npy"))
    elif case == "unknown_layout":
        args = ["--layout", "pose34"]
    elif case == "wrong_shape":
        np.save(tmp_path / "c4.npy", np.ones((10, 34, 3), dtype=np.float32))
    elif case == "missing_column":
        manifest.write_text(text.replace("signer,", "who,", 1))
    else:
        manifest.write_text(text.replace(",640,480", ",,"))
        args += ["--coords", "pixels"]
    result = _prepare(str(manifest), str(tmp_path / "store"), "--from", "clips", *args)
    assert result.exit_code == 1, result.output
    assert_one_line_error(result.stderr, needle)
    assert not (tmp_path / "store").exists()
    assert not any(p.name.startswith(".store") for p in tmp_path.iterdir())  # no temporary folder left either


def _gislr(root, sequences=4):
    """A small GISLR-shaped data set: train.csv, the class map, one parquet per sequence."""
    pa = pytest.importorskip("pyarrow", reason="the gislr extra is not installed (pip install 'accel-signs[gislr]')")
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    rows, values = ["path,participant_id,sequence_id,sign"], {}
    types = [("face", 468), ("left_hand", 21), ("pose", 33), ("right_hand", 21)]
    (root / "train_landmark_files" / "16069").mkdir(parents=True)
    for s in range(sequences):
        frames = np.arange(20 + s, 20 + s + 5 + s)  # GISLR frame numbers need not start at 0
        cols = {"frame": [], "row_id": [], "type": [], "landmark_index": [], "x": [], "y": [], "z": []}
        xyz = rng.random((len(frames), 543, 3)).astype(np.float64)
        xyz[:, 468:489] = np.nan if s % 2 else xyz[:, 468:489]  # the left hand unseen in odd sequences
        xyz[1, 522:543] = np.nan  # the right hand lost in one frame
        for t, f in enumerate(frames):
            k = 0
            for name, count in types:
                for i in range(count):
                    cols["frame"].append(int(f))
                    cols["row_id"].append(f"{f}-{name}-{i}")
                    cols["type"].append(name)
                    cols["landmark_index"].append(i)
                    for c, v in zip("xyz", xyz[t, k]):
                        cols[c].append(float(v))
                    k += 1
        path = f"train_landmark_files/16069/{1000 + s}.parquet"
        pq.write_table(pa.table(cols), root / path)
        rows.append(f"{path},{16069 + s % 2},{1000 + s},{['TV', 'apple'][s % 2]}")
        values[s] = xyz
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    (root / "sign_to_prediction_index_map.json").write_text(json.dumps({"apple": 1, "TV": 0}))
    return values


def test_gislr_parquet_matches_point_for_point(tmp_path):
    values = _gislr(tmp_path / "gislr")
    result = _prepare(str(tmp_path / "gislr"), str(tmp_path / "store"), "--from", "gislr")
    assert result.exit_code == 0, result.stderr
    store = open_store(tmp_path / "store")
    assert store.layout.name == "holistic543" and [c.en for c in store.classes] == ["TV", "apple"]  # Kaggle's order
    assert store.signers == ("16069", "16070")
    split = store.split("train")
    assert len(split) == 4
    # sign-major: TV (sequences 0, 2), then apple (1, 3)
    for clip_id, s in enumerate((0, 2, 1, 3)):
        got, want = split.clip(clip_id), values[s]
        assert got.shape == (len(want), 543, 4)
        seen = ~np.isnan(want).any(-1)
        np.testing.assert_array_equal(got[..., :3][seen], want[seen].astype(np.float32))
        assert (got[~seen] == 0).all() and (got[..., 3][seen] == 1).all()


def test_gislr_into_karsl184_takes_its_points(tmp_path):
    values = _gislr(tmp_path / "gislr", sequences=2)
    result = _prepare(str(tmp_path / "gislr"), str(tmp_path / "store"), "--from", "gislr", "--layout", "karsl184")
    assert result.exit_code == 0, result.stderr
    clip = open_store(tmp_path / "store").split("train").clip(0)
    lay = builtin_layout("karsl184")
    # left_shoulder is pose 11 = GISLR point 489 + 11; the iris rings are not in GISLR's 468 face points
    np.testing.assert_array_equal(clip[:, lay.names.index("left_shoulder"), :3], values[0][:, 500].astype(np.float32))
    assert (clip[:, lay.names.index("face_469")] == 0).all()


def test_gislr_bad_folder_is_one_line(tmp_path):
    _gislr(tmp_path / "gislr", sequences=2)
    (tmp_path / "gislr" / "train_landmark_files" / "16069" / "1001.parquet").write_bytes(b"not parquet")
    result = _prepare(str(tmp_path / "gislr"), str(tmp_path / "store"), "--from", "gislr")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "1001.parquet: not a readable GISLR parquet file")
    assert not (tmp_path / "store").exists()
