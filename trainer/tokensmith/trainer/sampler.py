"""Which sample each process reads at each step: a pure function of (seed, position, rank, world size).

The training stream is cut into `num_samples = (num_tokens - 1) // seq_len` windows of `seq_len + 1`
tokens (inputs plus the next-token targets; documents are packed back to back and separated by their
EOS token, as GPT-2/3 and nanoGPT train). Global sample *positions* 0, 1, 2, ... map to window indices
through one pseudo-random permutation per epoch, a keyed Feistel network over [0, num_samples) with
cycle walking (Black & Rogaway 2002, "Ciphers with Arbitrary Finite Domains"): O(1) memory and O(1)
work per index, so it scales to billions of samples without materialising a permutation.

Optimizer step s consumes the positions [p_s, p_s + G) where G = global batch in sequences and p_s the
data position (the number of samples consumed before it). Within a step, micro-step a of rank r reads
positions p_s + a x micro x W + r x micro + [0, micro). The set of samples of a step therefore does
not depend on the world size W, and the data position after step s is p_s + G whatever W was: a run
resumed on a different number of processes continues exactly where the last one stopped, with no
sample repeated or skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_ROUNDS = 6


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea & Flood 2014): a fast 64-bit avalanche."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _round_keys(seed: int, epoch: int) -> list[np.uint64]:
    start = (seed * 0x9E3779B1 + epoch * 0x85EBCA77 + 1) & 0xFFFFFFFFFFFFFFFF
    base = _mix(np.array([start], dtype=np.uint64))
    keys = []
    for i in range(_ROUNDS):
        with np.errstate(over="ignore"):
            base = _mix(base + np.uint64(0x9E3779B97F4A7C15) + np.uint64(i))
        keys.append(np.uint64(base[0]))
    return keys


def permute(index: np.ndarray, n: int, seed: int, epoch: int = 0) -> np.ndarray:
    """A bijection of [0, n) chosen by (seed, epoch), applied to `index` (values in [0, n))."""
    idx = np.asarray(index, dtype=np.uint64)
    if n <= 1:
        return np.zeros_like(idx, dtype=np.int64)
    bits = max(2, int(n - 1).bit_length())
    bits += bits % 2  # balanced halves; the domain 2^bits is < 4n, so cycle walking ends quickly
    half = np.uint64(bits // 2)
    mask = np.uint64((1 << (bits // 2)) - 1)
    keys = _round_keys(seed, epoch)

    def encrypt(x: np.ndarray) -> np.ndarray:
        left, right = x >> half, x & mask
        for key in keys:
            left, right = right, left ^ (_mix(right ^ key) & mask)
        return (left << half) | right

    out = encrypt(idx)
    outside = out >= np.uint64(n)
    while outside.any():  # cycle walking: re-encrypt until the value falls inside [0, n)
        out[outside] = encrypt(out[outside])
        outside = out >= np.uint64(n)
    return out.astype(np.int64)


def sample_ids(positions: np.ndarray, num_samples: int, seed: int) -> np.ndarray:
    """Window index of each global sample position (epoch e = position // num_samples uses its own
    permutation, so every window is seen once per epoch)."""
    pos = np.asarray(positions, dtype=np.int64)
    epochs, offsets = np.divmod(pos, num_samples)
    out = np.empty_like(pos)
    for epoch in np.unique(epochs):
        sel = epochs == epoch
        out[sel] = permute(offsets[sel], num_samples, seed, int(epoch))
    return out


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step's samples are spread over processes and micro-steps."""

    micro_batch: int
    world_size: int
    accumulation: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.world_size * self.accumulation

    def positions(self, data_position: int, rank: int, micro_step: int) -> np.ndarray:
        """Global sample positions read by `rank` in `micro_step` of the step starting at `data_position`."""
        if not 0 <= rank < self.world_size or not 0 <= micro_step < self.accumulation:
            raise ValueError(f"rank {rank} / micro-step {micro_step} outside {self}")
        start = data_position + micro_step * self.micro_batch * self.world_size + rank * self.micro_batch
        return np.arange(start, start + self.micro_batch, dtype=np.int64)

    def step_positions(self, data_position: int) -> np.ndarray:
        """Every position of the step (all ranks, all micro-steps): [p, p + G)."""
        return np.arange(data_position, data_position + self.global_batch, dtype=np.int64)

    def local(self, step_positions: np.ndarray, rank: int, micro_step: int) -> np.ndarray:
        """The slice of a step's positions (from `take_positions`) that `rank` reads in `micro_step`:
        the same layout as `positions`, over positions that may have gaps."""
        start = micro_step * self.micro_batch * self.world_size + rank * self.micro_batch
        return step_positions[start : start + self.micro_batch]


def take_positions(start: int, count: int, skip: Sequence[Sequence[int]] = ()) -> np.ndarray:
    """The first `count` global sample positions >= `start` outside every skip range [a, b).

    The health policy's deterministic data skip (`data.skip_samples`): the positions a step reads depend
    only on where the step starts and on the skip list, so a replay reads the same samples, and the
    next data position is `last + 1`. Ranges behind `start` change nothing, so a skip list may grow
    between attempts without moving positions that were already consumed."""
    pieces: list[np.ndarray] = []
    need, p = count, start
    for a, b in sorted((int(r[0]), int(r[1])) for r in skip):
        if b <= p or need == 0:
            continue
        if a > p:
            n = min(need, a - p)
            pieces.append(np.arange(p, p + n, dtype=np.int64))
            need -= n
        p = max(p, b)
    if need:
        pieces.append(np.arange(p, p + need, dtype=np.int64))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


class TokenSource(Protocol):
    """What the sampler needs from a split (`tokensmith.trainer.data.shards.ShardSet` is one)."""

    @property
    def num_tokens(self) -> int: ...

    def tokens(self, start: int, length: int) -> np.ndarray: ...


class Windows:
    """Fixed-length training windows over a token source: window i is tokens [i L, i L + L + 1)."""

    def __init__(self, source: TokenSource, seq_len: int) -> None:
        self.source, self.seq_len = source, seq_len
        self.num_samples = max(0, (source.num_tokens - 1) // seq_len)

    def batch(self, ids: np.ndarray) -> np.ndarray:
        """[len(ids), seq_len + 1] int64 token windows."""
        rows = [self.source.tokens(int(i) * self.seq_len, self.seq_len + 1) for i in ids]
        return np.stack(rows).astype(np.int64) if rows else np.zeros((0, self.seq_len + 1), np.int64)
