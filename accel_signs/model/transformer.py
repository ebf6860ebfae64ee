"""STTransformer: spatial attention over body-part tokens, temporal attention over frames."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from accel_signs.config import InputConfig, ModelConfig, ModelSize
from accel_signs.data.layout import KeypointLayout
from accel_signs.model.features import Augment, KeypointFeatures


class _PartFrameAttention(nn.Module):
    """Multi-head self-attention on (B, G, T, D) tokens; subclasses choose the axis.

    Tokens stay part-major (B, G, T, D) through the whole model: the temporal attention then
    reads q, k and v as strided views of one projection, and no block copies its input into
    another layout.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)


class SpatialAttention(_PartFrameAttention):
    """Self-attention among the G part tokens of each frame.

    With G = 4 this is B x T sequences of 4 tokens, which generic attention kernels handle
    badly (cuDNN's backward fails at large batch); on a GPU, as broadcast products and a
    softmax over 4 entries, it is a few elementwise ops that torch.compile fuses. On a CPU
    those products write (B, G, G, T, H, hd) tensors, 16x the size of q, forward and backward;
    batched matrix products of (G, hd) blocks compute the same sums (spatial_mix).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, G, T, D)
        b, g, t, d = x.shape
        q, k, v = self.qkv(x).view(b, g, t, 3, self.heads, d // self.heads).unbind(3)  # 3 x (B, G, T, H, hd)
        mixed = spatial_mix(q, k, v, matmul=x.device.type == "cpu")  # (B, G, T, H, hd)
        return self.out(mixed.reshape(b, g, t, d))  # a view on a GPU, one copy on a CPU


def spatial_mix(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, matmul: bool) -> torch.Tensor:
    """Attention of each part over the G parts of its frame, per head: q, k, v (B, G, T, H, hd)
    -> (B, G, T, H, hd).

    `matmul` (the CPU's way): (B, T, H) batches of (G, hd) matrix products; with them a whole
    s_4_2 training step at batch 64 ran 1.2x faster on a 2-core CPU (paired steps in one
    process). The same sums in another order, so equal to float rounding (~1e-6). Otherwise
    (the GPU's way) broadcast products, which torch.compile fuses into one kernel.
    """
    scale = q.shape[-1] ** -0.5
    if matmul:
        q, k, v = (z.permute(0, 2, 3, 1, 4) for z in (q, k, v))  # (B, G, T, H, hd) -> (B, T, H, G, hd)
        scores = (q @ k.transpose(-1, -2)) * scale  # (B, T, H, Gq, Gk)
        return (scores.softmax(dim=-1) @ v).permute(0, 3, 1, 2, 4)  # (B, T, H, G, hd) -> (B, G, T, H, hd)
    scores = (q[:, :, None] * k[:, None, :]).sum(-1) * scale  # (B, Gq, Gk, T, H)
    return (scores.softmax(dim=2)[..., None] * v[:, None, :]).sum(2)  # (B, Gq, T, H, hd)


class TemporalAttention(_PartFrameAttention):
    """Self-attention over the T frames of each part token, through SDPA."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, G, T, D)
        b, g, t, d = x.shape
        h = self.heads
        # SDPA's fused kernels and the ONNX exporter take 4-D (batch, heads, seq, head_dim);
        # merging B and G of the part-major layout is a view, not a copy. Unbound before the
        # transpose, so that backward stacks the three gradients straight into the projection's
        # layout (a permute first costs a second copy of them).
        qkv = self.qkv(x).view(b * g, t, 3, h, d // h).unbind(2)  # 3 x (B*G, T, H, hd)
        q, k, v = (z.transpose(1, 2) for z in qkv)  # 3 x (B*G, H, T, hd)
        y = F.scaled_dot_product_attention(q, k, v)  # (B*G, H, T, hd)
        return self.out(y.transpose(1, 2).reshape(b, g, t, d))  # (B*G, T, H, hd) -> (B, G, T, D)


class TemporalConv(nn.Module):
    """A depthwise convolution over the T frames of each part token, then a pointwise
    projection: LayerNorm, Conv1D with one kernel-k filter per channel, GELU, Linear(D, D)
    (ModelConfig.conv_kernel; the GISLR winner's Conv1D block, without its expansion and
    channel attention). Block adds it as a residual branch.

    Every sample is one clip of seq_len sampled frames, none of them padding (sampling stretches
    a short clip over all T), so the only frames past either end are the convolution's own
    zeros: `causal` pads k - 1 of them before frame 0 (frame t sees t-k+1..t), else (k - 1) / 2
    on each side. Each (clip, part) row is convolved alone: clips never see each other."""

    def __init__(self, dim: int, kernel: int, causal: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.depthwise = nn.Conv1d(dim, dim, kernel, groups=dim)
        self.pointwise = nn.Linear(dim, dim)
        self.padding = (kernel - 1, 0) if causal else ((kernel - 1) // 2, (kernel - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, G, T, D)
        b, g, t, d = x.shape
        y = self.norm(x).view(b * g, t, d).transpose(1, 2)  # (B*G, D, T): Conv1D's channels-first view
        y = self.depthwise(F.pad(y, self.padding))  # (B*G, D, T + k - 1) -> (B*G, D, T)
        return self.pointwise(F.gelu(y).transpose(1, 2).reshape(b, g, t, d))  # (B*G, T, D) -> (B, G, T, D)


def keep_mask(shape: torch.Size, keep: float) -> torch.Tensor:
    """A bool CPU tensor of `shape`, each entry True with probability `keep` (to 1 / 65536).

    PyTorch's CPU generator makes a float for every entry of torch.rand (15 ms for a
    (64, 4, 50, 128) tensor; an s_4_2 step draws seven, 10% of the step); 64-bit integers
    filled at full range give 16 uniform bits for four entries at once (3 ms).
    """
    if torch.compiler.is_compiling():  # random_ breaks a compiled graph; inductor draws its own way
        return torch.rand(shape) < keep
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # full range: every bit uniform
    threshold = round(keep * 65536) - 32768  # P(int16 < threshold) = keep
    return bits.view(torch.int16)[:n].view(shape) < threshold  # (ceil(n/4),) int64 -> (n,) int16 -> shape


class Dropout(nn.Dropout):
    """nn.Dropout whose mask, on a CPU, comes from keep_mask: PyTorch's CPU dropout draws it
    with bernoulli_, 7x slower (measured on a (64, 4, 50, 128) tensor: 23 against 3 ms).
    Elsewhere F.dropout's fused kernel is the fast one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.p == 1 or x.device.type != "cpu":
            return super().forward(x)
        keep = 1.0 - self.p
        return x * keep_mask(x.shape, keep).to(x.dtype).mul_(1.0 / keep)


class Block(nn.Module):
    """Pre-norm residual block: spatial attention, temporal attention, MLP (4x, GELU); with
    `conv_kernel`, `conv_blocks` temporal convolutions (TemporalConv) before the temporal
    attention.

    Dropout sits on the three residual branches only. Dropping attention weights and the
    4x-wide MLP hidden layer as well cost a third of a CPU training step in mask generation
    (measured, s_4_2, batch 64) without helping accuracy on our data. Drop-path (stochastic
    depth) skips a whole branch for some samples in training.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float,
        drop_path: float = 0.0,
        conv_kernel: int = 0,
        conv_blocks: int = 1,
        conv_causal: bool = False,
    ):
        super().__init__()
        self.spatial_norm, self.spatial = nn.LayerNorm(dim), SpatialAttention(dim, heads)
        self.convs = nn.ModuleList(
            TemporalConv(dim, conv_kernel, conv_causal) for _ in range(conv_blocks if conv_kernel else 0)
        )
        self.temporal_norm, self.temporal = nn.LayerNorm(dim), TemporalAttention(dim, heads)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.dropout = Dropout(dropout)
        self.drop_path = drop_path

    def _residual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # (B, G, T, D) each
        """x + branch y, in training after dropout and drop-path.

        Both masks and both scales go into one multiply-add (torch.addcmul): on a CPU, where
        each pass over a (B, G, T, D) tensor costs 1-2 ms, mask, scale, drop-path and residual
        as separate ops made a branch 3x slower (16 against 5 ms at s_4_2, batch 64)."""
        p = self.dropout.p
        if not self.training or (p == 0 and self.drop_path == 0):
            return x + y
        mask, scale = None, 1.0
        if p > 0 and y.device.type == "cpu":
            mask, scale = keep_mask(y.shape, 1.0 - p), 1.0 / (1.0 - p)
        elif p > 0:
            y = F.dropout(y, p)  # one fused kernel on a GPU
        if self.drop_path > 0:
            keep = 1.0 - self.drop_path
            sample = torch.rand(y.shape[0], 1, 1, 1, device=y.device) < keep  # one draw per sample
            mask, scale = (sample if mask is None else mask & sample), scale / keep
        return x + y if mask is None else torch.addcmul(x, y, mask.to(y.dtype), value=scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, G, T, D)
        x = self._residual(x, self.spatial(self.spatial_norm(x)))
        for conv in self.convs:
            x = self._residual(x, conv(x))
        x = self._residual(x, self.temporal(self.temporal_norm(x)))
        return self._residual(x, self.mlp(self.mlp_norm(x)))


def sinusoidal_encoding(length: int, dim: int) -> torch.Tensor:
    """(length, dim) sine/cosine position encoding."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(1e4) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)[:, : dim // 2]
    return pe


def conv_options(cfg: ModelConfig) -> dict[str, int | bool]:
    """The temporal convolution's settings of `cfg` (STTransformer's keyword arguments); {}
    when it is off, so that a checkpoint without it records nothing new."""
    if not cfg.conv_kernel:
        return {}
    return {"conv_kernel": cfg.conv_kernel, "conv_blocks": cfg.conv_blocks, "conv_causal": cfg.conv_causal}


class STTransformer(nn.Module):
    """Input (B, T, P x C) raw keypoints (+ each clip's width / height) -> logits (B, num_classes).

    The input features (features.py: body frame, hand shapes, handedness, motion, presence;
    or the raw coordinates) -> BatchNorm over the features; one linear projection per body
    part (pose, face, right hand, left hand) gives 4 tokens per frame plus a learned part
    embedding; blocks of spatial and temporal attention (with conv_kernel, temporal depthwise
    convolutions before each temporal attention); mean over parts; attention pooling over time.
    """

    def __init__(
        self,
        num_classes: int,
        size: str | ModelSize = "s_4_2",
        *,
        layout: KeypointLayout,
        input: InputConfig | None = None,
        seq_len: int = 50,
        dropout: float = 0.2,
        drop_path: float = 0.0,
        conv_kernel: int = 0,
        conv_blocks: int = 1,
        conv_causal: bool = False,
    ):
        super().__init__()
        size = ModelSize.parse(size) if isinstance(size, str) else size
        dim = size.embed_dim
        self.features = KeypointFeatures(layout, input or InputConfig())
        self.points, self.channels = len(layout.names), len(layout.channels)
        part_sizes = self.part_sizes = self.features.part_sizes()
        self.input_norm = nn.BatchNorm1d(sum(part_sizes))
        self.proj = nn.ModuleList(nn.Linear(n, dim) for n in part_sizes)
        self.part_embed = nn.Parameter(torch.randn(len(part_sizes), dim) * 0.02)
        self.token_norm = nn.LayerNorm(dim)
        self.register_buffer("pos_enc", sinusoidal_encoding(seq_len, dim), persistent=False)  # (T, D)
        self.dropout = Dropout(dropout)
        # Stochastic depth grows linearly with depth, to drop_path in the last block.
        rates = (
            [drop_path * i / max(1, size.layers - 1) for i in range(size.layers)] if size.layers > 1 else [drop_path]
        )
        self.blocks = nn.ModuleList(
            Block(dim, size.heads, dropout, rate, conv_kernel, conv_blocks, conv_causal) for rate in rates
        )
        self.pool = nn.Sequential(nn.Linear(dim, dim // 2), nn.Tanh(), nn.Linear(dim // 2, 1))
        # Late dropout (ModelConfig.late_dropout): the training loop sets its rate per epoch; no
        # tensors, so checkpoints are the same with and without it.
        self.head_dropout = Dropout(0.0)
        self.head = nn.Linear(dim, num_classes)

    @classmethod
    def from_config(
        cls, cfg: ModelConfig, num_classes: int, layout: KeypointLayout, seq_len: int = 50
    ) -> STTransformer:
        return cls(
            num_classes,
            cfg.size,
            layout=layout,
            input=cfg.input,
            seq_len=seq_len,
            dropout=cfg.dropout,
            drop_path=cfg.drop_path,
            **conv_options(cfg),
        )

    @property
    def uses_aspect(self) -> bool:
        """Whether the clips' width / height changes the output (not with the raw input)."""
        return self.features.cfg.kind != "raw"

    def forward(
        self,
        x: torch.Tensor,
        aspect: torch.Tensor | None = None,
        augment: Augment | None = None,
        mix: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x (B, T, P*C) raw keypoints; aspect (B,) width / height of each clip's video (None:
        square); augment: the training augmentation, applied to the canonical coordinates; mix:
        mixup or cutmix, (partner (B,) batch positions, weight (B,) or per frame (B, T)): each
        clip's features become weight x its own + (1 - weight) x its partner's."""
        b, t, _ = x.shape
        x = self.features(x.view(b, t, self.points, self.channels), aspect, augment)  # (B, T, P*C) -> (B, T, F)
        if mix is not None:
            partner, weight = mix
            x = torch.lerp(x[partner], x, weight.view(b, -1, 1).to(x.dtype))  # per clip (B,) or frame (B, T)
        # BatchNorm1d over (B*T, F) rows: the same statistics as over (B, F, T), and on a CPU 10x
        # faster than on the transposed (B, F, T) view, whose strides miss its fast kernels.
        x = self.input_norm(x.reshape(b * t, -1)).view(b, t, -1)  # (B, T, F) -> (B*T, F) -> (B, T, F)
        parts = torch.split(x, self.part_sizes, dim=-1)
        tokens = torch.stack([proj(p) for proj, p in zip(self.proj, parts)], dim=1)  # (B, G, T, D)
        x = F.gelu(self.token_norm(tokens + self.part_embed[:, None, :]))
        x = self.dropout(x + self.pos_enc)
        for block in self.blocks:
            x = block(x)
        x = x.mean(dim=1)  # (B, G, T, D) -> (B, T, D)
        weights = self.pool(x).softmax(dim=1)  # (B, T, 1)
        pooled = (weights * x).sum(dim=1)  # (B, D)
        return self.head(self.head_dropout(pooled) if self.head_dropout.p > 0 else pooled)
