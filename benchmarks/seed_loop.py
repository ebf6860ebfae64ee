"""The seed project's training loop, rebuilt as a peer for side-by-side speed benchmarks.

What the seed's train.py did each step (every fact it needs is written here): a torch Dataset whose
__getitem__ samples one clip in numpy (TSN: a random point in each of 50 equal bins, linearly
interpolated), flips it with p=0.5 (x negated, hands swapped, face points permuted) and applies
a random rotation (+-15 deg), scale (0.85-1.15) and shift (+-0.1) about the image origin with
p=0.5; a DataLoader (batch 64, 0 workers in train.py, 4 in its DDP script); bf16 autocast with
a GradScaler on a GPU; CrossEntropy; clip_grad_norm_(1.0); Adam (lr 1e-3, weight decay 1e-4);
loss.item() every step. The model is the seed's STTransformer: BatchNorm over the 736 inputs,
one linear projection per part (pose, face, two hands), part embedding, LayerNorm, GELU, a
sinusoidal position encoding, dropout 0.5, blocks of spatial and temporal
nn.MultiheadAttention (post-attention residual on the normed input) and an MLP, mean over
parts, attention pooling over time, a linear classifier.

    import seed_loop
    samples_per_s = seed_loop.samples_per_second(frames, offsets, lengths, labels, device="cuda")

or alone: python benchmarks/seed_loop.py --device cpu --clips 2000 --steps 20
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

PARTS = {"pose": 6, "face": 136, "right_hand": 21, "left_hand": 21}  # the 184-point KArSL layout
POINTS, CHANNELS, SEQ_LEN = sum(PARTS.values()), 4, 50
HEAD_WIDTH = {"t": 16, "s": 32, "m": 64, "l": 128}


class SeedBlock(nn.Module):
    """Spatial attention over the part tokens of each frame, temporal attention over the frames
    of each part, then an MLP; dropout inside attention and MLP, as the seed had it."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.spatial_norm, self.temporal_norm, self.mlp_norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.spatial = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.temporal = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, G, D)
        b, t, g, d = x.shape
        s = self.spatial_norm(x.reshape(b * t, g, d))  # (B, T, G, D) -> (B*T, G, D)
        x = (s + self.spatial(s, s, s, need_weights=False)[0]).view(b, t, g, d)
        m = self.temporal_norm(x.transpose(1, 2).reshape(b * g, t, d))  # (B, G, T, D) -> (B*G, T, D)
        x = (m + self.temporal(m, m, m, need_weights=False)[0]).view(b, g, t, d).transpose(1, 2)
        return x + self.mlp(self.mlp_norm(x))


class SeedSTTransformer(nn.Module):
    """The seed's model: input (B, 50, 736) -> logits (B, classes)."""

    def __init__(self, num_classes: int = 502, size: str = "s_4_2", dropout: float = 0.5):
        super().__init__()
        head, heads, layers = size.split("_")
        dim, heads = HEAD_WIDTH[head] * int(heads), int(heads)
        self.sizes = [n * CHANNELS for n in PARTS.values()]
        self.input_bn = nn.BatchNorm1d(POINTS * CHANNELS)
        self.proj = nn.ModuleList(nn.Linear(n, dim) for n in self.sizes)
        self.part_embed = nn.Parameter(torch.randn(1, 1, len(PARTS), dim) * 0.02)
        self.token_norm = nn.LayerNorm(dim)
        position = torch.arange(SEQ_LEN, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(1e5) / dim))
        table = torch.zeros(SEQ_LEN, dim)
        table[:, 0::2], table[:, 1::2] = torch.sin(position * freq), torch.cos(position * freq)
        self.register_buffer("position", table[None, :, None, :])  # (1, T, 1, D)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(SeedBlock(dim, heads, dropout) for _ in range(int(layers))))
        self.pool = nn.Sequential(nn.Linear(dim, dim // 2), nn.Tanh(), nn.Linear(dim // 2, 1), nn.Softmax(dim=1))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, P*C)
        x = self.input_bn(x.transpose(1, 2)).transpose(1, 2)
        tokens = torch.stack([p(part) for p, part in zip(self.proj, torch.split(x, self.sizes, dim=-1))], dim=2)
        x = nn.functional.gelu(self.token_norm(tokens + self.part_embed))  # (B, T, G, D)
        x = self.blocks(self.dropout(x + self.position)).mean(dim=2)  # (B, T, D)
        return self.head((x * self.pool(x)).sum(dim=1))


class SeedDataset(Dataset):
    """Per-sample numpy sampling and augmentation, in __getitem__."""

    def __init__(self, frames: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, labels: np.ndarray):
        self.frames, self.offsets, self.lengths, self.labels = frames, offsets, lengths, labels
        self.face_order = np.random.default_rng(1).permutation(PARTS["face"])
        self.face = slice(PARTS["pose"], PARTS["pose"] + PARTS["face"])
        hands = PARTS["pose"] + PARTS["face"]
        self.right, self.left = slice(hands, hands + 21), slice(hands + 21, hands + 42)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.int64]:
        rng = np.random.default_rng()
        clip = self.frames[self.offsets[i] : self.offsets[i] + self.lengths[i]]
        edges = np.linspace(0, len(clip), SEQ_LEN + 1)
        width = np.diff(edges)
        pos = np.clip(edges[:-1] + width * (0.1 + 0.8 * rng.random(SEQ_LEN)), 0, len(clip) - 1 - 1e-6)
        lo, hi = np.floor(pos).astype(int), np.ceil(pos).astype(int)
        w = (pos - lo)[:, None, None]
        seq = (1 - w) * clip[lo] + w * clip[hi]  # (T, P, C)
        if rng.random() < 0.5:  # the seed's flip: x negated, face permuted, hands swapped
            seq[..., 0] *= -1
            seq[:, self.face] = seq[:, self.face][:, self.face_order]
            seq[:, self.right], seq[:, self.left] = seq[:, self.left].copy(), seq[:, self.right].copy()
        flat = seq.reshape(-1, CHANNELS)  # (T, P, C) -> (T*P, C)
        if rng.random() < 0.5:  # the seed's affine, about the image origin
            angle = np.radians(rng.uniform(-15, 15))
            c, s = np.cos(angle), np.sin(angle)
            flat[:, :2] = flat[:, :2] @ np.array(((c, s), (-s, c))) * rng.uniform(0.85, 1.15) + rng.uniform(
                -0.1, 0.1, 2
            )
        return flat.reshape(SEQ_LEN, -1).astype(np.float32), np.int64(self.labels[i])  # (T, P*C)


def samples_per_second(
    frames: np.ndarray,
    offsets: np.ndarray,
    lengths: np.ndarray,
    labels: np.ndarray,
    device: str = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    steps: int = 60,
    warmup: int = 5,
    size: str = "s_4_2",
    num_classes: int = 502,
) -> float:
    """Training samples per second of the seed loop, timed after `warmup` steps."""
    dev = torch.device(device)
    torch.manual_seed(0)
    model = SeedSTTransformer(num_classes, size).to(dev).train()
    loader = DataLoader(
        SeedDataset(frames, offsets, lengths, labels),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=workers > 0,
        drop_last=True,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device=dev.type, enabled=dev.type == "cuda")
    step, seen, start = 0, 0, 0.0
    while step < steps:
        for x, y in loader:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            optimizer.zero_grad()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = nn.functional.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            loss.item()  # the seed logged every step: a host sync per step
            step += 1
            if step == warmup:
                _sync(dev)
                start = time.perf_counter()
            elif step > warmup:
                seen += len(y)
            if step >= steps:
                break
    _sync(dev)
    return seen / (time.perf_counter() - start)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def random_clips(
    n: int, num_classes: int = 502, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """KArSL-shaped random clips of 40-120 frames: frames, offsets, lengths, labels."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(40, 121, n)
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    frames = rng.random((int(lengths.sum()), POINTS, CHANNELS), dtype=np.float32)
    return frames, offsets, lengths, rng.integers(0, num_classes, n)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--clips", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--size", default="s_4_2")
    a = ap.parse_args()
    sps = samples_per_second(
        *random_clips(a.clips), device=a.device, batch_size=a.batch_size, workers=a.workers, steps=a.steps, size=a.size
    )
    print(
        json.dumps(
            {
                "loop": "seed",
                "device": a.device,
                "size": a.size,
                "batch_size": a.batch_size,
                "workers": a.workers,
                "samples_per_s": round(sps, 1),
            }
        )
    )
