"""Sample order: a pure function of (seed, position), split by (rank, world size) without overlap."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tokensmith.trainer.sampler import BatchPlan, Windows, permute, sample_ids
from tokensmith.trainer.schedule import lr_at


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_permute_is_a_bijection(n: int) -> None:
    out = permute(np.arange(n), n, seed=5, epoch=2)
    assert sorted(out.tolist()) == list(range(n))


def test_permute_depends_on_seed_and_epoch_only() -> None:
    a = permute(np.arange(100), 100, 1, 0)
    assert (a == permute(np.arange(100), 100, 1, 0)).all()
    assert (a != permute(np.arange(100), 100, 2, 0)).any()
    assert (a != permute(np.arange(100), 100, 1, 1)).any()
    assert (a != np.arange(100)).sum() > 90  # actually shuffled


def test_every_window_once_per_epoch() -> None:
    n = 37
    ids = sample_ids(np.arange(3 * n), n, seed=9)
    for epoch in range(3):
        assert sorted(ids[epoch * n : (epoch + 1) * n].tolist()) == list(range(n))


@pytest.mark.parametrize(("micro", "world", "accum"), [(4, 1, 4), (4, 2, 2), (2, 4, 2), (4, 4, 1), (1, 8, 2)])
def test_a_step_reads_the_same_positions_whatever_the_world_size(micro: int, world: int, accum: int) -> None:
    plan = BatchPlan(micro, world, accum)
    assert plan.global_batch == 16
    read = np.concatenate([plan.positions(32, r, a) for r in range(world) for a in range(accum)])
    assert sorted(read.tolist()) == plan.step_positions(32).tolist() == list(range(32, 48))


def test_plan_refuses_out_of_range() -> None:
    with pytest.raises(ValueError):
        BatchPlan(2, 2, 2).positions(0, 2, 0)


class _Tokens:
    def __init__(self, n: int) -> None:
        self.data = np.arange(n, dtype=np.uint16)
        self.num_tokens = n

    def tokens(self, start: int, length: int) -> np.ndarray:
        return self.data[start : start + length]


def test_windows_overlap_by_one_token_for_the_targets() -> None:
    w = Windows(_Tokens(100), seq_len=8)
    assert w.num_samples == 12  # (100 - 1) // 8
    rows = w.batch(np.array([0, 11]))
    assert rows.shape == (2, 9) and rows.dtype == np.int64
    assert rows[0].tolist() == list(range(9)) and rows[1].tolist() == list(range(88, 97))


def test_lr_schedule_warmup_cosine_floor() -> None:
    lrs = [lr_at(s, 1.0, 110, 10, 0.1) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.55)  # half way down the cosine
    assert min(lrs) >= 0.1 and lr_at(110, 1.0, 110, 10, 0.1) == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
