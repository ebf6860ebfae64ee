"""Model selection a user can trust: the validation split honours --val-fraction overall on a
store with 1-2 clips per (sign, signer), a validation set too small to rank epochs is warned
about, ties in the best metric are broken as docs/training.md says, and runs written before
these rules resume on the split and the rule they had."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from accel_signs.core.errors import DatasetError
from accel_signs.data.pipeline import class_map, select_clips, signer_indices, stratified_split
from accel_signs.data.store import StoreWriter, open_store
from accel_signs.data.synth import SynthSpec, write_synthetic
from accel_signs.training.loop import TrainState
from tests.helpers import read_metrics, split_ids, train_tiny_run


@pytest.fixture(scope="module")
def uneven_store(tmp_path_factory):
    """8 signs x 10 signers with 1 or 2 clips per (sign, signer) (a third of the groups have 1):
    the shape of real sets with many signers and few repetitions."""
    root = tmp_path_factory.mktemp("uneven")
    full = open_store(write_synthetic(root / "full", SynthSpec(classes=8, signers=10, reps=2, seed=5)))
    train = full.split("train")
    with StoreWriter(root / "uneven", full.classes, full.signers, layout=full.layout) as writer:
        for name in ("train", "test"):
            split, seen = full.split(name), set()
            writer.begin_split(name)
            for i in range(len(split)):
                label, signer = int(split.labels[i]), int(split.signer_index[i])
                group = (label, signer)
                if name == "train" and group in seen and (label + signer) % 3 == 0:
                    continue  # this group keeps one clip
                seen.add(group)
                writer.add_clip(split.clip(i), label, signer)
    assert len(train) == 160
    return root / "uneven"


def _ids(store):
    split = store.split("train")
    return split, select_clips(split, class_map(store, None), signer_indices(store, None))


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.35])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_split_honours_the_fraction_overall_and_per_sign(uneven_store, fraction, seed):
    store = open_store(uneven_store)
    split, ids = _ids(store)
    groups = np.unique(split.labels[ids] * 100 + split.signer_index[ids], return_counts=True)[1]
    assert set(groups) == {1, 2}
    train, val = stratified_split(ids, split, fraction, seed)
    assert np.array_equal(np.sort(np.concatenate([train, val])), ids) and not set(train) & set(val)
    assert len(val) == round(fraction * len(ids))
    for sign in np.unique(split.labels[ids]):
        n = int((split.labels[ids] == sign).sum())
        n_val = int((split.labels[val] == sign).sum())
        assert abs(n_val - fraction * n) < 1, (sign, n_val, n)  # within one clip of its share
        assert n_val < n  # every sign trains
    # Spread over the signers: none gives more than a clip and a half beyond its share.
    for signer in np.unique(split.signer_index[ids]):
        n = int((split.signer_index[ids] == signer).sum())
        assert abs(int((split.signer_index[val] == signer).sum()) - fraction * n) <= 1.5
    again = stratified_split(ids, split, fraction, seed)[1]
    assert np.array_equal(val, again) and not np.array_equal(val, stratified_split(ids, split, fraction, seed + 7)[1])


def test_the_old_group_rule_kept_nothing_of_groups_of_one_or_two(uneven_store):
    """What the issue saw (19 of 747 clips): round(0.2 x 2) = 0 per group. The rule stays for the
    runs that were split by it."""
    store = open_store(uneven_store)
    split, ids = _ids(store)
    with pytest.raises(DatasetError, match="leaves no clip for validation"):
        stratified_split(ids, split, 0.2, 0, rule="group")
    assert len(stratified_split(ids, split, 0.3, 0, rule="group")[1]) == 53  # the groups of 2 give 1


def test_a_run_says_what_the_split_did_and_warns_when_validation_is_small(uneven_store, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="accel_signs"):
        # One batch of 8 clips trains, 16 validate (--limit-batches): the split is logged before that cut.
        run = train_tiny_run(uneven_store, tmp_path / "runs", "--num-epochs", "1", "--no-eval", "--limit-batches", "1")
    said = [r.getMessage() for r in caplog.records]
    (summary,) = [m for m in said if m.startswith("validation: ")]
    assert "27 of 133 clips (0.203; --val-fraction 0.2)" in summary
    assert "3-4 per sign" in summary and "per signer" in summary and "(rule sign, seed 0)" in summary
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    (small,) = [m for m in warned if m.startswith("validation has only")]
    assert "only 16 clips (2.0 per class for 8 classes)" in small and "moves val_acc by 6.2 points" in small
    assert json.loads((run / "split.json").read_text())["val_split"] == "sign"
    assert len(split_ids(run)[1]) == 16


def _pick(accs, losses, window, metric="val_acc"):
    state = TrainState()
    best = []
    for epoch, (acc, loss) in enumerate(zip(accs, losses), start=1):
        if state.consider(epoch, metric, loss, acc, window):
            best.append(epoch)
        # The rule's memory is in the resumable state: a JSON round trip changes nothing.
        saved, state = json.loads(json.dumps(state.state_dict())), TrainState()
        state.load_state_dict(saved)
    return best[-1], best


def test_ties_go_to_the_better_mean_over_the_window_then_to_the_lower_loss():
    """docs/training.md#choosing-the-best-epoch: epochs 2, 5 and 6 tie at 0.8. By the mean over
    each and the two epochs before it (0.65, 0.7, 0.767) epoch 6 is kept; by val loss alone
    (window 1, runs before config version 3) epoch 2, the earliest, as in the issue."""
    accs = [0.5, 0.8, 0.6, 0.7, 0.8, 0.8, 0.75]
    losses = [1.0, 0.6, 0.9, 0.8, 0.7, 0.8, 0.5]
    assert _pick(accs, losses, 3) == (6, [1, 2, 5, 6])
    assert _pick(accs, losses, 1) == (2, [1, 2])
    # A tie in the mean too: the lower val loss (epoch 4 over 2), then the earlier epoch (not 6).
    assert _pick([0.5, 0.8, 0.5, 0.8, 0.5, 0.8], [1, 0.7, 1, 0.6, 1, 0.6], 2)[0] == 4
    # By val loss: a tie goes to the lower mean loss over the window (epoch 4: 0.6 against 0.75);
    # an equal or higher mean keeps the earlier epoch, whatever the accuracy.
    assert _pick([0.1] * 4, [1.0, 0.5, 0.7, 0.5], 2, "val_loss")[0] == 4
    assert _pick([0.1, 0.1, 0.1, 0.9], [0.5, 0.5, 0.9, 0.5], 2, "val_loss")[0] == 1


def test_a_run_from_before_config_version_3_resumes_on_its_split_and_rule(tiny_store, tmp_path):
    """A version 2 run folder (its config.json without val_split and best_window) continues on the
    (sign, signer) group split it was made with, and picks its best epoch as it did."""
    run = train_tiny_run(
        tiny_store, tmp_path / "runs", "--num-epochs", "1", "--no-eval", "--config", str(_old(tmp_path))
    )
    config = json.loads((run / "config.json").read_text())
    config["version"] = 2
    del config["data"]["val_split"], config["best_window"]
    (run / "config.json").write_text(json.dumps(config))
    split = json.loads((run / "split.json").read_text())
    del split["val_split"]
    (run / "split.json").write_text(json.dumps(split))
    from typer.testing import CliRunner

    from accel_signs.cli import app

    result = CliRunner().invoke(app, ["train", "--resume", str(run), "--num-epochs", "2"])
    assert result.exit_code == 0, result.stderr
    assert [m["epoch"] for m in read_metrics(run)] == [1, 2]
    assert len(split_ids(run)[1]) == 12  # round(0.2 x 6) of each of the 12 groups (the sign rule: 14)
    resumed = json.loads((run / "config.json").read_text())
    assert resumed["version"] == 4 and resumed["data"]["val_split"] == "group" and resumed["best_window"] == 1


def _old(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"data": {"val_split": "group"}, "best_window": 1}))
    return path
