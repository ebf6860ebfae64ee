import json

import numpy as np

from accel_signs.data.layout import karsl_glosses, keypoint_layout
from accel_signs.data.store import open_store
from accel_signs.data.synth import SynthSpec, write_synthetic


def test_deterministic_for_a_seed(tmp_path):
    spec = SynthSpec(classes=3, signers=2, reps=2, seed=7)
    a, b = write_synthetic(tmp_path / "a", spec), write_synthetic(tmp_path / "b", spec)
    c = write_synthetic(tmp_path / "c", SynthSpec(classes=3, signers=2, reps=2, seed=8))
    for split in ("train", "test"):
        assert (a / split / "frames.npy").read_bytes() == (b / split / "frames.npy").read_bytes()
        assert (a / split / "frames.npy").read_bytes() != (c / split / "frames.npy").read_bytes()


def test_karsl_shaped(tiny_store):
    store = open_store(tiny_store)
    en, ar = karsl_glosses()
    assert [c.en for c in store.classes] == list(en[:6]) and store.classes[0].ar == ar[0]
    train, test = store.split("train"), store.split("test")
    assert len(train) == 6 * 2 * 6 and len(test) == 6 * 2 * 1
    frames = np.asarray(train.frames)
    layout = keypoint_layout()
    for part in ("right_hand", "left_hand", "face"):
        missing = (frames[:, list(layout.parts[part])] == 0).all(axis=(1, 2))
        assert 0 < missing.mean() < 1, part  # some frames without the part, as real recordings have
    present = (frames != 0).any(-1)
    xy = frames[..., :2][present]
    assert 0.0 < xy.mean() < 1.0 and xy.min() > -0.5 and xy.max() < 1.5
    # Sign-major, then signer: labels never go back.
    assert (np.diff(train.labels) >= 0).all()
    meta = json.loads((tiny_store / "meta.json").read_text())
    assert meta["source"]["synthetic"]["classes"] == 6
