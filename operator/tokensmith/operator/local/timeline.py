"""The goodput ledger over wall-clock time, for the local report's stacked timeline (pure; no I/O).

The ledger in the status (goodput.py) holds running totals only: a time series there would grow with
the run in every status patch (etcd caps an object at 1.5 MiB) and on a cluster Prometheus already
keeps one (`tokensmith_job_goodput`, `tokensmith_job_lost_gpu_hours{cause}`, metrics.py). So the local
runner keeps its own: after each reconcile it takes a `Sample` of the status' cumulative GPU-hours by
cause, and a `Recorder` writes one to `history.jsonl` only where the trend changes (which causes grow
or shrink), i.e. one record per contiguous segment, not per poll. The number of records grows with
the run's events (checkpoints, failures, restarts), not with its length; `downsample` caps what the
report plots.

Because the samples are cumulative, the segments between successive samples telescope: their sum per
cause is the last sample minus the first, so a timeline that starts at zero and ends at the final
status adds up to the ledger exactly (to float rounding), whatever samples were dropped in between.
Productive GPU-hours can shrink within a segment: a failure reclassifies the work done since the last
checkpoint from productive to `redone`, so the timeline shows what each hour turned out to be.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any

from tokensmith.operator.goodput import CAUSES
from tokensmith.operator.spec import LLMTrainingJobStatus

PRODUCTIVE = "productive"
KEYS = (PRODUCTIVE, *CAUSES)
RECORD = "ledger"  # the `type` of a sample's line in history.jsonl
MAX_POINTS = 2000  # samples plotted at most (first and last always kept)
_EPS = 1e-12  # GPU-hours: changes below this are float noise, not a trend


@dataclass(frozen=True)
class Sample:
    """Cumulative GPU-hours by key (`productive` and every lost cause) at a moment."""

    time: datetime
    hours: Mapping[str, float]

    def record(self) -> dict[str, Any]:
        return {"type": RECORD, "time": self.time.isoformat(), "gpu_hours": dict(self.hours)}

    @property
    def total(self) -> float:
        return sum(self.hours.values())


def sample(status: LLMTrainingJobStatus, now: datetime) -> Sample | None:
    """The status' ledger at `now` (None before the job started accounting)."""
    if status.productive_gpu_hours is None:
        return None
    hours = {PRODUCTIVE: float(status.productive_gpu_hours)}
    for key, value in status.lost_gpu_hours.items():
        hours[key] = float(value)
    return Sample(now, hours)


def from_record(rec: Mapping[str, Any]) -> Sample | None:
    """A sample from its history.jsonl line (None for anything unreadable)."""
    try:
        hours = {str(k): float(v) for k, v in dict(rec["gpu_hours"]).items()}
        return Sample(datetime.fromisoformat(str(rec["time"]).replace("Z", "+00:00")), hours)
    except (KeyError, TypeError, ValueError):
        return None


def trend(a: Sample, b: Sample) -> tuple[tuple[str, int], ...]:
    """Which keys grow (+1) or shrink (-1) from `a` to `b`."""
    keys = sorted(set(a.hours) | set(b.hours))
    out = []
    for k in keys:
        d = b.hours.get(k, 0.0) - a.hours.get(k, 0.0)
        if abs(d) > _EPS:
            out.append((k, 1 if d > 0 else -1))
    return tuple(out)


@dataclass
class Recorder:
    """Decides which samples to write: the first, and the end of every run of the same trend."""

    written: Sample | None = None
    last: Sample | None = None
    current: tuple[tuple[str, int], ...] = field(default_factory=tuple)

    def see(self, s: Sample) -> list[Sample]:
        """Samples to write now that `s` was seen (oldest first)."""
        if self.last is None:
            self.written = self.last = s
            return [s]
        step = trend(self.last, s)
        if not step and not self.current:  # idle and still idle: move the segment's end
            self.last = s
            return []
        if step == self.current:
            self.last = s
            return []
        out = [self.last] if self.last is not self.written else []
        self.written = self.last
        self.current = step
        self.last = s
        return out

    def flush(self) -> list[Sample]:
        """The open segment's end (at exit)."""
        if self.last is None or self.last is self.written:
            return []
        self.written = self.last
        return [self.last]


@dataclass(frozen=True)
class Segment:
    start: datetime
    end: datetime
    hours: dict[str, float]  # GPU-hours gained (or, for productive, possibly lost) by key


def series(
    samples: Sequence[Sample], final: Sample | None, start: datetime | None, max_points: int = MAX_POINTS
) -> list[Sample]:
    """The samples to plot: from zero at `start` (the job's start time) to `final` (the status the
    report is written from), time-ordered, at most `max_points` (first and last kept)."""
    points = sorted(samples, key=lambda s: s.time)
    if final is not None:
        if points and final.time < points[-1].time:
            final = Sample(points[-1].time, final.hours)
        if not points or dict(points[-1].hours) != dict(final.hours) or final.time > points[-1].time:
            points.append(final)
    if not points:
        return []
    first = points[0]
    if any(abs(v) > _EPS for v in first.hours.values()):
        at = start if start is not None and start < first.time else first.time
        points.insert(0, Sample(at, {k: 0.0 for k in first.hours}))
    return downsample(points, max_points)


def downsample(points: Sequence[Sample], max_points: int) -> list[Sample]:
    """At most `max_points` samples, evenly spread, first and last kept (sums stay exact: cumulative)."""
    if len(points) <= max_points or max_points < 2:
        return list(points)
    step = (len(points) - 1) / (max_points - 1)
    picked = sorted({round(i * step) for i in range(max_points)})
    return [points[i] for i in picked]


def segments(points: Sequence[Sample]) -> list[Segment]:
    """The increments between successive samples, by key."""
    out = []
    for a, b in pairwise(points):
        keys = dict.fromkeys([*a.hours, *b.hours])
        out.append(Segment(a.time, b.time, {k: b.hours.get(k, 0.0) - a.hours.get(k, 0.0) for k in keys}))
    return out


def totals(segs: Sequence[Segment]) -> dict[str, float]:
    """GPU-hours by key summed over the segments (equals the ledger: see the module docstring)."""
    out: dict[str, float] = {}
    for s in segs:
        for k, v in s.hours.items():
            out[k] = out.get(k, 0.0) + v
    return out
