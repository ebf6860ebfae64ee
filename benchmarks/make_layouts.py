"""Writes the built-in keypoint layouts, accel_signs/assets/layouts/*.json (a maintainer's tool;
the package never runs it).

    python benchmarks/make_layouts.py CANONICAL_FACE_MODEL_OBJ

Needs MediaPipe 0.10.21 (its pose, hand and face-mesh connections become the layouts' bones)
and MediaPipe's `mediapipe/modules/face_geometry/data/canonical_face_model.obj`, whose 468
vertices are the face mesh landmarks in index order: the face is symmetric about x = 0, so
each landmark's mirror partner is the vertex at (-x, y, z) (exact for all 468; 28 lie on the
midline). That map agrees with the karsl184 face mirror map on all of its mesh points.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "accel_signs" / "assets" / "layouts"
HAND = [
    "wrist",
    "thumb_cmc",
    "thumb_mcp",
    "thumb_ip",
    "thumb_tip",
    "index_finger_mcp",
    "index_finger_pip",
    "index_finger_dip",
    "index_finger_tip",
    "middle_finger_mcp",
    "middle_finger_pip",
    "middle_finger_dip",
    "middle_finger_tip",
    "ring_finger_mcp",
    "ring_finger_pip",
    "ring_finger_dip",
    "ring_finger_tip",
    "pinky_mcp",
    "pinky_pip",
    "pinky_dip",
    "pinky_tip",
]
CHANNELS = ["x", "y", "z", "visibility"]


def _mirror_name(name: str) -> str:
    for a, b in (("left", "right"), ("right", "left")):
        if name.startswith(a + "_"):
            return b + name[len(a) :]
        if name.endswith("_" + a):  # mouth_left
            return name[: -len(a)] + b
    return name


def sources(face_mirror: np.ndarray) -> dict[str, list[dict]]:
    """Every landmark MediaPipe Holistic gives, per source model, with names and mirror partners."""
    import mediapipe as mp

    pose = [lm.name.lower() for lm in mp.solutions.pose.PoseLandmark]
    out = {"pose": [{"name": n, "source": "pose", "index": i, "mirror": _mirror_name(n)} for i, n in enumerate(pose)]}
    # Face mesh points 0-467, plus the iris rings of refine_face_landmarks (468-477: left centre, ring; right centre, ring).
    iris_mirror = {468: 473, 469: 476, 470: 475, 471: 474, 472: 477}
    iris_mirror.update({v: k for k, v in iris_mirror.items()})
    out["face"] = [
        {
            "name": f"face_{i}",
            "source": "face",
            "index": i,
            "mirror": f"face_{int(face_mirror[i]) if i < 468 else iris_mirror[i]}",
        }
        for i in range(478)
    ]
    for side in ("left", "right"):
        out[f"{side}_hand"] = [
            {
                "name": f"{side}_hand_{n}",
                "source": f"{side}_hand",
                "index": i,
                "mirror": f"{'right' if side == 'left' else 'left'}_hand_{n}",
            }
            for i, n in enumerate(HAND)
        ]
    return out


def bones() -> dict[str, list[tuple[int, int]]]:
    import mediapipe as mp

    return {
        "pose": sorted(mp.solutions.pose.POSE_CONNECTIONS),
        "hand": sorted(mp.solutions.hands.HAND_CONNECTIONS),
        "face": sorted(mp.solutions.face_mesh.FACEMESH_CONTOURS | mp.solutions.face_mesh.FACEMESH_IRISES),
    }


def layout(
    name: str,
    lid: str,
    description: str,
    points: list[dict],
    parts: list[str],
    roles: dict,
    edges: dict[str, list[tuple[int, int]]],
) -> dict:
    by_source = {(p["source"], p["index"]): p["name"] for p in points}
    bone_list = []
    for source, pairs in (
        ("pose", edges["pose"]),
        ("face", edges["face"]),
        ("left_hand", edges["hand"]),
        ("right_hand", edges["hand"]),
    ):
        for a, b in pairs:
            if (source, a) in by_source and (source, b) in by_source:
                bone_list.append([by_source[(source, a)], by_source[(source, b)]])
    return {
        "format": "accel_signs.layout",
        "version": 1,
        "name": name,
        "id": lid,
        "description": description,
        "channels": CHANNELS,
        "parts": parts,
        "roles": roles,
        "points": points,
        "bones": bone_list,
    }


HANDS_ROLE = {
    "right": {"part": "right_hand", "wrist": "right_hand_wrist", "palm": "right_hand_middle_finger_mcp"},
    "left": {"part": "left_hand", "wrist": "left_hand_wrist", "palm": "left_hand_middle_finger_mcp"},
}
SHOULDERS = ["left_shoulder", "right_shoulder"]


def main() -> None:
    v = np.array([list(map(float, line.split()[1:4])) for line in open(sys.argv[1]) if line.startswith("v ")])
    d = (((v * [-1, 1, 1])[:, None] - v[None]) ** 2).sum(-1)
    face_mirror = d.argmin(1)
    assert v.shape == (468, 3) and d.min(1).max() < 1e-9 and (face_mirror[face_mirror] == np.arange(468)).all()
    src, edges = sources(face_mirror), bones()
    OUT.mkdir(parents=True, exist_ok=True)
    import mediapipe as mp

    # karsl184's face: the FACEMESH_CONTOURS points and the iris rings (not their centres), ascending.
    contour = {i for pair in mp.solutions.face_mesh.FACEMESH_CONTOURS for i in pair}
    karsl_face_idx = sorted(contour | {469, 470, 471, 472, 474, 475, 476, 477})

    def pts(source: str, idx, part: str) -> list[dict]:
        return [{**src[source][i], "part": part} for i in idx]

    karsl = (
        pts("pose", range(11, 17), "pose")
        + pts("face", karsl_face_idx, "face")
        + pts("right_hand", range(21), "right_hand")
        + pts("left_hand", range(21), "left_hand")
    )
    layouts = [
        layout(
            "karsl184",
            "karsl-mediapipe-184-v1",
            "The KArSL-502 keypoints: MediaPipe Holistic pose 11-16 (shoulders, elbows, wrists), the face mesh's "
            "FACEMESH_CONTOURS points plus the iris rings (refine_face_landmarks), in ascending index order, then the "
            "right and the left hand (21 landmarks each). Each point is (x, y, z, visibility): x, y normalized image "
            "coordinates, z MediaPipe's relative depth, visibility the pose score, 1 for detected face and hand "
            "points; an undetected point is all zeros.",
            karsl,
            ["pose", "face", "right_hand", "left_hand"],
            {"shoulders": SHOULDERS, "hands": HANDS_ROLE},
            edges,
        ),
        layout(
            "holistic543",
            "mediapipe-holistic-543-v1",
            "All 543 MediaPipe Holistic landmarks in the order of the Kaggle isolated-sign (GISLR) parquet files: face "
            "mesh 0-467, left hand 0-20, pose 0-32, right hand 0-20.",
            pts("face", range(468), "face")
            + pts("left_hand", range(21), "left_hand")
            + pts("pose", range(33), "pose")
            + pts("right_hand", range(21), "right_hand"),
            ["pose", "face", "right_hand", "left_hand"],
            {"shoulders": SHOULDERS, "hands": HANDS_ROLE},
            edges,
        ),
        layout(
            "pose33-hands42",
            "mediapipe-pose33-hands42-v1",
            "MediaPipe pose (33 landmarks), then the left and the right hand (21 each): the 75-point layout of pose+hands "
            "toolkits such as OpenHands.",
            pts("pose", range(33), "pose")
            + pts("left_hand", range(21), "left_hand")
            + pts("right_hand", range(21), "right_hand"),
            ["pose", "right_hand", "left_hand"],
            {"shoulders": SHOULDERS, "hands": HANDS_ROLE},
            edges,
        ),
        layout(
            "pose33",
            "mediapipe-pose33-v1",
            "MediaPipe pose alone (33 landmarks, in its order). Its wrist, pinky, index and thumb points are each hand's "
            "part: their shape relative to the wrist, in units of the wrist -> index distance, shows the hand's "
            "orientation, which is all a pose model sees of a hand.",
            [
                {
                    **p,
                    "part": (
                        "right_hand"
                        if p["index"] in (16, 18, 20, 22)
                        else "left_hand"
                        if p["index"] in (15, 17, 19, 21)
                        else "pose"
                    ),
                }
                for p in pts("pose", range(33), "pose")
            ],
            ["pose", "right_hand", "left_hand"],
            {
                "shoulders": SHOULDERS,
                "hands": {
                    "right": {"part": "right_hand", "wrist": "right_wrist", "palm": "right_index"},
                    "left": {"part": "left_hand", "wrist": "left_wrist", "palm": "left_index"},
                },
            },
            edges,
        ),
    ]
    for lay in layouts:
        (OUT / f"{lay['name']}.json").write_text(json.dumps(lay, indent=1) + "\n")
        print(f"wrote {OUT / (lay['name'] + '.json')}: {len(lay['points'])} points, {len(lay['bones'])} bones")


if __name__ == "__main__":
    main()
