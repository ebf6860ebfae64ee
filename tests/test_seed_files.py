"""The original project's npz files in all their variants: 3 channels (no visibility) and
"adjusted" (each body part re-centred on its own), through `prepare --from npz` and `info`."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.data.layout import builtin_layout
from accel_signs.data.seed_files import centred_share, with_detected_visibility
from accel_signs.data.store import open_store
from helpers import assert_one_line_error

runner = CliRunner()
LAYOUT = builtin_layout("karsl184")
# Where each part's centre sits in the picture (x, y), and how far its points spread around it.
PLACES = {"pose": ((0.5, 0.62), 0.2), "face": ((0.5, 0.3), 0.08), "right_hand": ((0.35, 0.7), 0.05)}
PLACES["left_hand"] = ((0.65, 0.7), 0.05)


def _clip(rng, frames):
    """A clip in image coordinates: each part around its place, hands undetected in some frames."""
    clip = np.zeros((frames, LAYOUT.num_points, 4), np.float32)
    for part, points in LAYOUT.parts.items():
        (cx, cy), spread = PLACES[part]
        drift = rng.normal(0, 0.03, (frames, 1, 2))
        clip[:, list(points), :2] = (cx, cy) + drift + rng.normal(0, spread, (frames, len(points), 2))
        clip[:, list(points), 2] = rng.normal(0, 0.05, (frames, len(points)))
        clip[:, list(points), 3] = 1
    clip[np.ix_(rng.random(frames) < 0.3, LAYOUT.parts["left_hand"])] = 0
    return clip


def _adjusted(clip):
    """The original project's "adjusted" option: each part's present points minus their centre, per frame."""
    out = clip.copy()
    for points in LAYOUT.parts.values():
        part = out[:, list(points)]
        present = np.any(part != 0, axis=-1)
        count = np.maximum(present.sum(1), 1)
        centre = (part[..., :3] * present[..., None]).sum(1) / count[:, None]
        part[..., :3] = np.where(present[..., None], part[..., :3] - centre[:, None], 0)
        out[:, list(points)] = part
    return out


def _tree(root, transform, signs=(1, 2), signers=("01", "02")):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for signer in signers:
            folder = root / f"{signer}-{split}"
            folder.mkdir(parents=True)
            for sign in signs:
                np.savez(
                    folder / f"{sign:04d}.npz", *[transform(_clip(rng, int(rng.integers(20, 60)))) for _ in range(2)]
                )
    return root


def _prepare(*args):
    return runner.invoke(app, ["prepare", *map(str, args)])


def test_three_channel_tree_prepares_with_visibility_from_detection(tmp_path):
    src = _tree(tmp_path / "npz", lambda c: c[..., :3])
    result = _prepare(src, tmp_path / "s", "--from", "npz")
    assert result.exit_code == 0, result.stderr
    assert "16 clip(s) had 3 channels (x, y, z): visibility derived from detection" in result.stderr
    store = open_store(tmp_path / "s")
    frames = store.split("train").frames
    present = np.any(frames[..., :3] != 0, axis=-1)
    assert present.any() and not present.all()  # the undetected left hands
    assert np.array_equal(frames[..., 3], present.astype(np.float32))
    assert store.meta["source"]["visibility"] == {"derived_from_detection": 16}
    info = runner.invoke(app, ["info", str(tmp_path / "s")]).stdout
    assert "visibility: derived from detection (3-channel x, y, z source files) for 16 clips" in info


def test_with_detected_visibility():
    clip = np.array([[[0.2, 0.3, -0.1], [0, 0, 0], [0, 0.5, 0]]], np.float32)
    assert with_detected_visibility(clip)[0, :, 3].tolist() == [1, 0, 1]


def test_adjusted_tree_is_refused_with_what_to_do(tmp_path):
    src = _tree(tmp_path / "npz", _adjusted)
    out = tmp_path / "out" / "s"
    result = _prepare(src, out, "--from", "npz")
    assert result.exit_code == 1
    assert_one_line_error(
        result.stderr, "01-train/0001.npz [arr_0]", "centred at (0, 0)", "'adjusted'", "Extract these videos again"
    )
    assert not out.parent.exists()  # nothing left behind, not even the folder made for it


def test_one_adjusted_file_among_image_coordinates_is_refused(tmp_path):
    src = _tree(tmp_path / "npz", lambda c: c)
    rng = np.random.default_rng(1)
    np.savez(src / "02-test" / "0002.npz", _clip(rng, 30), _adjusted(_clip(rng, 30))[..., :3])
    result = _prepare(src, tmp_path / "s", "--from", "npz")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "02-test/0002.npz [arr_1]", "re-centred")


def test_centred_share_separates_image_coordinates_from_adjusted():
    rng = np.random.default_rng(2)
    clips = [_clip(rng, 40) for _ in range(20)]
    # A signer at the picture's edge: parts cut off, hands partly outside (negative x).
    edge = _clip(rng, 40)
    edge[..., 0] -= 0.3
    for clip in [*clips, edge]:
        assert centred_share(clip, LAYOUT)[0] == 0
        assert centred_share(_adjusted(clip), LAYOUT)[0] == 1


@pytest.mark.parametrize("given", [None, "seed"])
def test_store_records_its_extractor_and_info_shows_it(tmp_path, given):
    from accel_signs.data.extractor import SEED_RECIPE, ExtractorRecord

    src = _tree(tmp_path / "npz", lambda c: c, signs=(1,), signers=("01",))
    args = [] if given is None else ["--extractor", given]
    assert _prepare(src, tmp_path / "s", "--from", "npz", *args).exit_code == 0
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert ExtractorRecord.from_json(meta["extractor"]) == SEED_RECIPE
    assert open_store(tmp_path / "s").extractor == SEED_RECIPE
    info = runner.invoke(app, ["info", str(tmp_path / "s")]).stdout
    assert f"extractor: {SEED_RECIPE.describe()}" in info


def test_old_store_without_extractor_opens_as_unknown(tmp_path):
    src = _tree(tmp_path / "npz", lambda c: c, signs=(1,), signers=("01",))
    assert _prepare(src, tmp_path / "s", "--from", "npz").exit_code == 0
    meta_path = tmp_path / "s" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["extractor"]
    meta_path.write_text(json.dumps(meta))
    assert open_store(tmp_path / "s").extractor is None
    info = runner.invoke(app, ["info", str(tmp_path / "s")]).stdout
    assert "extractor: unknown" in info


def _extracted(tmp_path, records):
    """npz files as `extract` writes them (keypoints + the extractor record) and their manifest."""
    from accel_signs.data.extractor import npz_entry

    rng = np.random.default_rng(3)
    rows = ["path,sign,signer"]
    for i, record in enumerate(records):
        np.savez(tmp_path / f"c{i}.npz", keypoints=_clip(rng, 20), extractor=npz_entry(record))
        rows.append(f"c{i}.npz,{1 + i % 2},01")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "manifest.csv"


def test_extracted_clips_give_the_store_their_extractor_and_may_not_mix(tmp_path):
    from accel_signs.data.extractor import ExtractorRecord

    tasks = ExtractorRecord("tasks", "1.2.3", "video", "tasks", 2)
    holistic = ExtractorRecord("holistic", "0.10.21", "video", "holistic")
    (tmp_path / "a").mkdir()
    manifest = _extracted(tmp_path / "a", [tasks, tasks])
    assert _prepare(manifest, tmp_path / "s", "--from", "clips").exit_code == 0
    assert open_store(tmp_path / "s").extractor == tasks
    result = _prepare(manifest, tmp_path / "s2", "--from", "clips", "--extractor", "holistic")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "its files record tasks", "not holistic")
    (tmp_path / "b").mkdir()
    result = _prepare(_extracted(tmp_path / "b", [tasks, holistic]), tmp_path / "s3", "--from", "clips")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "c0.npz was extracted with tasks", "c1.npz with holistic", "one extractor")
    assert not (tmp_path / "s2").exists() and not (tmp_path / "s3").exists()
