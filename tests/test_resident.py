"""--data-on-device: clips held on the device give the same batches as the memory-mapped path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import _train

from accel_signs.data import resident as resident_module
from accel_signs.data.pipeline import class_map, make_loader
from accel_signs.data.resident import ResidentClips, keep_on_device, resident_bytes
from accel_signs.data.store import open_store
from helpers import accelerate_launch_script, read_metrics


@pytest.mark.parametrize("chunk_bytes", [20_000, 1_000_000])  # a clip per read; many clips and gaps per read
def test_resident_clips_hold_the_store_frames(tiny_store, monkeypatch, chunk_bytes):
    monkeypatch.setattr(resident_module, "_CHUNK_BYTES", chunk_bytes)
    split = open_store(tiny_store).split("train")
    ids = np.arange(0, len(split), 3)
    clips = ResidentClips.load(split, ids, torch.device("cpu"))
    assert clips.frames.dtype == torch.from_numpy(split.frames[:1].copy()).dtype
    assert resident_bytes(split, ids) == clips.frames.numel() * clips.frames.element_size()
    for i in range(len(split)):
        if i % 3:
            assert clips.offsets[i] == -1
            continue
        o, n = int(clips.offsets[i]), int(clips.lengths[i])
        np.testing.assert_array_equal(
            clips.frames[o : o + n].numpy(), split.frames[split.offsets[i] : split.offsets[i] + n]
        )


@pytest.mark.parametrize("train", [True, False])
def test_resident_batches_equal_streamed_batches(tiny_store, train):
    """Same clips in the same order, same TSN windows (random for training from the same
    generator; the bin centres for evaluation), same labels."""
    store = open_store(tiny_store)
    split = store.split("train")
    ids = np.arange(1, len(split), 2)
    common = dict(seq_len=50, batch_size=7, train=train, num_workers=0, pin_memory=False)
    torch.manual_seed(5)
    streamed = list(make_loader(split, ids, class_map(store, None), **common))
    torch.manual_seed(5)
    on_device = list(
        make_loader(
            split, ids, class_map(store, None), resident=ResidentClips.load(split, ids, torch.device("cpu")), **common
        )
    )
    assert len(streamed) == len(on_device) == -(-len(ids) // 7)
    for (xa, _, ya, ia), (xb, _, yb, ib) in zip(streamed, on_device):
        torch.testing.assert_close(xa, xb, rtol=0, atol=0)
        assert torch.equal(ya, yb) and torch.equal(ia, ib)


def test_keep_on_device_decisions():
    cpu = torch.device("cpu")
    assert keep_on_device("no", 1, cpu, 1)[0] is False
    assert keep_on_device("auto", 1, cpu, 1)[0] is False  # the page cache already holds the store
    on, why = keep_on_device("yes", 1 << 20, cpu, 2)
    assert on and "GiB" in why
    on, why = keep_on_device("yes", 1 << 62, cpu, 1)
    assert not on and "the clips take" in why and "GiB but the host has" in why


def test_training_is_identical_with_clips_on_the_device(tiny_store, tmp_path):
    """On a CPU both paths draw from the same generator in the same order: the runs match exactly."""
    runs = {}
    for mode in ("no", "yes"):
        result, out = _train(
            tmp_path / mode, "--data", str(tiny_store), "--num-epochs", "2", "--no-eval", "--data-on-device", mode
        )
        assert result.exit_code == 0, result.output
        (run,) = [p for p in out.iterdir() if p.is_dir()]
        runs[mode] = run
        assert json.loads((run / "config.json").read_text())["runtime"]["data_on_device"] is (mode == "yes")
    strip = [{k: v for k, v in m.items() if k not in ("seconds", "samples_per_s")} for m in read_metrics(runs["no"])]
    assert strip == [
        {k: v for k, v in m.items() if k not in ("seconds", "samples_per_s")} for m in read_metrics(runs["yes"])
    ]


def test_two_ranks_get_the_same_shards_from_both_paths(tiny_store, tmp_path):
    """2 real ranks: per epoch and rank, the resident path yields the clips, labels and windows
    of the memory-mapped path; the shards cover the training set; epochs reshuffle; the
    validation result is the same everywhere."""
    probe = Path(__file__).with_name("shard_probe.py")
    proc = accelerate_launch_script(probe, [str(tiny_store), str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert (r["no"]["on_device"], r["yes"]["on_device"]) == (False, True)
        assert r["no"]["epochs"] == r["yes"]["epochs"]
        assert r["no"]["val"] == r["yes"]["val"] == ranks[0]["no"]["val"]
    train_ids = set(ranks[0]["no"]["train_ids"])
    for epoch in (0, 1):
        seen = [[i for ids, _, _ in r["yes"]["epochs"][epoch] for i in ids] for r in ranks]
        assert len(seen[0]) == len(seen[1]) >= len(train_ids) / 2
        assert set(seen[0]) | set(seen[1]) == train_ids
    order = [[i for ids, _, _ in ranks[0]["yes"]["epochs"][e] for i in ids] for e in (0, 1)]
    assert order[0] != order[1], "the second epoch did not reshuffle"


def test_clips_that_do_not_fit_are_refused_before_anything_is_written(tiny_store, tmp_path, monkeypatch):
    from helpers import assert_one_line_error

    monkeypatch.setattr(resident_module, "_available_host_bytes", lambda: 1000)
    result, out = _train(tmp_path, "--data", str(tiny_store), "--num-epochs", "1", "--data-on-device", "yes")
    assert result.exit_code == 1, result.output
    assert_one_line_error(result.stderr, "--data-on-device yes: the clips take", "--data-on-device no")
    assert not out.exists()
