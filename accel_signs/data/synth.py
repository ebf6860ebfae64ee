"""A KArSL-shaped, learnable synthetic data set, written in the store format.

No real KArSL data can be downloaded here, so this stands in for it: each class is a
hand trajectory and hand shape (some signs two-handed), each signer has a body position,
size, speed and style of their own and sometimes signs with the other hand, each clip
has its own length and timing, noise, and frames where a hand or the face was not
detected (all zeros). Like real recordings, signers are filmed with different set-ups:
landscape, portrait or square frames (x and y are fractions of the width and height, as
MediaPipe writes them; the store records each clip's frame size), nearer or farther, and
for one signer in three the resting hand is detected in almost every frame. Deterministic
for a seed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from accel_signs.core.errors import ConfigError
from accel_signs.data.layout import BUILTIN, DEFAULT, NUM_CHANNELS, builtin_layout, karsl_glosses
from accel_signs.data.store import ClassInfo, StoreWriter

logger = logging.getLogger(__name__)

# Recording set-ups (frame width, height in pixels), one per signer in turn.
_SETUPS = ((1280, 720), (720, 1280), (960, 960))

# Finger chains of a MediaPipe hand: landmark ids from the knuckle out (the thumb from its CMC).
_FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
_FINGER_BASE_ANGLE = np.radians([-55.0, -20.0, -5.0, 10.0, 25.0])  # from "up", spread across the palm
_FINGER_BASE_DIST = np.array([0.35, 0.9, 0.95, 0.9, 0.8])
_SEGMENTS = np.array([[0.45, 0.35, 0.3], [0.45, 0.28, 0.22], [0.5, 0.3, 0.24], [0.45, 0.28, 0.22], [0.35, 0.22, 0.18]])


@dataclass(frozen=True)
class SynthSpec:
    """How big a synthetic set to write."""

    classes: int = 20
    signers: int = 3
    reps: int = 12
    """Clips per (sign, signer) in the train split; the test split gets a quarter (at least 1)."""
    seed: int = 0
    layout: str = DEFAULT
    """A built-in keypoint layout: the clips are MediaPipe Holistic-shaped and are written in it."""
    first_sign: int = 1
    """The KArSL sign number of the first class: its glosses name the classes (e.g. 160: eat, drink, sleep...)."""

    def __post_init__(self) -> None:
        if self.layout not in BUILTIN:
            raise ConfigError(f"--layout must be a built-in layout ({', '.join(BUILTIN)}), got {self.layout!r}")
        if not 1 <= self.classes <= 502:
            raise ConfigError(f"--classes must be between 1 and 502 (the KArSL signs), got {self.classes}")
        if not 1 <= self.first_sign <= 503 - self.classes:
            raise ConfigError(
                f"--first-sign must be between 1 and {503 - self.classes} for {self.classes} classes "
                f"(KArSL has 502 signs), got {self.first_sign}"
            )
        if not 1 <= self.signers <= 99:
            raise ConfigError(f"--signers must be between 1 and 99, got {self.signers}")
        if self.reps < 1:
            raise ConfigError(f"--reps must be >= 1, got {self.reps}")

    @property
    def test_reps(self) -> int:
        return max(1, self.reps // 4)

    def cache_name(self) -> str:
        suffix = "" if self.layout == DEFAULT else f"-{self.layout}"
        suffix += "" if self.first_sign == 1 else f"-from{self.first_sign}"
        return f"synthetic-v3-c{self.classes}-s{self.signers}-r{self.reps}-seed{self.seed}{suffix}"


# The data set `train` uses when no --data is given: trains to >= 90% val accuracy in a few
# minutes on a 2-core laptop CPU.
EMBEDDED = SynthSpec()


def _hand(curls: np.ndarray, angle: np.ndarray, size: float) -> np.ndarray:
    """21 hand landmarks (T, 21, 2) relative to the wrist, for a right hand in image axes.

    curls: (T, 5) bend of each finger in [0, 1]; angle: (T,) rotation of the hand in radians.
    """
    t = len(angle)
    pts = np.zeros((t, 21, 2))
    for f, chain in enumerate(_FINGERS):
        base = _FINGER_BASE_ANGLE[f]
        pos = np.stack([np.sin(base), -np.cos(base)]) * _FINGER_BASE_DIST[f]  # (2,)
        pos = np.broadcast_to(pos, (t, 2)).copy()
        direction = np.full(t, base)
        pts[:, chain[0]] = pos
        for j, seg in enumerate(_SEGMENTS[f]):
            direction = direction + curls[:, f] * (0.9 if f else 0.5) * (1.0 + 0.3 * j) * (-1 if f == 0 else 1)
            pos = pos + seg * np.stack([np.sin(direction), -np.cos(direction)], axis=-1)
            if j + 1 < len(chain):
                pts[:, chain[j + 1]] = pos
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    rotated = np.stack([c * pts[..., 0] - s * pts[..., 1], s * pts[..., 0] + c * pts[..., 1]], axis=-1)
    return rotated * size


def _curve(rng: np.random.Generator, scale: float) -> np.ndarray:
    """Fourier coefficients (3 harmonics x [sin, cos] x [x, y]) of a smooth 2-D path."""
    return rng.normal(0, scale, (3, 2, 2)) / np.arange(1, 4)[:, None, None]


def _eval_curve(coef: np.ndarray, t: np.ndarray) -> np.ndarray:
    k = np.arange(1, 4)[:, None] * 2 * np.pi * t[None, :]  # (3, T)
    return (
        np.einsum("kt,kd->td", np.sin(k), coef[:, 0])
        + np.einsum("kt,kd->td", np.cos(k), coef[:, 1])
        - coef[:, 1].sum(0)
    )


# MediaPipe's iris rings (refine_face_landmarks): the left centre and ring, then the right ones.
_IRIS_MIRROR = {468: 473, 469: 476, 470: 475, 471: 474, 472: 477}
_IRIS_MIRROR.update({v: k for k, v in _IRIS_MIRROR.items()})
_FACE_POINTS = 478


class _Generator:
    """Clips as MediaPipe Holistic would give them (pose 33, face mesh 478, two hands), written
    in any layout whose points name their MediaPipe source."""

    def __init__(self, spec: SynthSpec):
        self.spec = spec
        self.layout = builtin_layout(spec.layout)
        holistic = builtin_layout("holistic543")
        face_mirror = {
            holistic.sources[i][1]: holistic.sources[j][1]
            for i, j in enumerate(holistic.mirror)
            if holistic.sources[i][0] == "face"
        }
        self.face_mirror = np.array([face_mirror.get(i, _IRIS_MIRROR.get(i, i)) for i in range(_FACE_POINTS)])
        self.face = self._face_template(np.random.default_rng(12345))
        self.class_params = [self._class_params(np.random.default_rng([spec.seed, 1, c])) for c in range(spec.classes)]
        self.signer_params = [
            self._signer_params(np.random.default_rng([spec.seed, 2, s]), s) for s in range(spec.signers)
        ]

    def _face_template(self, rng: np.random.Generator) -> np.ndarray:
        """Face mesh points (478, 2) around (0, 0), symmetric under the mesh's mirror map."""
        out = np.zeros((_FACE_POINTS, 2))
        for i in range(_FACE_POINTS):
            j = self.face_mirror[i]
            if j < i:
                out[i] = out[j] * [-1, 1]
                continue
            r, a = np.sqrt(rng.random()), rng.uniform(0, np.pi)
            x, y = 0.06 * r * np.cos(a) if j != i else 0.0, 0.08 * (r * np.sin(a) * 2 - 1)
            out[i] = (abs(x) if j != i else 0.0, y)
        return out

    @staticmethod
    def _class_params(rng: np.random.Generator) -> dict:
        two_handed = rng.random() < 0.4
        return {
            "start": np.array([rng.uniform(-0.16, 0.02), rng.uniform(-0.28, 0.12)]),
            "path": _curve(rng, 0.1),
            "curls": 0.1 + 0.8 * (rng.random((2, 5)) < 0.5),  # hand shape at the start and end of the sign
            "angle": rng.uniform(-0.8, 0.8, 2),
            "two_handed": two_handed,
            "symmetric": two_handed and rng.random() < 0.5,
            "other_start": np.array([rng.uniform(0.0, 0.16), rng.uniform(-0.2, 0.12)]),
            "other_path": _curve(rng, 0.05),
            "other_curls": rng.random((2, 5)),
        }

    @staticmethod
    def _signer_params(rng: np.random.Generator, index: int) -> dict:
        return {
            "centre": np.array([0.5 + rng.uniform(-0.05, 0.05), 0.55 + rng.uniform(-0.04, 0.04)]),
            # Camera distance; portrait framing shows the signer smaller, so the arms stay in the picture.
            "scale": rng.uniform(0.75, 1.2)
            * min(1.0, _SETUPS[index % len(_SETUPS)][0] / _SETUPS[index % len(_SETUPS)][1] * 1.1),
            "frame_size": _SETUPS[index % len(_SETUPS)],
            "idle_seen_p": 0.97 if index % 3 == 1 else 0.3,  # how often the detector finds a resting hand
            "frames": rng.uniform(55, 95),  # mean clip length: the signer's speed
            "style": rng.normal(0, 0.012, (3, 2, 2)),
            "left_handed_p": 0.3 if index % 3 == 2 else 0.02,  # some signers switch hands
            "noise": rng.uniform(0.002, 0.005),
        }

    def frame_size(self, signer: int) -> tuple[int, int]:
        """(width, height) of the signer's video."""
        return self.signer_params[signer]["frame_size"]

    def clip(self, label: int, signer: int, rng: np.random.Generator, left_handed: bool | None = None) -> np.ndarray:
        """One clip (T, points, 4) float32 in the spec's layout; `left_handed` forces the signing
        hand (None: the signer's habit)."""
        # The helpers draw from `rng` in a fixed order: the same seed gives the same clip.
        cp, sp = self.class_params[label], self.signer_params[signer]
        length = int(round(sp["frames"] * rng.uniform(0.75, 1.3)))
        if rng.random() < 0.04:  # real recordings include very short clips
            length = int(rng.integers(10, 20))
        u = np.linspace(0, 1, length)
        t = np.clip(u + rng.uniform(-0.12, 0.12) * np.sin(np.pi * u), 0, 1)  # timing jitter
        scale, centre = sp["scale"], sp["centre"] + rng.normal(0, 0.01, 2)
        hands = _hands(cp, sp, t, centre, rng)
        pose, head = _pose(centre, scale, hands, rng)
        sources = {
            "pose": pose,
            "face": head[:, None] + self.face * scale,
            "right_hand": hands[1],
            "left_hand": hands[3],
        }
        out = _as_mediapipe(sources, sp["frame_size"], sp["noise"], rng)
        # Undetected parts are all zeros: hands entering/leaving view, dropouts, an unseen resting hand.
        present_dom = rng.random(length) > 0.03
        present_dom[: rng.integers(0, 4)] = False
        present_dom[length - rng.integers(0, 4) :] = False
        present_other = rng.random(length) < (0.97 if cp["two_handed"] else sp["idle_seen_p"])
        out["right_hand"][~present_dom] = 0
        out["left_hand"][~present_other] = 0
        out["face"][rng.random(length) < 0.01] = 0
        clip = self.layout.assemble(out)
        switch = rng.random() < sp["left_handed_p"]
        if switch if left_handed is None else left_handed:  # this video is signed with the other hand
            clip = clip[:, list(self.layout.mirror)]
            clip[..., 0] = np.where((clip != 0).any(-1), 1.0 - clip[..., 0], 0.0)
        return clip


_Hands = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # dominant wrist, its hand, other wrist, its hand


def _hands(cp: dict, sp: dict, t: np.ndarray, centre: np.ndarray, rng: np.random.Generator) -> _Hands:
    """Both hands' paths and shapes over the clip's timeline `t`."""
    scale, length = sp["scale"], len(t)
    dom = centre + scale * (cp["start"] + _eval_curve(cp["path"] + sp["style"], t))
    curls = np.outer(1 - t, cp["curls"][0]) + np.outer(t, cp["curls"][1])
    angle = cp["angle"][0] * (1 - t) + cp["angle"][1] * t
    dom_hand = dom[:, None] + _hand(curls, angle, 0.085 * scale)
    if cp["two_handed"]:
        if cp["symmetric"]:
            other = np.stack([2 * centre[0] - dom[:, 0], dom[:, 1]], axis=-1)
            other_hand = other[:, None] + _hand(curls, angle, 0.085 * scale) * [-1, 1]
        else:
            other = centre + scale * (cp["other_start"] + _eval_curve(cp["other_path"], t))
            oc = np.outer(1 - t, cp["other_curls"][0]) + np.outer(t, cp["other_curls"][1])
            other_hand = other[:, None] + _hand(oc, -angle, 0.085 * scale) * [-1, 1]
    else:  # the other hand rests low, mostly out of view
        other = centre + scale * np.array([0.15, 0.42]) + rng.normal(0, 0.01, (length, 2))
        other_hand = other[:, None] + _hand(np.full((length, 5), 0.3), np.zeros(length), 0.085 * scale) * [-1, 1]
    return dom, dom_hand, other, other_hand


# Pose landmarks 0-10 (nose, eyes, ears, mouth) around the head's centre, in units of the signer's scale.
_FACE_MARKS = {
    0: (0, 0.0),
    1: (0.015, -0.02),
    2: (0.025, -0.02),
    3: (0.035, -0.02),
    4: (-0.015, -0.02),
    5: (-0.025, -0.02),
    6: (-0.035, -0.02),
    7: (0.06, -0.01),
    8: (-0.06, -0.01),
    9: (0.02, 0.04),
    10: (-0.02, 0.04),
}


def _pose(centre: np.ndarray, scale: float, hands: _Hands, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's 33 pose landmarks (T, 33, 2) around the hands, and the head's path (T, 2)."""
    dom, dom_hand, other, other_hand = hands
    pose = np.zeros((len(dom), 33, 2))
    sh, shoulders_y = 0.12 * scale, centre[1] + 0.05 * scale
    head = centre + [0, -0.2 * scale] + rng.normal(0, 0.004, (len(dom), 2)).cumsum(0) * 0.3
    # Pose: the signer's right side is on the image's left (x smaller).
    for i, off in _FACE_MARKS.items():
        pose[:, i] = head + np.array(off) * scale
    pose[:, 11], pose[:, 12] = (centre[0] + sh, shoulders_y), (centre[0] - sh, shoulders_y)
    pose[:, 15], pose[:, 16] = other, dom
    pose[:, 13] = (pose[:, 11] + other) / 2 + [0.05 * scale, 0.08 * scale]
    pose[:, 14] = (pose[:, 12] + dom) / 2 + [-0.05 * scale, 0.08 * scale]
    for (left, right), finger in (((17, 18), 17), ((19, 20), 5), ((21, 22), 4)):  # pinky, index, thumb
        pose[:, left], pose[:, right] = other_hand[:, finger], dom_hand[:, finger]
    pose[:, 23], pose[:, 24] = (
        (centre[0] + 0.08 * scale, centre[1] + 0.45 * scale),
        (centre[0] - 0.08 * scale, centre[1] + 0.45 * scale),
    )
    for k, i in enumerate(range(25, 33)):  # knees, ankles, heels, feet: below the picture
        pose[:, i] = pose[:, 23 + i % 2] + [0, 0.3 * scale * (1 + k // 2)]
    return pose, head


def _as_mediapipe(
    sources: dict[str, np.ndarray], frame_size: tuple[int, int], noise: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """(T, n, 2) drawings -> (T, n, 4) landmarks as MediaPipe gives them, with detector noise."""
    # Drawn in units of the frame's height; MediaPipe gives x (and z) as a fraction of the width.
    width, height = frame_size
    out = {}
    for name, xy in sources.items():
        length, n = xy.shape[:2]
        xy = xy + rng.normal(0, noise, xy.shape)
        xy[..., 0] = 0.5 + (xy[..., 0] - 0.5) * height / width
        points = np.zeros((length, n, NUM_CHANNELS), dtype=np.float32)
        points[..., :2] = xy
        points[..., 2] = rng.normal(0, 0.03, (length, n)) * height / width
        points[..., 3] = 1.0
        out[name] = points
    length = len(out["pose"])
    out["pose"][..., 3] = rng.uniform(0.85, 1.0, (length, 33))
    out["pose"][:, 25:, 3] = rng.uniform(0.0, 0.1, (length, 8))  # legs out of the picture: low visibility
    return out


def write_synthetic(path: str | os.PathLike[str], spec: SynthSpec = EMBEDDED) -> Path:
    """Write a synthetic store (train and test splits) to `path`, which must not exist."""
    gen = _Generator(spec)
    en, ar = karsl_glosses()
    first = spec.first_sign - 1
    classes = [ClassInfo(first + c + 1, en[first + c], ar[first + c]) for c in range(spec.classes)]
    signers = [f"{s + 1:02d}" for s in range(spec.signers)]
    source = {"synthetic": {"classes": spec.classes, "signers": spec.signers, "reps": spec.reps, "seed": spec.seed}}
    source["synthetic"]["layout"] = spec.layout
    if spec.first_sign != 1:
        source["synthetic"]["first_sign"] = spec.first_sign
    with StoreWriter(path, classes, signers, "float32", source=source, layout=gen.layout) as writer:
        # Sign-major, then signer, like the original project's memory maps (--from seed-mmap).
        for split, reps, tag in (("train", spec.reps, 3), ("test", spec.test_reps, 4)):
            writer.begin_split(split)
            for label in range(spec.classes):
                for signer in range(spec.signers):
                    rng = np.random.default_rng([spec.seed, tag, label, signer])
                    for _ in range(reps):
                        writer.add_clip(gen.clip(label, signer, rng), label, signer, gen.frame_size(signer))
    logger.info(
        "wrote synthetic store %s (%d classes, %d signers, %d train + %d test clips per sign and signer)",
        path,
        spec.classes,
        spec.signers,
        spec.reps,
        spec.test_reps,
    )
    return Path(path)


def ensure_synthetic(cache_dir: Path, spec: SynthSpec = EMBEDDED) -> Path:
    """The cached synthetic store for `spec`, generated on first use (atomically, so two
    processes racing or a killed generation never leave a half store)."""
    path = Path(cache_dir) / spec.cache_name()
    if not (path / "meta.json").exists():
        logger.info("generating the embedded synthetic data set into %s (once)", path)
        try:
            write_synthetic(path, spec)
        except Exception:
            if not (path / "meta.json").exists():  # another process did not win the race either
                raise
    return path
