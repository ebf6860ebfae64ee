import numpy as np
import pytest
import torch

from accel_signs.core.errors import DatasetError
from accel_signs.data.pipeline import class_map, make_loader, select_clips, signer_indices, stratified_split
from accel_signs.data.store import open_store


@pytest.fixture
def store(tiny_store):
    return open_store(tiny_store)


def test_class_map_remaps_signs_in_order(store):
    cmap = class_map(store, (5, 2))
    assert [c.sign for c in cmap.classes] == [5, 2]
    assert cmap.store_to_model.tolist() == [-1, 1, -1, -1, 0, -1]
    with pytest.raises(DatasetError, match=r"sign\(s\) 7-9 are not in store"):
        class_map(store, (1, 7, 8, 9))


def test_selection_by_signer(store):
    split = store.split("train")
    ids = select_clips(split, class_map(store, (1, 2)), signer_indices(store, ("02",)))
    assert set(split.labels[ids]) == {0, 1} and set(split.signers[ids]) == {1}
    with pytest.raises(DatasetError, match="unknown signer"):
        signer_indices(store, ("09",))


def test_stratified_split_is_seeded_disjoint_and_complete(store):
    split = store.split("train")
    ids = select_clips(split, class_map(store, None), signer_indices(store, None))
    train, val = stratified_split(ids, split, 0.2, seed=4)
    again_train, again_val = stratified_split(ids, split, 0.2, seed=4)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    assert not np.array_equal(val, stratified_split(ids, split, 0.2, seed=5)[1])
    assert np.array_equal(np.sort(np.concatenate([train, val])), ids) and not set(train) & set(val)
    # round(0.2 x 72) = 14 clips: each sign 2 or 3 of its 12 (2.4), each signer 7 of its 36 (7.2).
    assert len(val) == 14
    assert set(np.bincount(split.labels[val])) == {2, 3} and set(np.bincount(split.signers[val])) == {7}
    # The rule of runs before config version 3: round(0.2 x 6) = 1 clip of every (sign, signer) group.
    val = stratified_split(ids, split, 0.2, seed=4, rule="group")[1]
    groups = split.labels[val] * 10 + split.signers[val]
    assert len(val) == 12 and len(set(groups)) == 12


def test_workers_give_the_same_eval_batches(store):
    split = store.split("train")
    ids = np.arange(len(split))
    cmap = class_map(store, None)
    common = dict(seq_len=50, batch_size=10, train=False, pin_memory=False)
    serial = list(make_loader(split, ids, cmap, num_workers=0, **common))
    loader = make_loader(split, ids, cmap, num_workers=2, **common)
    # Workers come from a fork server, not forked from this process with its threads (CPython
    # gh-112275: such a child can hang in fork()); the split reaches them without its memory map.
    assert loader.multiprocessing_context.get_start_method() == "forkserver"
    parallel = list(loader)
    assert len(serial) == len(parallel) == 8
    for (xa, _, ya, ia), (xb, _, yb, ib) in zip(serial, parallel):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    assert torch.cat([b.clips for b in serial]).tolist() == list(range(len(split)))
    assert serial[0][0].shape == (10, 50, 184, 4) and serial[0][0].dtype == torch.float32
