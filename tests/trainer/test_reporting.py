"""Progress reporters: JSON lines for the local runner, merge patches to the job's status subresource."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tokensmith.trainer.reporting import (
    FileReporter,
    KubernetesReporter,
    MultiReporter,
    NullReporter,
    divergence_patch,
    make_reporter,
    merge,
)


class _Api:
    """A real HTTP server standing in for the API server: records PATCH requests, answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = status
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                api.requests.append(
                    {
                        "path": self.path,
                        "content_type": self.headers["Content-Type"],
                        "auth": self.headers.get("Authorization"),
                        "body": json.loads(body),
                    }
                )
                self.send_response(api.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def api() -> Iterator[_Api]:
    server = _Api()
    yield server
    server.server.shutdown()


def test_file_reporter_writes_the_documented_events(tmp_path: Path) -> None:
    path = tmp_path / "report.jsonl"
    r = FileReporter(path)
    r.progress(3, 768, 5.5, 1e-3, 1234.5)
    r.checkpoint(4, "/ck/step-00000004")
    r.done(8, 2048)
    r.close()
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["type"] for e in events] == ["progress", "checkpoint", "done"]
    assert events[0] | {"time": None} == {
        "type": "progress",
        "step": 3,
        "tokens": 768,
        "loss": 5.5,
        "lr": 1e-3,
        "tokens_per_s": 1234.5,
        "time": None,
    }
    assert events[1]["path"] == "/ck/step-00000004" and events[1]["time"].endswith("Z")


def test_kubernetes_reporter_patches_status_and_rate_limits(api: _Api, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("secret-1\n")
    r = KubernetesReporter(api.url, "team-a", "run-7", token, None, min_interval_s=60, total_tokens=10_000)
    r.progress(1, 256, 6.0, 1e-3, 100.0)
    r.progress(2, 512, 5.9, 1e-3, 100.0)  # inside the interval: dropped
    time.sleep(0.3)
    token.write_text("secret-2\n")  # rotated by the kubelet: re-read on every request
    r.checkpoint(2, "/ck/step-00000002")
    r.close()
    assert r.failures == 0
    assert [q["path"] for q in api.requests] == [
        "/apis/tokensmith.dev/v1alpha1/namespaces/team-a/llmtrainingjobs/run-7/status"
    ] * 2
    assert all(q["content_type"] == "application/merge-patch+json" for q in api.requests)
    assert [q["auth"] for q in api.requests] == ["Bearer secret-1", "Bearer secret-2"]
    progress = api.requests[0]["body"]["status"]["progress"]
    assert progress["step"] == 1 and progress["tokens"] == 256 and progress["loss"] == 6.0
    assert progress["totalTokens"] == 10_000 and progress["heartbeatTime"].endswith("Z")
    last = api.requests[1]["body"]["status"]["lastCheckpoint"]
    assert last["step"] == 2 and last["path"] == "/ck/step-00000002" and last["time"].endswith("Z")


def test_kubernetes_failures_are_logged_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failing = _Api(status=403)
    token = tmp_path / "token"
    token.write_text("t")
    r = KubernetesReporter(failing.url, "ns", "job", token, None, min_interval_s=0)
    r.progress(1, 1, 1.0, 1.0, 1.0)
    r.close()
    unreachable = KubernetesReporter("http://127.0.0.1:9", "ns", "job", token, None, timeout_s=1)
    unreachable.checkpoint(1, "/x")
    unreachable.close()
    failing.server.shutdown()
    assert r.failures == 1 and unreachable.failures == 1
    assert "could not report to the Kubernetes API" in caplog.text


def test_make_reporter_picks_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: _Api
) -> None:
    for var in ("TOKENSMITH_REPORT_FILE", "TOKENSMITH_JOB_NAME", "TOKENSMITH_JOB_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)
    assert isinstance(make_reporter(0), NullReporter)
    monkeypatch.setenv("TOKENSMITH_REPORT_FILE", str(tmp_path / "r.jsonl"))
    assert isinstance(make_reporter(0), FileReporter)
    assert isinstance(make_reporter(1), NullReporter)  # only rank 0 reports
    token = tmp_path / "sa" / "token"
    token.parent.mkdir()
    token.write_text("t")
    monkeypatch.setenv("TOKENSMITH_JOB_NAME", "j")
    monkeypatch.setenv("TOKENSMITH_JOB_NAMESPACE", "n")
    monkeypatch.setenv("TOKENSMITH_SA_TOKEN_FILE", str(token))
    monkeypatch.setenv("TOKENSMITH_KUBE_API", api.url)
    both = make_reporter(0)
    assert isinstance(both, MultiReporter) and len(both.reporters) == 2
    both.checkpoint(5, "/c")
    both.close()
    assert api.requests[0]["body"]["status"]["lastCheckpoint"]["step"] == 5


@pytest.mark.parametrize(("env", "attempt"), [("3", 3), (None, None), ("", None), ("x", None)])
def test_the_divergence_report_names_the_attempt(
    env: str | None, attempt: int | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: _Api
) -> None:
    """`status.divergence.attempt` from TOKENSMITH_ATTEMPT (both drivers set it): the operator then
    matches the report to its attempt without comparing clocks (rollback.py); absent when unknown."""
    if env is None:
        monkeypatch.delenv("TOKENSMITH_ATTEMPT", raising=False)
    else:
        monkeypatch.setenv("TOKENSMITH_ATTEMPT", env)
    token = tmp_path / "sa" / "token"
    token.parent.mkdir()
    token.write_text("t")
    for var, value in [("TOKENSMITH_JOB_NAME", "j"), ("TOKENSMITH_JOB_NAMESPACE", "n"),
                       ("TOKENSMITH_SA_TOKEN_FILE", str(token)), ("TOKENSMITH_KUBE_API", api.url),
                       ("TOKENSMITH_REPORT_FILE", str(tmp_path / "r.jsonl"))]:  # fmt: skip
        monkeypatch.setenv(var, value)
    both = make_reporter(0)
    both.diverged(6, "nonfinite", [48, 56])
    both.close()
    sent = api.requests[0]["body"]["status"]["divergence"]
    line = json.loads((tmp_path / "r.jsonl").read_text())
    for entry in (sent, line):
        assert entry.get("attempt") == attempt
        assert (entry["step"], entry["kind"], entry["samples"]) == (6, "nonfinite", [48, 56])
    assert "attempt" not in divergence_patch(6, "spike", [0, 8])["status"]["divergence"]


def test_merge_patch() -> None:
    a = {"status": {"progress": {"step": 1}}}
    b = {"status": {"lastCheckpoint": {"step": 1}, "progress": {"step": 2}}}
    assert merge(a, b) == {"status": {"progress": {"step": 2}, "lastCheckpoint": {"step": 1}}}
