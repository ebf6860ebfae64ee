"""The model's input features (features.py): invariances, handedness, undetected points, and
the augmentation that acts between canonicalisation and the features."""

import math

import numpy as np
import pytest
import torch

from accel_signs.config import AugmentConfig, InputConfig
from accel_signs.data.augment import Augmenter
from accel_signs.data.layout import keypoint_layout
from accel_signs.data.synth import SynthSpec, _Generator
from accel_signs.model.features import KeypointFeatures, masked_median

LAYOUT = keypoint_layout()
# karsl184's parts are contiguous: (first, last + 1)
RH, LH = ((p[0], p[-1] + 1) for p in (LAYOUT.parts["right_hand"], LAYOUT.parts["left_hand"]))


def _clips(n=6, seed=0, frames=50, left_handed=None) -> torch.Tensor:
    """(n, frames, 184, 4) synthetic clips, resampled to `frames`, with undetected points."""
    gen, rng = _Generator(SynthSpec(classes=4, signers=3, reps=1, seed=seed)), np.random.default_rng(seed)
    out = []
    for i in range(n):
        clip = gen.clip(i % 4, i % 3, rng, left_handed=left_handed)
        out.append(clip[np.linspace(0, len(clip) - 1, frames).round().astype(int)])
    return torch.from_numpy(np.stack(out))


def _transform(x: torch.Tensor, fn) -> torch.Tensor:
    """Apply fn to x/y of detected points only (undetected stay all zero)."""
    present = (x != 0).any(-1, keepdim=True)
    return torch.where(present, torch.cat([fn(x[..., :2]), x[..., 2:]], dim=-1), x)


def _mirror_image(x: torch.Tensor) -> torch.Tensor:
    """The clip a mirrored camera would record: partners swap places, x -> 1 - x."""
    m = x[:, :, list(LAYOUT.mirror)]
    present = (m != 0).any(-1, keepdim=True)
    return torch.where(present, torch.cat([1 - m[..., :1], m[..., 1:]], dim=-1), m)


FEATURES = KeypointFeatures(LAYOUT, InputConfig())


def test_masked_median():
    v = torch.tensor([[5.0, 1.0, 3.0, 100.0], [2.0, 2.0, 9.0, 4.0], [1.0, 1.0, 1.0, 1.0], [4.0, 1.0, 7.0, 2.0]])
    m = torch.tensor([[True, True, True, False], [True, False, True, True], [False] * 4, [True] * 4])
    torch.testing.assert_close(masked_median(v, m), torch.tensor([3.0, 4.0, 0.0, 3.0]))
    torch.testing.assert_close(masked_median(-v, m), -masked_median(v, m))


@pytest.mark.parametrize("shift,scale", [((0.13, -0.07), 1.0), ((0.0, 0.0), 0.6), ((-0.2, 0.1), 1.3)])
def test_body_frame_features_ignore_translation_and_uniform_scale(shift, scale):
    x = _clips()
    moved = _transform(x, lambda xy: (xy - 0.5) * scale + 0.5 + torch.tensor(shift))
    moved[..., 2] *= scale  # MediaPipe's depth uses the x scale: a closer signer is larger in all three
    torch.testing.assert_close(FEATURES(moved), FEATURES(x), atol=2e-4, rtol=1e-4)


def test_aspect_is_undone():
    """The same scene filmed 16:9 (x squeezed into the width) gives the features of the square view."""
    x = _clips()
    aspect = 16 / 9
    squeezed = _transform(x, lambda xy: torch.stack([(xy[..., 0] - 0.5) / aspect + 0.5, xy[..., 1]], -1))
    squeezed[..., 2] = x[..., 2] / aspect  # MediaPipe's z uses x's scale
    torch.testing.assert_close(FEATURES(squeezed, torch.full((len(x),), aspect)), FEATURES(x), atol=2e-4, rtol=1e-4)
    assert not torch.allclose(FEATURES(squeezed), FEATURES(x), atol=1e-2)


def _hand_local(features: torch.Tensor, part: str) -> torch.Tensor:
    """The local-shape slice (21 x 3) of one hand's features."""
    sizes = FEATURES.part_sizes()
    g = LAYOUT.part_names.index(part)
    start = sum(sizes[:g])
    return features[..., start : start + 63]


def test_hand_local_features_ignore_where_the_hand_is():
    x = _clips()
    moved = x.clone()
    lo, hi = RH
    t = torch.linspace(0, 1, x.shape[1])[None, :, None, None]
    offset = torch.cat([0.1 * torch.sin(6 * t), 0.05 * t, torch.zeros_like(t)], dim=-1)  # moves every frame
    hand = moved[:, :, lo:hi, :3]
    present = (moved[:, :, lo:hi] != 0).any(-1, keepdim=True)
    moved[:, :, lo:hi, :3] = torch.where(present, hand + offset, hand)
    torch.testing.assert_close(
        _hand_local(FEATURES(moved), "right_hand"), _hand_local(FEATURES(x), "right_hand"), atol=1e-4, rtol=1e-4
    )
    # ...while the wrist's body-frame position does change
    assert not torch.allclose(FEATURES(moved), FEATURES(x), atol=1e-3)


def test_mirroring_then_canonicalising_equals_canonicalising():
    x = torch.cat([_clips(left_handed=False), _clips(seed=1, left_handed=True)])
    torch.testing.assert_close(FEATURES(_mirror_image(x)), FEATURES(x), atol=2e-4, rtol=1e-4)


def test_the_dominant_hand_ends_up_in_the_right_slot():
    right, left = _clips(left_handed=False), _clips(left_handed=True)
    for clips, flipped in ((right, False), (left, True)):
        coords, present = KeypointFeatures(LAYOUT, InputConfig(handedness=False)).canonical(clips)
        s = FEATURES.dominance(coords, present)
        assert ((s[:, 1] > s[:, 0]) == flipped).all()
    # canonical left-handed clips sign with the right-hand slot: their right slot is the active one
    coords, present = FEATURES.canonical(left)
    s = FEATURES.dominance(coords, present)
    assert (s[:, 0] >= s[:, 1]).all()


def test_handedness_off_keeps_the_recorded_side():
    x = _clips(left_handed=True)
    off = KeypointFeatures(LAYOUT, InputConfig(handedness=False))
    assert not torch.allclose(off(_mirror_image(x)), off(x), atol=1e-2)


def test_undetected_points_stay_out_of_the_features():
    x = _clips()
    x[:, 10:20, LH[0] : LH[1]] = 0  # the left hand undetected for 10 frames
    x[:, :, 6:142] = 0  # no face at all
    coords, present = FEATURES.canonical(x)
    assert (coords[~present] == 0).all()
    f = FEATURES.encode(coords, present)
    sizes = FEATURES.part_sizes()
    face = f[..., sizes[0] : sizes[0] + sizes[1]]
    assert (face == 0).all()  # positions, motion and presence of an absent part are all 0
    left = f[..., sum(sizes[:3]) :]
    missing = ~present[:, :, LH[0]]
    assert (left[missing] == 0).all()
    # motion is only taken between frames where both are seen: the frames next to the gap are 0 too
    assert (left[:, 20][:, 63 + 2 : 2 * (63 + 2)] == 0).all()
    # and changing what an undetected point would have been changes nothing (it is 0 by definition)
    torch.testing.assert_close(FEATURES(x), FEATURES(x.clone()))


def test_shoulders_missing_fall_back_without_fake_coordinates():
    x = _clips()
    x[:, :, :2] = 0  # no shoulders anywhere
    f = FEATURES(x)
    assert torch.isfinite(f).all()
    nothing = torch.zeros(1, 50, 184, 4)
    assert (FEATURES(nothing) == 0).all()


def test_raw_input_is_the_keypoints_themselves():
    x = _clips()
    raw = KeypointFeatures(LAYOUT, InputConfig(kind="raw", handedness=False))
    assert torch.equal(raw(x), x.flatten(2))
    assert raw.part_sizes() == [24, 544, 84, 84]


def _augment(cfg: AugmentConfig, seed=0):
    torch.manual_seed(seed)
    x = _clips()
    coords, present = FEATURES.canonical(x)
    return coords, present, *Augmenter(cfg, LAYOUT)(coords, present)


def test_augmentation_off_is_identity():
    coords, present, c2, p2 = _augment(AugmentConfig.off())
    assert torch.equal(c2, coords) and torch.equal(p2, present)


def test_hand_augmentation_rotates_about_the_wrist():
    coords, present, c2, p2 = _augment(AugmentConfig.off(hand_p=1.0, hand_scale_min=1.0, hand_scale_max=1.0))
    lo, hi = RH
    w = LAYOUT.hands[0].wrist
    seen = present[:, :, lo:hi].all(-1)
    before = (coords[:, :, lo:hi, :2] - coords[:, :, w, None, :2]).norm(dim=-1)[seen]
    after = (c2[:, :, lo:hi, :2] - c2[:, :, w, None, :2]).norm(dim=-1)[seen]
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)  # a rotation keeps the shape's size
    torch.testing.assert_close(c2[:, :, w], coords[:, :, w])  # about the wrist
    assert not torch.allclose(c2[:, :, lo:hi], coords[:, :, lo:hi])


def test_dropped_points_are_zero_and_the_dominant_hand_is_never_dropped_whole():
    coords, present, c2, p2 = _augment(
        AugmentConfig.off(part_drop_p=1.0, time_mask_p=1.0, time_mask_max=0.5, noise=0.05)
    )
    assert (c2[~p2] == 0).all()
    assert not (p2 & ~present).any()  # augmentation never invents points
    lo, hi = RH
    assert p2[:, :, lo].any(1)[present[:, :, lo].any(1)].all()
    assert not p2[:, :, LH[0]].any()  # the other hand, the face and the pose dropped
    assert (p2.sum(-1) == 0).any(1).all()  # a masked span in every clip


def test_speed_and_crop_stay_inside_the_clip():
    from accel_signs.data.sampling import tsn_positions

    lengths = torch.tensor([5, 50, 200, 13])
    torch.manual_seed(0)
    for _ in range(20):
        pos = tsn_positions(lengths, 50, True, crop_min=0.8, speed=(0.5, 1.5))
        assert (pos >= 0).all() and (pos <= (lengths - 1)[:, None]).all()
        assert (pos[:, 1:] >= pos[:, :-1]).all()  # time runs forward
        covered = (pos[:, -1] - pos[:, 0]) / (lengths - 1)
        assert (covered[1:3] > 0.6).all()


def test_rotation_matrix():
    from accel_signs.data.augment import _rotation

    r = _rotation(torch.tensor([math.pi / 2]), torch.tensor([2.0]), torch.tensor([1.0]))
    torch.testing.assert_close(r[0] @ torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]), atol=1e-6, rtol=0)
