"""Weighted multi-source mixtures: which source, and which of its windows, every sample position reads.

A pure function of (seed, global sample position). The trainer's `BatchPlan` maps (step, data-parallel
rank, data-parallel size, micro-step) to global positions, so the mixture is a pure function of
(seed, step, DP rank, DP size) too: a resumed run (any world size) draws the same sequence.

How positions are dealt to sources: a hierarchy of Beatty sequences (Beatty 1926; the "balanced words"
of Lothaire 2002, ch. 2). Source 0 takes position q when floor((q + 1) f0 + s0) > floor(q f0 + s0), with
f0 = w0 / 1 its share; the positions it leaves, renumbered 0, 1, 2, ..., are dealt the same way to
source 1 with f1 = w1 / (w1 + ... + wK), and so on; the last source takes what is left. Consequences:

- the number of samples source j contributed to positions [0, P) has a closed form (no state, no scan),
  and differs from P x w_j by less than j + 1: every window of positions, a single global batch
  included, carries the configured mixture to within a sample or two per source (a random draw per
  position would be off by sqrt(P w (1 - w)), about 1.4 % of 1,000 samples at w = 0.7);
- within a source, its k-th sample reads window `permute(k mod n, n, seed_j, k div n)` (the sampler's
  Feistel permutation, a new one per epoch of that source), so each source is shuffled on its own and
  every window of a source is read once per epoch of that source.

The offsets s_j and the per-source seeds derive from (seed, source name), so renaming or reordering
sources changes their order but adding data to one source changes no other source's order.
Megatron-LM's `BlendedDataset` deals samples by the same "largest deficit first" idea, sequentially
with an index built up front; the closed form here needs no index and scales to any run length.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tokensmith.trainer.sampler import _mix, sample_ids


@dataclass(frozen=True)
class SourceSpec:
    """One source as the mixture sees it: name, weight (any positive scale), windows, epochs allowed."""

    name: str
    weight: float
    num_samples: int
    epochs: float | None = None


def _offset(seed: int, name: str) -> tuple[float, int]:
    """(Beatty offset in [0, 1), per-source permutation seed) from (seed, name)."""
    key = (seed * 0x9E3779B1 + zlib.crc32(name.encode())) & 0xFFFFFFFFFFFFFFFF
    mixed = int(_mix(np.array([key], dtype=np.uint64))[0])
    return (mixed >> 11) / float(1 << 53), mixed & 0x7FFFFFFF


class Mixture:
    """Deals global sample positions to weighted sources (see the module docstring)."""

    def __init__(self, sources: Sequence[SourceSpec], seed: int) -> None:
        if not sources:
            raise ValueError("a mixture needs at least one source")
        if any(s.weight <= 0 for s in sources):
            raise ValueError("every source weight must be > 0")
        self.sources = list(sources)
        self.seed = seed
        total = sum(s.weight for s in sources)
        self.weights = np.array([s.weight / total for s in sources], dtype=np.float64)
        # f_j: source j's share of what sources j.. take (the last one takes everything left).
        tails = np.cumsum(self.weights[::-1])[::-1]
        self.fractions = self.weights / tails
        derived = [_offset(seed, s.name) for s in sources]
        self.offsets = np.array([d[0] for d in derived], dtype=np.float64)
        self.source_seeds = [d[1] for d in derived]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def _level_count(self, j: int, q: np.ndarray) -> np.ndarray:
        """How many of a level's first q positions source j takes: floor(q f + s) - floor(s)."""
        f, s = self.fractions[j], self.offsets[j]
        return (np.floor(q * f + s) - np.floor(s)).astype(np.int64)

    def counts(self, position: int) -> np.ndarray:
        """Samples each source contributed to positions [0, position) (int64, one per source)."""
        out = np.zeros(len(self.sources), dtype=np.int64)
        rest = np.array([position], dtype=np.float64)
        for j in range(len(self.sources) - 1):
            taken = self._level_count(j, rest)
            out[j] = taken[0]
            rest = rest - taken
        out[-1] = int(rest[0])
        return out

    def assign(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source index, rank of the sample within its source) for each global position."""
        pos = np.asarray(positions, dtype=np.int64)
        source = np.full(pos.shape, len(self.sources) - 1, dtype=np.int64)
        rank = np.zeros(pos.shape, dtype=np.int64)
        q = pos.astype(np.float64)  # index of each position within the current level
        undecided = np.ones(pos.shape, dtype=bool)
        for j in range(len(self.sources) - 1):
            before = self._level_count(j, q)
            takes = (self._level_count(j, q + 1) > before) & undecided
            source[takes] = j
            rank[takes] = before[takes]
            undecided &= ~takes
            q = q - before  # the position's index among those the later sources share
        rank[undecided] = q[undecided].astype(np.int64)
        return source, rank

    def draw(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source index, window index within that source) for each global position."""
        source, rank = self.assign(positions)
        window = np.empty_like(rank)
        for j in np.unique(source):
            sel = source == j
            n = self.sources[int(j)].num_samples
            window[sel] = sample_ids(rank[sel], n, self.source_seeds[int(j)])
        return source, window

    def epochs_needed(self, positions: int) -> list[float]:
        """Passes over each source that positions [0, positions) make."""
        return [
            float(c) / s.num_samples if s.num_samples else float("inf")
            for c, s in zip(self.counts(positions), self.sources, strict=True)
        ]

    def exhaustion_problems(self, positions: int) -> list[str]:
        """One message per source whose `epochs` limit the run would exceed (empty: the run fits)."""
        found = []
        for spec, needed, count in zip(
            self.sources, self.epochs_needed(positions), self.counts(positions), strict=True
        ):
            if spec.num_samples == 0:
                found.append(f"source {spec.name!r} holds no full sequence")
            elif spec.epochs is not None and needed > spec.epochs + 1e-12:
                found.append(
                    f"source {spec.name!r} would be read {needed:.2f} times ({count} samples of its "
                    f"{spec.num_samples}) but allows epochs={spec.epochs:g}"
                )
        return found
