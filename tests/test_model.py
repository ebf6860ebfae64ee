import pytest
import torch
import torch.nn.functional as F

from accel_signs.config import InputConfig
from accel_signs.data.layout import keypoint_layout
from accel_signs.model.transformer import SpatialAttention, STTransformer, TemporalAttention

RAW = InputConfig(kind="raw", handedness=False)


def _keypoints(b=3, seed=0):
    """(b, 50, 736) keypoint-like input: coordinates in [0, 1], some points undetected."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 50, 184, 4, generator=g)
    return x.masked_fill(torch.rand(b, 50, 184, 1, generator=g) < 0.2, 0.0).flatten(2)


@pytest.mark.parametrize("size", ["t_1_1", "s_4_2", "s_12_10", "m_10_3"])
@pytest.mark.parametrize("inp", [RAW, InputConfig()], ids=["raw", "normalized"])
def test_output_shapes(size, inp):
    model = STTransformer(7, size, layout=keypoint_layout(), input=inp).eval()
    out = model(_keypoints(), torch.tensor([1.0, 16 / 9, 0.5]))
    assert out.shape == (3, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("inp", [RAW, InputConfig()], ids=["raw", "normalized"])
def test_training_step_backpropagates_everywhere(inp):
    from accel_signs.config import AugmentConfig
    from accel_signs.data.augment import Augmenter

    model = STTransformer(5, "t_2_2", layout=keypoint_layout(), input=inp, drop_path=0.2)
    augment = Augmenter(AugmentConfig(), keypoint_layout(), inp.kind)
    F.cross_entropy(model(_keypoints(4), augment=augment), torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_a_compiled_training_forward_compiles_once():
    """The augmenter's per-device index tensors exist before the first compiled call: filling
    them inside it made dynamo compile the whole model twice (seen with --compile on a GPU)."""
    from torch._dynamo.testing import CompileCounter

    from accel_signs.config import AugmentConfig
    from accel_signs.data.augment import Augmenter

    torch._dynamo.reset()
    counter = CompileCounter()
    model = STTransformer(5, "t_2_2", layout=keypoint_layout(), input=InputConfig())
    augment = Augmenter(AugmentConfig(), keypoint_layout(), "normalized", torch.device("cpu"))
    compiled = torch.compile(model, backend=counter)
    for _ in range(3):
        compiled(_keypoints(4), augment=augment).sum().backward()
    assert counter.frame_count == 1


def test_the_candidates_compile_into_one_graph():
    """Shear, point masks, a longer time mask, mixup and late dropout (docs/training.md) add no
    graph break to the compiled training forward: no Python per sample and no host sync in it."""
    from torch._dynamo.testing import CompileCounter

    from accel_signs.config import AugmentConfig
    from accel_signs.data.augment import Augmenter
    from accel_signs.training.average import mix_batch

    torch._dynamo.reset()
    counter = CompileCounter()
    model = STTransformer(5, "t_2_2", layout=keypoint_layout(), input=InputConfig())
    model.head_dropout.p = 0.8
    cfg = AugmentConfig(shear=0.15, point_mask_p=0.5, time_mask_max=0.4, mixup_p=0.5, cutmix_p=0.5)
    augment = Augmenter(cfg, keypoint_layout(), "normalized", torch.device("cpu"))
    compiled = torch.compile(model, backend=counter)
    for _ in range(3):
        mix = mix_batch(torch.arange(4), 50, cfg)  # mixup and cutmix: weights per frame
        compiled(_keypoints(4), augment=augment, mix=mix[:2]).sum().backward()
    assert counter.frame_count == 1


def test_drop_path_skips_branches_for_some_samples_in_training_only():
    from accel_signs.model.transformer import Block

    torch.manual_seed(0)
    block = Block(32, 4, dropout=0.0, drop_path=0.5)
    x = torch.randn(64, 4, 10, 32)  # (B, G, T, D)
    block.train()
    out = block(x)
    untouched = (out == x).flatten(1).all(1)  # every branch skipped: probability 1/8
    assert 0 < untouched.sum() < 64
    block.eval()
    assert not (block(x) == x).flatten(1).all(1).any()


def _reference(attn, x, dim_tokens):
    """Attention over `dim_tokens` of (B, G, T, D) with SDPA, as a reference for both modules."""
    b, g, t, d = x.shape
    h = attn.heads
    q, k, v = attn.qkv(x).view(b, g, t, 3, h, d // h).unbind(3)  # 3 x (B, G, T, H, hd)
    if dim_tokens == 1:  # spatial: sequences of G tokens
        q, k, v = (z.permute(0, 2, 3, 1, 4) for z in (q, k, v))  # (B, T, H, G, hd)
        y = F.scaled_dot_product_attention(q, k, v).permute(0, 3, 1, 2, 4)  # -> (B, G, T, H, hd)
    else:  # temporal: sequences of T frames
        q, k, v = (z.transpose(2, 3) for z in (q, k, v))  # (B, G, H, T, hd)
        y = F.scaled_dot_product_attention(q, k, v).transpose(2, 3)  # -> (B, G, T, H, hd)
    return attn.out(y.reshape(b, g, t, d))


@pytest.mark.parametrize("cls,dim_tokens", [(SpatialAttention, 1), (TemporalAttention, 2)])
def test_attention_matches_sdpa_reference(cls, dim_tokens):
    torch.manual_seed(0)
    attn = cls(32, 4).eval()
    x = torch.randn(2, 4, 9, 32)  # (B, G, T, D)
    torch.testing.assert_close(attn(x), _reference(attn, x, dim_tokens), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("inp", [RAW, InputConfig()], ids=["raw", "normalized"])
def test_eval_is_batch_independent(inp):
    model = STTransformer(5, "t_2_1", layout=keypoint_layout(), input=inp).eval()
    x = _keypoints(6)
    torch.testing.assert_close(model(x)[:2], model(x[:2]), atol=1e-5, rtol=1e-5)


def test_compiled_training_saves_plain_weights_with_the_same_outputs(tiny_store, tmp_path):
    """--compile trains through torch.compile; the checkpoint holds the plain module's weights
    (no `_orig_mod.` prefixes), and compiled and eager forward passes agree."""
    import subprocess
    import sys

    from accel_signs.model.checkpoint import load_checkpoint
    from helpers import cli_env

    # A process of its own: Accelerate keeps its state (the dynamo plugin included) per process.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "accel_signs",
            "train",
            "--data",
            str(tiny_store),
            "--output-dir",
            str(tmp_path),
            "--run-name",
            "c",
            "--num-epochs",
            "1",
            "--model-size",
            "t_1_1",
            "--batch-size",
            "16",
            "--no-eval",
            "--compile",
        ],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch.compile: epoch 1 took" in result.stderr
    model = load_checkpoint(tmp_path / "c" / "best").model
    assert not any(k.startswith("_orig_mod") for k in model.state_dict())
    x, aspect = _keypoints(5), torch.tensor([1.0, 1.5, 0.5, 1.0, 2.0])
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(x, aspect), model(x, aspect), atol=1e-4, rtol=1e-4)


def test_cpu_dropout_is_dropout():
    """model.Dropout's CPU mask (keep_mask) keeps nn.Dropout's meaning: a share p zeroed, the
    rest scaled by 1 / (1 - p), identity in eval mode."""
    from accel_signs.model.transformer import Dropout

    torch.manual_seed(0)
    drop, x = Dropout(0.2), torch.ones(200_000)
    y = drop(x)
    assert set(y.unique().tolist()) == {0.0, 1.25}
    assert (y == 0).float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert torch.equal(drop.eval()(x), x) and torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))


def test_keep_mask_keeps_each_entry_with_its_probability():
    from accel_signs.model.transformer import keep_mask

    torch.manual_seed(0)
    for keep in (0.5, 0.8, 0.99):
        mask = keep_mask(torch.Size([1001, 7]), keep)  # an odd count: not a whole number of draws
        assert mask.shape == (1001, 7) and mask.dtype == torch.bool
        assert mask.float().mean().item() == pytest.approx(keep, abs=0.01)
    # Every 16-bit slice of a 64-bit draw counts: no lane is stuck.
    lanes = keep_mask(torch.Size([100_000, 4]), 0.5).float().mean(0)
    assert torch.allclose(lanes, torch.full((4,), 0.5), atol=0.01)


def test_residual_branch_dropout_and_drop_path_keep_their_meaning():
    """Block._residual: in training a share p of entries zeroed and whole samples' branches
    skipped with probability drop_path, the rest scaled by 1 / ((1 - p)(1 - drop_path));
    in eval the plain sum."""
    from accel_signs.model.transformer import Block

    torch.manual_seed(0)
    block = Block(8, 2, dropout=0.2, drop_path=0.5).train()
    x, y = torch.zeros(400, 4, 10, 8), torch.ones(400, 4, 10, 8)
    out = block._residual(x, y)
    assert set(out.unique().tolist()) == {0.0, 2.5}
    skipped = (out == 0).flatten(1).all(1)  # (B,) whole branch skipped
    assert skipped.float().mean().item() == pytest.approx(0.5, abs=0.08)
    assert (out[~skipped] == 0).float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert torch.equal(block.eval()._residual(x + 1, y), x + 2)
