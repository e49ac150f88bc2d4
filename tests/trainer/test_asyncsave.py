"""Staging buffers of asynchronous saves: allocated before the first save (in the writer's thread),
reused by it, and a save that comes before the allocation finished waits for it."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from tokensmith.trainer.asyncsave import BackgroundWriter, Stager, leaves


def _state() -> dict[str, Any]:
    return {
        "module": {"w": torch.randn(4, 3), "b": torch.randn(3)},
        "optimizer": {"state": [torch.randn(7), (torch.randn(2, 2), 5)], "step": 3},
        "version": "x",
    }


def _skeleton(state: Any) -> list[tuple[tuple[int, ...], torch.dtype]]:
    return [(tuple(t.shape), t.dtype) for t in leaves(state)]


def test_preallocated_buffers_are_the_ones_the_first_save_fills() -> None:
    writer, stager, state = BackgroundWriter(), Stager(), _state()
    stager.allocate({"file.pt": _skeleton(state)}, writer)
    writer.wait()
    buffers = [b.data_ptr() for b in stager.buffers["file.pt"]]
    staged = stager.stage("file.pt", state)
    assert [t.data_ptr() for t in leaves(staged)] == buffers  # no new allocation
    assert stager.fresh_bytes == 0
    assert staged["version"] == "x" and staged["optimizer"]["state"][1][1] == 5
    for got, want in zip(leaves(staged), leaves(state), strict=True):
        assert torch.equal(got, want)
    state["module"]["w"].add_(1.0)  # the next optimizer step: the staged copy is private
    assert not torch.equal(staged["module"]["w"], state["module"]["w"])
    writer.close()


def test_a_save_before_the_allocation_finished_waits_for_it() -> None:
    writer, stager, state = BackgroundWriter(), Stager(), _state()
    gate = threading.Event()
    writer.submit(gate.wait)  # the writer is busy: the allocation queued behind cannot run yet
    stager.allocate({"file.pt": _skeleton(state)}, writer)
    result: dict[str, Any] = {}
    saver = threading.Thread(target=lambda: result.update(staged=stager.stage("file.pt", state)))
    saver.start()
    saver.join(timeout=0.3)
    assert saver.is_alive() and not result  # waiting, not staging into buffers being allocated
    gate.set()
    saver.join(timeout=10)
    assert not saver.is_alive()
    assert stager.fresh_bytes == 0  # it used the pre-allocated buffers
    for got, want in zip(leaves(result["staged"]), leaves(state), strict=True):
        assert torch.equal(got, want)
    writer.close()


def test_a_state_that_changed_shape_is_staged_into_fresh_buffers() -> None:
    writer, stager, state = BackgroundWriter(), Stager(), _state()
    stager.allocate({"file.pt": [((1,), torch.float32)]}, writer)  # e.g. a skipped first step
    writer.wait()
    staged = stager.stage("file.pt", state)
    assert stager.fresh_bytes == sum(t.numel() * t.element_size() for t in leaves(state))
    for got, want in zip(leaves(staged), leaves(state), strict=True):
        assert torch.equal(got, want)
    writer.close()


def test_a_failed_writer_that_skips_the_allocation_does_not_hang_the_next_save() -> None:
    writer, stager, state = BackgroundWriter(), Stager(), _state()

    def fail() -> None:
        raise OSError("disk full")

    writer.submit(fail)
    stager.allocate({"file.pt": _skeleton(state)}, writer)  # skipped: the queue stops after a failure
    staged = stager.stage("file.pt", state)  # returns (fresh buffers) instead of waiting forever
    for got, want in zip(leaves(staged), leaves(state), strict=True):
        assert torch.equal(got, want)
    with pytest.raises(RuntimeError, match="disk full"):
        writer.wait()
    writer.close()
