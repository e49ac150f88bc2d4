"""`tokensmith curate --executor ray`: the same stages through datatrove's Ray executor on a local Ray
instance that this module starts (2 CPUs, a small object store) and stops, leaving no Ray process behind.

- local and Ray give the same kept documents, shard contents and report counts;
- a Ray run whose driver is killed half-way (SIGKILL while the MinHash bucket tasks run) is re-run:
  finished tasks are skipped (their completion markers untouched), the result equals the local one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

pytestmark = pytest.mark.slow
# A localhost-only test instance: Ray's token authentication off for it and the drivers that join it.
RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}

# Every stage, MinHash with 4 bands (4 bucket tasks: each Ray task is a new actor process, seconds on 2
# busy cores); both executors get the same options.
OPTIONS = [
    "--vocab-size",
    "512",
    "--word-tokenizer",
    "regex",
    "--tasks",
    "2",
    "--workers",
    "2",
    "--no-progress",
]
OPTIONS += ["--set", "near_dedup.bands=4", "--set", "near_dedup.rows=8", "--valid-fraction", "0.25"]


def _processes_with(marker: str) -> list[int]:
    """Pids whose command line mentions `marker` (our Ray instance's private temp dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """`ray start --head --block` with 2 CPUs and an 80 MiB object store, in a private temp dir; stopped
    (SIGTERM to the process we started, then SIGKILL by pid to anything still using that temp dir)."""
    temp = tempfile.mkdtemp(prefix="tsrt-", dir="/tmp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray = str(Path(sys.executable).parent / "ray")
    command = [ray, "start", "--head", "--block", "--num-cpus", "2", "--object-store-memory", str(80 << 20)]
    command += ["--port", str(port), "--temp-dir", temp]
    command += ["--include-dashboard", "false", "--disable-usage-stats"]
    head = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=RAY_ENV
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [sys.executable, "-c", f"import ray; ray.init(address='{address}'); ray.shutdown()"],
                capture_output=True,
                timeout=120,
                env=RAY_ENV,
            )
            if probe.returncode == 0:
                break
            assert head.poll() is None, "ray start --head exited"
            time.sleep(1)
        else:
            pytest.fail("the local Ray instance did not come up in 120 s")
        yield address
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        time.sleep(1)
        for pid in _processes_with(temp):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert _processes_with(temp) == [], "Ray processes left behind"
        shutil.rmtree(temp, ignore_errors=True)


def _curate(
    source: Path, out: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "tokensmith.cli",
        "curate",
        str(source),
        "--out",
        str(out),
        *OPTIONS,
        *extra,
    ]
    return subprocess.run(
        [*command, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**RAY_ENV, **(env or {})},
    )


def _kept(out: Path) -> set[str]:
    texts = set()
    for path in (out / ".work" / "final").glob("*.jsonl"):
        texts |= {json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()}
    return texts


def _shards(out: Path) -> dict[str, bytes]:
    return {
        f"{split}/{p.name}": p.read_bytes()
        for split in ("train", "valid")
        for p in sorted((out / split).iterdir())
        if p.suffix in (".ds", ".index") or p.name.endswith(".ds.index")
    }


def _counts(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("documents_in", "documents_out", "tokens_out", "steps", "pii", "languages", "splits")
    return {k: report[k] for k in keys} | {"clusters": report["duplicate_clusters"]}


@pytest.fixture(scope="module")
def local_run(
    planted: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    source, _ = planted
    out = tmp_path_factory.mktemp("local") / "out"
    done = _curate(source, out)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"out": out, "report": json.loads(done.stdout), "source": source}


def test_local_and_ray_give_the_same_documents_shards_and_report(
    local_run: dict[str, Any], ray_address: str, tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    done = _curate(local_run["source"], out, "--executor", "ray", "--ray-address", ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on Ray" in done.stderr
    report = json.loads(done.stdout)
    assert _kept(out) == _kept(local_run["out"]) and len(_kept(out)) >= 5
    assert _shards(out) == _shards(local_run["out"]) != {}
    assert _counts(report) == _counts(local_run["report"])
    # every stage ran on Ray: the executor.json datatrove leaves in each stage has the Ray executor's fields
    for stage in (
        "filter",
        "exact_find",
        "exact_filter",
        "near_buckets",
        "near_cluster",
        "finalize",
        "tokenize",
    ):
        saved = json.loads((out / ".work" / "logs" / stage / "executor.json").read_text())
        assert saved["mem_per_cpu_gb"] == 0.5 and saved["cpus_per_task"] == 1, stage


def test_killed_ray_run_resumes_without_redoing_finished_tasks(
    local_run: dict[str, Any], ray_address: str, tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    ray_args = ("--executor", "ray", "--ray-address", ray_address)
    killed = _curate(local_run["source"], out, *ray_args, env={"TOKENSMITH_CURATE_KILL_AT": "near_buckets:2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    completions = out / ".work" / "logs"
    finished = {p: p.stat().st_mtime_ns for p in completions.glob("*/completions/*")}
    buckets_done = [p for p in finished if p.parent.parent.name == "near_buckets"]
    assert 2 <= len(buckets_done) < 4, buckets_done  # killed once two of the four bucket tasks were done
    assert not (out / "report.json").exists()

    again = _curate(local_run["source"], out, *ray_args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" in again.stderr
    for stage in ("filter", "exact_find", "exact_filter"):
        assert f"{stage}: done earlier, skipped" in again.stderr
    assert f"near_buckets: {4 - len(buckets_done)}/4 task(s) on Ray" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # no finished task was redone
    assert _kept(out) == _kept(local_run["out"])
    assert _shards(out) == _shards(local_run["out"])
    assert _counts(json.loads(again.stdout)) == _counts(local_run["report"])
