"""Keypoint layouts: the built-ins are consistent, a bad layout file is one clear error, and every
built-in layout trains, predicts and exports."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.core.errors import ConfigError
from accel_signs.data.layout import BUILTIN, builtin_layout, load_layout, parse_layout
from helpers import assert_one_line_error

runner = CliRunner()
SIZES = {"karsl184": 184, "holistic543": 543, "pose33-hands42": 75, "pose33": 33}


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_layout_is_consistent(name):
    lay = builtin_layout(name)
    assert lay.num_points == SIZES[name] and lay.name == name
    mirror = np.array(lay.mirror)
    assert (mirror[mirror] == np.arange(lay.num_points)).all()  # an involution
    covered = sorted(i for points in lay.parts.values() for i in points)
    assert covered == list(range(lay.num_points))  # every point in exactly one part
    names = lay.names
    assert (names[lay.shoulders[0]], names[lay.shoulders[1]]) == ("left_shoulder", "right_shoulder")
    right, left = lay.hands
    assert names[right.wrist].startswith("right") and names[left.wrist].startswith("left")
    assert names[right.palm].startswith("right") and names[left.palm].startswith("left")
    assert right.wrist in lay.parts[right.part] and left.palm in lay.parts[left.part]
    for i, j in enumerate(lay.mirror):  # partners are left/right twins; a point is its own only on the midline
        a, b = names[i], names[j]
        if a.startswith("face_"):
            continue  # the face mesh's partners come from its canonical geometry (make_layouts.py)
        assert a.replace("left", "X").replace("right", "X") == b.replace("left", "X").replace("right", "X")
        assert (a == b) == ("left" not in a and "right" not in a)
    assert all(src is not None for src in lay.sources)
    assert all(lay.sources[a][0] == lay.sources[b][0] for a, b in lay.bones)  # bones stay within a MediaPipe model


def test_holistic543_is_in_mediapipe_order():
    lay = builtin_layout("holistic543")
    kinds = [s for s, _ in lay.sources]
    assert kinds == ["face"] * 468 + ["left_hand"] * 21 + ["pose"] * 33 + ["right_hand"] * 21
    assert [i for _, i in lay.sources[468:489]] == list(range(21))
    assert lay.names[489 + 11] == "left_shoulder" and lay.names[lay.hands[0].wrist] == "right_hand_wrist"


def test_karsl184_is_unchanged():
    """The layout stores and checkpoints of before recorded only by id must keep its order."""
    lay = builtin_layout("karsl184")
    assert lay.id == "karsl-mediapipe-184-v1"
    assert [lay.names[i] for i in (0, 5, 6, 142, 163, 183)] == [
        "left_shoulder",
        "right_wrist",
        "face_0",
        "right_hand_wrist",
        "left_hand_wrist",
        "left_hand_pinky_tip",
    ]
    assert {k: (v[0], v[-1]) for k, v in lay.parts.items()} == {
        "pose": (0, 5),
        "face": (6, 141),
        "right_hand": (142, 162),
        "left_hand": (163, 183),
    }


def _good() -> dict:
    return json.loads(json.dumps(builtin_layout("pose33").definition))


@pytest.mark.parametrize(
    "break_it,needle",
    [
        (lambda d: d.pop("format"), "not a layout file"),
        (lambda d: d["points"][3].update(mirror="nose"), "must pair up"),
        (lambda d: d["points"][5].update(part="tail"), "part 'tail', which is not one of"),
        (lambda d: d["points"][6].update(name="nose"), "used twice"),
        (
            lambda d: d["roles"].update(shoulders=["left_shoulder", "elbow_of_nobody"]),
            "unknown point 'elbow_of_nobody'",
        ),
        (lambda d: d["roles"]["hands"]["right"].update(wrist="left_wrist"), "not in part 'right_hand'"),
        (lambda d: d.update(parts=["pose", "right_hand", "left_hand", "face"]), "part(s) face have no points"),
        (lambda d: d.update(channels=["x", "y"]), "channels must be"),
        (lambda d: d["points"][0].update(source="body"), "source must be one of"),
        (lambda d: d.update(bones=[["nose"]]), "a bone must be a pair"),
    ],
)
def test_malformed_layout_is_one_line_error(tmp_path, break_it, needle):
    raw = _good()
    break_it(raw)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=None) as info:
        load_layout(path)
    assert needle in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
    # ...and through the CLI: one error line, exit 1, nothing written
    manifest = tmp_path / "m.csv"
    np.save(tmp_path / "c.npy", np.zeros((3, 33, 3)))
    manifest.write_text("path,sign,signer\nc.npy,1,01\n")
    result = runner.invoke(
        app, ["prepare", str(manifest), str(tmp_path / "store"), "--from", "clips", "--layout", str(path)]
    )
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, needle)
    assert not (tmp_path / "store").exists()


def test_unknown_layout_name_and_not_json(tmp_path):
    with pytest.raises(ConfigError, match="built-in layouts are karsl184, holistic543"):
        load_layout("karsl185")
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_layout(tmp_path / "x.json")


def test_a_custom_layout_file_travels_with_the_store(tmp_path):
    """A store records its whole layout, so the file is not needed later."""
    raw = _good()
    raw.update(name="mine", id="my-pose-v1")
    (tmp_path / "mine.json").write_text(json.dumps(raw))
    np.save(tmp_path / "c.npy", np.random.default_rng(0).random((6, 33, 3)))
    (tmp_path / "m.csv").write_text("path,sign,signer\nc.npy,1,01\nc.npy,2,01\n")
    result = runner.invoke(
        app,
        [
            "prepare",
            str(tmp_path / "m.csv"),
            str(tmp_path / "store"),
            "--from",
            "clips",
            "--layout",
            str(tmp_path / "mine.json"),
        ],
    )
    assert result.exit_code == 0, result.stderr
    (tmp_path / "mine.json").unlink()
    from accel_signs.data.store import open_store

    assert open_store(tmp_path / "store").layout.id == "my-pose-v1"


def test_parse_accepts_index_mirrors():
    raw = _good()
    names = [q["name"] for q in raw["points"]]
    for p in raw["points"]:
        p["mirror"] = names.index(p["mirror"])
    assert parse_layout(raw, "x").mirror == builtin_layout("pose33").mirror
