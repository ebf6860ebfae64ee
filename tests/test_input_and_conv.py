"""Issue 30's input and architecture candidates, each off by default: the 2-frame difference
(model.input.two_frame_motion), the lips, eyes and nose of the face mesh (model.input.face) and
the temporal depthwise convolution before each temporal attention (model.conv_kernel). Each
runs, does what its help says, compiles into one graph and survives a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.config import InputConfig, ModelConfig, TrainConfig
from accel_signs.core.errors import ConfigError
from accel_signs.data.layout import builtin_layout, keypoint_layout
from accel_signs.model.checkpoint import load_checkpoint
from accel_signs.model.features import LIPS_EYES_NOSE, KeypointFeatures, feature_points
from accel_signs.model.transformer import STTransformer, TemporalConv
from tests.helpers import train_tiny_run

KARSL = keypoint_layout()
HOLISTIC = builtin_layout("holistic543")


def _keypoints(layout=KARSL, b=3, t=50, seed=0) -> torch.Tensor:
    """(b, t, P, 4) keypoint-like input: coordinates in [0, 1], a fifth of the points undetected."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, t, layout.num_points, 4, generator=g)
    return x.masked_fill(torch.rand(b, t, layout.num_points, 1, generator=g) < 0.2, 0.0)


def test_they_are_off_by_default_and_the_default_model_is_unchanged():
    cfg = TrainConfig()
    assert not cfg.model.input.two_frame_motion and cfg.model.input.face == "all" and cfg.model.conv_kernel == 0
    model = STTransformer.from_config(cfg.model, 5, KARSL)
    assert not any("conv" in name for name in model.state_dict())  # old checkpoints' tensors, no more
    assert model.part_sizes == KeypointFeatures(KARSL, InputConfig()).part_sizes()


def test_the_options_are_checked():
    for bad in (2, 4, 51, -3):
        with pytest.raises(ConfigError, match="model.conv_kernel must be 0 or odd in"):
            ModelConfig(conv_kernel=bad)
    with pytest.raises(ConfigError, match="model.conv_blocks must be in"):
        ModelConfig(conv_kernel=17, conv_blocks=0)
    with pytest.raises(ConfigError, match="model.input.face must be one of"):
        InputConfig(face="lips")
    with pytest.raises(ConfigError, match=r"model.input.two_frame_motion must be False with --input raw"):
        InputConfig(kind="raw", handedness=False, two_frame_motion=True)
    with pytest.raises(ConfigError, match=r"model.input.face must be 'all' with --input raw"):
        InputConfig(kind="raw", handedness=False, face="none")


def _blocks(features: KeypointFeatures, out: torch.Tensor, part: int, blocks: int) -> list[torch.Tensor]:
    """The `blocks` equal value blocks of part `part` of the features `out` (B, T, F)."""
    sizes = features.part_sizes()
    start = sum(sizes[:part])
    width = (sizes[part] - 1) // blocks  # less the presence column
    return [out[..., start + i * width : start + (i + 1) * width] for i in range(blocks)]


def test_two_frame_motion_is_the_difference_over_two_frames_where_both_are_seen():
    plain = KeypointFeatures(KARSL, InputConfig())
    both = KeypointFeatures(KARSL, InputConfig(two_frame_motion=True))
    alone = KeypointFeatures(KARSL, InputConfig(motion=False, two_frame_motion=True))
    # One more block of the part's values each: 4 where there were 3, 2 where there was 1.
    assert [(s - 1) // 3 * 4 + 1 for s in plain.part_sizes()] == both.part_sizes()
    assert [(s - 1) // 3 * 2 + 1 for s in plain.part_sizes()] == alone.part_sizes()
    x = _keypoints()
    x[0, 20:, KARSL.parts["pose"][0]] = 0  # a point lost from frame 20 on
    out, ref = both(x), plain(x)
    for g in range(len(KARSL.parts)):
        values, d1, d2, lag2 = _blocks(both, out, g, 4)
        for new, old in zip((values, d1, d2), _blocks(plain, ref, g, 3)):  # the existing blocks, unchanged
            torch.testing.assert_close(new, old)
        seen = values != 0  # a value that is 0 here is an undetected point (random coordinates are never 0)
        expect = torch.where(seen[:, 2:] & seen[:, :-2], values[:, 2:] - values[:, :-2], 0.0)
        torch.testing.assert_close(lag2[:, 2:], expect)
        assert torch.equal(lag2[:, :2], torch.zeros_like(lag2[:, :2]))  # no frame t-2 yet
        torch.testing.assert_close(_blocks(alone, alone(x), g, 2)[1], lag2)
    assert torch.equal(_blocks(both, out, 0, 4)[3][0, 20:, :2], torch.zeros(30, 2))  # the lost point's x, y


@pytest.mark.parametrize(
    "layout,face,points", [(HOLISTIC, "lips_eyes_nose", 76), (KARSL, "lips_eyes_nose", 72), (KARSL, "all", 136)]
)
def test_face_keeps_the_lips_eyes_and_nose_the_layout_has(layout, face, points):
    parts = feature_points(layout, face)
    assert list(parts) == list(layout.parts) and len(parts["face"]) == points
    assert {name: parts[name] for name in parts if name != "face"} == {
        name: layout.parts[name] for name in parts if name != "face"
    }
    if face != "all":
        assert {layout.sources[i][1] for i in parts["face"]} <= LIPS_EYES_NOSE
    # karsl184's face: FACEMESH_CONTOURS and the irises, which hold every lip and eye point but no nose.
    mesh = {layout.sources[i][1] for i in layout.parts["face"]}
    assert points == (len(LIPS_EYES_NOSE & mesh) if face != "all" else len(mesh))


def test_face_features_read_only_the_points_kept():
    features = KeypointFeatures(KARSL, InputConfig(face="lips_eyes_nose"))
    x = _keypoints()
    index = {KARSL.sources[i][1]: i for i in KARSL.parts["face"]}
    out = features(x)
    face = slice(features.part_sizes()[0], sum(features.part_sizes()[:2]))  # pose first, then face
    oval, lip = x.clone(), x.clone()
    oval[:, :, index[10], :2] += 0.05  # the forehead: a face-oval point, not kept
    lip[:, :, index[61], :2] += 0.05  # a mouth corner
    torch.testing.assert_close(features(oval)[..., face], out[..., face])
    assert not torch.allclose(features(lip)[..., face], out[..., face])
    assert features.part_sizes()[1] == 2 * 72 * 3 + 1


def test_face_none_drops_the_face_token():
    model = STTransformer(5, "t_2_1", layout=HOLISTIC, input=InputConfig(face="none")).eval()
    assert len(model.part_sizes) == 3 and model.part_embed.shape[0] == 3
    assert model(_keypoints(HOLISTIC).flatten(2)).shape == (3, 5)


@pytest.mark.parametrize("layout", ["pose33", "pose33-hands42"])
def test_face_on_a_layout_without_a_face_mesh_is_an_error_naming_it(layout):
    with pytest.raises(ConfigError, match=f"layout {layout} has none"):
        KeypointFeatures(builtin_layout(layout), InputConfig(face="lips_eyes_nose"))


def _conv_reach(causal: bool, kernel: int = 5, t: int = 20, frame: int = 10) -> set[int]:
    """The frames whose input changes frame `frame`'s output of a TemporalConv."""
    torch.manual_seed(0)
    conv = TemporalConv(8, kernel, causal).eval()
    x = torch.randn(1, 1, t, 8, requires_grad=True)
    conv(x)[0, 0, frame].sum().backward()
    return set(torch.nonzero(x.grad[0, 0].abs().sum(-1)).flatten().tolist())


def test_the_convolution_sees_k_frames_centred_or_before():
    assert _conv_reach(causal=False) == set(range(8, 13))
    assert _conv_reach(causal=True) == set(range(6, 11))  # never a later frame
    assert _conv_reach(causal=True, frame=1) == {0, 1}  # before frame 0: the padding's zeros, nothing else
    assert _conv_reach(causal=False, frame=19) == {17, 18, 19}


def test_the_convolution_is_depthwise_and_per_clip_and_part():
    torch.manual_seed(0)
    conv = TemporalConv(8, 5).eval()
    x = torch.randn(3, 4, 20, 8)
    out = conv(x)
    assert out.shape == x.shape
    y = x.clone()
    y[1, 2] += 1.0  # one clip's one part token
    changed = (conv(y) - out).abs().flatten(2).amax(-1) > 0  # (B, G)
    assert changed.tolist() == [[False] * 4, [False, False, True, False], [False] * 4]
    assert conv.depthwise.weight.shape == (8, 1, 5)  # one filter per channel
    # The reference: a channels-first conv1d over each (clip, part) row, with 'same' padding.
    rows = conv.norm(x).flatten(0, 1).transpose(1, 2)  # (B*G, D, T)
    ref = F.conv1d(rows, conv.depthwise.weight, conv.depthwise.bias, padding=2, groups=8)
    ref = conv.pointwise(F.gelu(ref).transpose(1, 2)).view_as(x)
    torch.testing.assert_close(out, ref)


def test_conv_blocks_sit_before_each_temporal_attention_and_train():
    cfg = ModelConfig(size="s_4_2", conv_kernel=17, conv_blocks=3, drop_path=0.2)
    model = STTransformer.from_config(cfg, 5, KARSL)
    assert [len(block.convs) for block in model.blocks] == [3, 3]
    order = [name for name, _ in model.blocks[0].named_children()]
    assert order.index("convs") < order.index("temporal")
    off = STTransformer.from_config(ModelConfig(size="s_4_2"), 5, KARSL)
    per_conv = sum(p.numel() for p in model.blocks[0].convs[0].parameters())
    assert per_conv == 128 * 17 + 128 + 128 * 128 + 128 + 2 * 128  # depthwise, pointwise, norm
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in off.parameters())
    assert extra == 2 * 3 * per_conv
    labels = torch.tensor([0, 1, 2])
    F.cross_entropy(model(_keypoints().flatten(2)), labels).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_eval_is_batch_independent_with_everything_on():
    inp = InputConfig(two_frame_motion=True, face="lips_eyes_nose")
    model = STTransformer(5, "t_2_1", layout=KARSL, input=inp, conv_kernel=9, conv_causal=True).eval()
    x = _keypoints(b=6).flatten(2)
    torch.testing.assert_close(model(x)[:2], model(x[:2]), atol=1e-5, rtol=1e-5)


def test_everything_on_compiles_into_one_graph():
    """No graph break in the compiled training forward: no Python per sample, no host sync."""
    from torch._dynamo.testing import CompileCounter

    from accel_signs.config import AugmentConfig
    from accel_signs.data.augment import Augmenter

    torch._dynamo.reset()
    counter = CompileCounter()
    inp = InputConfig(two_frame_motion=True, face="lips_eyes_nose")
    model = STTransformer(5, "t_2_2", layout=KARSL, input=inp, conv_kernel=17, conv_blocks=2, drop_path=0.1)
    augment = Augmenter(AugmentConfig(), KARSL, "normalized", torch.device("cpu"))
    compiled = torch.compile(model, backend=counter)
    for _ in range(3):
        compiled(_keypoints(b=4).flatten(2), augment=augment).sum().backward()
    assert counter.frame_count == 1


def test_a_run_with_everything_on_checkpoints_and_exports(tiny_store, tmp_path):
    config = tmp_path / "candidates.json"
    model = {"input": {"two_frame_motion": True, "face": "lips_eyes_nose"}, "conv_kernel": 5, "conv_causal": True}
    config.write_text(json.dumps({"model": model}))
    run = train_tiny_run(
        tiny_store, tmp_path / "runs", "--config", str(config), "--num-epochs", "1", "--limit-batches", "2"
    )
    ckpt = load_checkpoint(run / "best")
    assert [len(block.convs) for block in ckpt.model.blocks] == [1]
    assert ckpt.model.blocks[0].convs[0].padding == (4, 0)
    meta = ckpt.meta.model
    assert meta.input.face == "lips_eyes_nose" and meta.config.conv_kernel == 5 and meta.config.conv_causal
    assert meta.part_sizes[1] == 2 * 72 * 4 + 1  # the face: 72 points x 2 values, 4 blocks, presence
    x = _keypoints(b=2).flatten(2)
    trained = STTransformer.from_config(
        TrainConfig.from_dict(json.loads((run / "config.json").read_text())).model, 6, KARSL
    )
    trained.load_state_dict(ckpt.model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model(x), trained.eval()(x))
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'accel-signs[onnx]')")
    exported = CliRunner().invoke(app, ["export", str(run / "best"), "--onnx", str(tmp_path / "m.onnx")])
    assert exported.exit_code == 0, exported.stderr  # it checks ONNX Runtime's logits against the model's
    assert "max abs logit difference" in exported.stderr


def test_a_checkpoint_from_before_the_options_loads_as_before(tiny_store, tmp_path):
    run = train_tiny_run(tiny_store, tmp_path / "runs", "--num-epochs", "1", "--limit-batches", "2")
    config = run / "best" / "config.json"
    meta = json.loads(config.read_text())
    assert meta["model"]["conv_kernel"] == 0  # off, recorded with the other hyperparameters
    x = _keypoints(b=2).flatten(2)
    before = load_checkpoint(run / "best").model(x)
    for key in ("two_frame_motion", "face"):  # what a checkpoint written before them holds
        del meta["model"]["input"][key]
    for key in ("conv_kernel", "conv_blocks", "conv_causal"):
        del meta["model"][key]
    config.write_text(json.dumps(meta))
    torch.testing.assert_close(load_checkpoint(run / "best").model(x), before)
