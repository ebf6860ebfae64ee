import math

import numpy as np
import pytest
import torch

from accel_signs.config import AugmentConfig
from accel_signs.data.augment import Augmenter
from accel_signs.data.layout import keypoint_layout
from accel_signs.data.sampling import affine, gather_frames, mirror, tsn_positions

LAYOUT = keypoint_layout()
MIRROR = torch.tensor(LAYOUT.mirror)
RH, LH = ((p[0], p[-1] + 1) for p in (LAYOUT.parts["right_hand"], LAYOUT.parts["left_hand"]))


def _batch(b=4, t=50, seed=0, missing=0.3):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((b, t, 184, 4), generator=g)
    gone = torch.rand((b, t, 184), generator=g) < missing
    return x.masked_fill(gone[..., None], 0.0)


def test_mirror_twice_is_identity():
    x = _batch()
    torch.testing.assert_close(mirror(mirror(x, MIRROR), MIRROR), x, atol=1e-6, rtol=0)


def test_mirror_moves_right_hand_to_left():
    x = _batch(missing=0.0)
    m = mirror(x, MIRROR)
    right, left = x[:, :, RH[0] : RH[1]], m[:, :, LH[0] : LH[1]]
    torch.testing.assert_close(left[..., 0], 1 - right[..., 0])  # x is mirrored, not negated
    torch.testing.assert_close(left[..., 1:], right[..., 1:])
    # Pose: the left shoulder takes the right shoulder's place.
    names = LAYOUT.names
    ls, rs = names.index("left_shoulder"), names.index("right_shoulder")
    torch.testing.assert_close(m[:, :, ls, 1], x[:, :, rs, 1])
    # Every face point moves to its partner, self-mirrored points stay.
    for i in LAYOUT.parts["face"]:
        torch.testing.assert_close(m[:, :, i, 1:], x[:, :, LAYOUT.mirror[i], 1:])


@pytest.mark.parametrize("fn", ["mirror", "affine", "augmenter"])
def test_missing_points_stay_zero(fn):
    x = _batch(missing=0.4)
    if fn == "mirror":
        y = mirror(x, MIRROR)
        x = x[:, :, MIRROR]  # compare with the point that moved into each place
    elif fn == "affine":
        b = len(x)
        y = affine(x, torch.full((b,), 0.3), torch.full((b,), 1.1), torch.full((b, 2), 0.05))
    else:
        torch.manual_seed(0)
        y, _ = Augmenter(AugmentConfig(mirror_p=0.0, affine_p=1.0), LAYOUT, "raw")(x, (x != 0).any(-1))
    missing = (x == 0).all(-1)
    assert missing.any()
    assert (y[missing] == 0).all()
    assert (y[~missing] != 0).any(-1).all()


def test_affine_rotates_about_the_centre():
    x = _batch(b=1, missing=0.0)
    y = affine(x, torch.tensor([math.pi / 2]), torch.tensor([1.0]), torch.zeros(1, 2))
    centre = x[..., :2].mean(dim=(1, 2))
    torch.testing.assert_close(y[..., :2].mean(dim=(1, 2)), centre, atol=1e-5, rtol=0)
    # A quarter turn keeps distances to the centre.
    torch.testing.assert_close(
        (y[..., :2] - centre).norm(dim=-1), (x[..., :2] - centre).norm(dim=-1), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(y[..., 2:], x[..., 2:])
    shifted = affine(x, torch.zeros(1), torch.ones(1), torch.tensor([[0.1, -0.05]]))
    torch.testing.assert_close(
        shifted[..., :2] - x[..., :2], torch.tensor([0.1, -0.05]).expand_as(x[..., :2]), atol=1e-6, rtol=0
    )


def test_augmenter_is_identity_when_disabled():
    x = _batch()
    y, _ = Augmenter(AugmentConfig(mirror_p=0.0, affine_p=0.0), LAYOUT, "raw")(x, (x != 0).any(-1))
    assert torch.equal(x, y)


def test_centre_sampling_is_deterministic():
    lengths = torch.tensor([100, 50, 13, 1, 237])
    a, b = tsn_positions(lengths, 50, random=False), tsn_positions(lengths, 50, random=False)
    assert torch.equal(a, b)
    torch.testing.assert_close(a[0], torch.arange(50) * 2.0 + 0.5)  # centres of 2-frame bins
    torch.testing.assert_close(a[1], torch.arange(50.0))
    assert (a[3] == 0).all()  # a 1-frame clip repeats its frame
    assert (a >= 0).all() and (a <= (lengths - 1)[:, None]).all()


def test_random_sampling_stays_in_bins():
    lengths = torch.tensor([100] * 200)
    pos = tsn_positions(lengths, 50, random=True)
    bins = torch.arange(50) * 2.0
    assert ((pos >= bins - 0.5) & (pos <= bins + 1.5)).all()
    assert pos.std(dim=0).min() > 0.3  # it is random


def test_gather_interpolates_present_points_and_keeps_missing_zero():
    frames = np.zeros((4, 184, 4), np.float32)
    frames[0, :, :] = 1.0
    frames[1, :, :] = 3.0
    frames[1, 10] = 0.0  # point 10 undetected in frame 1
    out = gather_frames(frames, torch.tensor([0]), torch.tensor([2]), torch.tensor([[0.25, 0.75]]))
    assert out.shape == (1, 2, 184, 4)
    torch.testing.assert_close(out[0, 0, 0], torch.full((4,), 1.5))
    torch.testing.assert_close(out[0, 1, 0], torch.full((4,), 2.5))
    assert (out[0, 0, 10] == 1.0).all()  # nearer frame 0 had it
    assert (out[0, 1, 10] == 0.0).all()  # nearer frame 1 did not: no half-scaled ghost


def test_gather_on_tensor_matches_memmap(tiny_store):
    from accel_signs.data.store import open_store

    split = open_store(tiny_store).split("train")
    lengths, offsets = torch.from_numpy(split.lengths[:5].copy()), torch.from_numpy(split.offsets[:5].copy())
    pos = tsn_positions(lengths, 50, random=True)
    a = gather_frames(split.frames, offsets, lengths, pos)
    b = gather_frames(torch.from_numpy(np.array(split.frames)), offsets, lengths, pos)
    assert torch.equal(a, b) and a.shape == (5, 50, 184, 4)
