"""Train on your own keypoint clips through the Python API.

Your clips: one .npy file per video, (frames, 184, 4) float in the layout of
accel_signs/assets/keypoints_184.json, named `<sign>_<signer>_<anything>.npy`, e.g.
`0007_02_rep13.npy`, in one folder per split (`train/`, `test/`).

    python examples/train_own_data.py --clips my_clips/ --out my_project/

Without --clips it first writes such a folder from the synthetic generator, so it runs
anywhere. Under `accelerate launch` the `train()` call uses every process it was given.
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from accel_signs import DataConfig, ModelConfig, TrainConfig, load_checkpoint, open_store, train
from accel_signs.data.layout import karsl_glosses
from accel_signs.data.store import ClassInfo, StoreWriter
from accel_signs.data.synth import SynthSpec, write_synthetic


def demo_clips(folder: Path) -> None:
    """Write synthetic clips as loose .npy files, standing in for a user's own."""
    store = open_store(write_synthetic(folder / "_synthetic", SynthSpec(classes=6, signers=2, reps=6, seed=1)))
    for name, split in store.splits.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(len(split)):
            sign, signer = store.classes[split.labels[i]].sign, store.signers[split.signers[i]]
            np.save(folder / name / f"{sign:04d}_{signer}_{i:05d}.npy", split.clip(i))


def build_store(clips: Path, out: Path) -> Path:
    """Put the .npy clips into a clip store (the format `train` reads)."""
    files = {split: sorted((clips / split).glob("*.npy")) for split in ("train", "test") if (clips / split).is_dir()}
    keys = {split: [(int(f.name.split("_")[0]), f.name.split("_")[1]) for f in fs] for split, fs in files.items()}
    signs = sorted({sign for ks in keys.values() for sign, _ in ks})
    signers = sorted({signer for ks in keys.values() for _, signer in ks})
    en, ar = karsl_glosses()  # KArSL glosses for KArSL sign numbers; use your own names otherwise
    classes = [
        ClassInfo(s, en[s - 1] if s <= len(en) else f"sign {s}", ar[s - 1] if s <= len(ar) else "") for s in signs
    ]
    with StoreWriter(out, classes, signers, dtype="float32", source={"npy_folder": str(clips)}) as writer:
        for split, fs in files.items():
            writer.begin_split(split)
            counts: dict[int, int] = defaultdict(int)
            for f, (sign, signer) in zip(fs, keys[split]):
                writer.add_clip(np.load(f, allow_pickle=False), signs.index(sign), signers.index(signer))
                counts[sign] += 1
            logging.info("%s: %d clips of %d signs", split, sum(counts.values()), len(counts))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=Path, help="folder with train/ and test/ subfolders of .npy clips")
    ap.add_argument("--out", type=Path, default=Path("own_data_project"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--model-size", default="s_4_2")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    clips = args.clips
    if clips is None:
        clips = args.out / "clips"
        demo_clips(clips)
    store = build_store(clips, args.out / "store")

    cfg = TrainConfig(
        data=DataConfig(path=store, val_fraction=0.2),
        model=ModelConfig(size=args.model_size),
        num_epochs=args.epochs,
        output_dir=args.out / "runs",
    )
    best = train(cfg)

    # Use the trained model: rebuild it from the checkpoint and classify one test clip.
    ckpt = load_checkpoint(best)
    test = open_store(store).split("test")
    import torch

    from accel_signs.data.sampling import gather_frames, tsn_positions

    lengths, offsets = torch.from_numpy(test.lengths[:1].copy()), torch.from_numpy(test.offsets[:1].copy())
    x = gather_frames(test.frames, offsets, lengths, tsn_positions(lengths, ckpt.seq_len, random=False))
    aspect = torch.from_numpy(test.aspects[:1])  # width / height of the clip's video (1: square or unknown)
    with torch.no_grad():
        probs = ckpt.model(x.flatten(2), aspect).softmax(-1)[0]  # (1, T, P, C) -> (1, T, P*C) -> (classes,)
    top = int(probs.argmax())
    print(f"best checkpoint: {best}")
    print(
        f"first test clip: predicted {ckpt.classes[top].en!r} (sign {ckpt.classes[top].sign}) "
        f"with p={float(probs[top]):.2f}"
    )


if __name__ == "__main__":
    main()
