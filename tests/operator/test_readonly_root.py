"""The trainer and the evaluator run the way the operator's pods run them: the worker pod's and the
evaluation Job's own command and environment, as the pod's non-root uid/gid, on a read-only root
filesystem where only the pod's emptyDir mounts (/tmp, $HOME, /dev/shm) and the checkpoint volume are
writable. The "container" is a private mount namespace (unshare) with `/` remounted read-only and
setpriv dropping to the pod's user; it needs root on the test machine (CI runs as root) and is skipped
elsewhere. The real images are run the same way by the images' container tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokensmith.operator import children, hardening
from tokensmith.operator.spec import LLMTrainingJobSpec

REPO = Path(__file__).resolve().parents[2]
VOLUME = "/srv"  # the checkpoint volume's mount path (an existing, empty directory of the host)


def _private_ancestor(*paths: Path) -> Path | None:
    """The first folder on the way to `paths` that other users cannot enter (the pod's uid could not
    reach the interpreter or the sources there, e.g. a checkout inside a `mktemp -d` folder)."""
    import stat

    for path in paths:
        for folder in [*reversed(path.parents), path]:
            if folder.is_dir() and not folder.stat().st_mode & stat.S_IXOTH:
                return folder
    return None


def _hidden_by_the_sandbox(*paths: Path) -> Path | None:
    """A mount point of the pod's writable volumes (fresh emptyDirs in the sandbox) that holds one of
    `paths`: the sandbox would hide the interpreter or the sources (e.g. a checkout under /tmp)."""
    for mount in ("/tmp", hardening.HOME, "/dev/shm", VOLUME):
        if any(path == Path(mount) or Path(mount) in path.parents for path in paths):
            return Path(mount)
    return None


PRIVATE = _private_ancestor(Path(sys.executable).parent, REPO)
HIDDEN = _hidden_by_the_sandbox(Path(sys.executable).parent.resolve(), REPO)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        HIDDEN is not None,
        reason=f"this checkout lies under {HIDDEN}, where the sandbox mounts one of the pod's fresh volumes",
    ),
    pytest.mark.skipif(
        PRIVATE is not None,
        reason=f"the pod's uid cannot enter {PRIVATE} on the way to this checkout's venv and sources",
    ),
    pytest.mark.skipif(
        not (
            hasattr(os, "geteuid")
            and os.geteuid() == 0
            and shutil.which("unshare")
            and shutil.which("setpriv")
        ),
        reason="needs root, unshare and setpriv to build a read-only root filesystem",
    ),
]

JOB = children.JobRef(name="ro", namespace="ml", uid="6f1d7a2e-0000-4000-8000-000000000003")

# Inside a private mount namespace: the job's volume at /srv, a tmpfs for each emptyDir of the pod,
# Python's installation reachable by the unprivileged user, then `/` read-only and the pod's user.
SANDBOX = r"""
set -euo pipefail
work="$1"; uid="$2"; gid="$3"; shift 3
mount --bind "$work" /srv
if [ -d /root/.pyenv ] && [ "$(stat -c %a /root)" != 755 ]; then   # this machine's Python lives there
  mount --bind /root/.pyenv /opt && mount -t tmpfs -o mode=755 tmpfs /root
  mkdir /root/.pyenv && mount --bind /opt /root/.pyenv && umount /opt
fi
while read -r path; do
  [ -z "$path" ] && continue
  if [ ! -d "$path" ]; then mount -t tmpfs -o mode=755 tmpfs "$(dirname "$path")"; mkdir "$path"; fi
  mount -t tmpfs -o mode=1777 tmpfs "$path"
done < "$work/emptydirs"
mount -o remount,bind,ro /
if touch /etc/.tokensmith-probe 2>/dev/null; then echo "root filesystem is writable" >&2; exit 99; fi
exec setpriv --reuid "$uid" --regid "$gid" --clear-groups -- "$@"
"""


def _spec() -> LLMTrainingJobSpec:
    model = {"vocab_size": 512, "seq_len": 32, "d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 2}
    return LLMTrainingJobSpec.model_validate(
        {
            "data": {"trainPath": f"{VOLUME}/data/train", "validPath": f"{VOLUME}/data/valid"},
            "trainer": {
                "model": model,
                "train": {"max_steps": 4, "warmup_steps": 2, "precision": "fp32", "log_every_steps": 1},
            },
            "parallelism": {"zeroStage": 2, "microBatch": 4, "globalBatchTokens": 256},
            "cluster": {
                "nodes": 1,
                "gpusPerNode": 0,
                "nprocPerNode": 1,
                "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
            },
            "checkpoint": {
                "volume": {"persistentVolumeClaim": {"claimName": "ck"}},
                "mountPath": VOLUME,
                "everySteps": 4,
            },
            "evaluation": {"tasks": ["mmlu_local"], "limit": 2},
        }
    )


def _run_as_pod(pod: dict[str, Any], container: dict[str, Any], work: Path, env: dict[str, str]) -> str:
    """Run the container's command the way the kubelet would, in the sandbox; returns its output."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    empty = [m["mountPath"] for m in container["volumeMounts"] if "emptyDir" in volumes[m["name"]]]
    assert {"/tmp", hardening.HOME, "/dev/shm"} <= set(empty)
    (work / "emptydirs").write_text("\n".join(p for p in empty if p != "/dev/shm") + "\n")
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    pod_env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    venv = str(Path(sys.executable).parent)
    full_env = {"PATH": f"{venv}:/usr/bin:/bin", **pod_env, **env}
    command = ["env", "-i", *(f"{k}={v}" for k, v in full_env.items()), *container["command"]]
    sandbox = ["unshare", "--mount", "--propagation", "private", "bash", "-c", SANDBOX, "sandbox", str(work)]
    done = subprocess.run(
        [*sandbox, str(sc["runAsUser"]), str(sc["runAsGroup"]), *command],
        capture_output=True,
        text=True,
        timeout=480,
        cwd="/",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_trainer_and_evaluator_run_as_their_pods_on_a_read_only_root(tmp_path: Path) -> None:
    import pydoc_data.topics as topics

    work = tmp_path / "volume"
    work.mkdir()
    source = tmp_path / "pydoc.jsonl"
    source.write_text(
        "".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in sorted(topics.topics.items()))
    )
    curate = [sys.executable, "-m", "tokensmith.cli", "curate", str(source), "--out", str(work / "data")]
    curate += [
        "--vocab-size",
        "512",
        "--valid-fraction",
        "0.08",
        "--word-tokenizer",
        "regex",
        "--no-progress",
    ]
    for step in ("gopher_quality", "gopher_repetition", "c4", "fineweb"):
        curate += ["--skip", step]
    done = subprocess.run(curate, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    spec = _spec()

    # the ConfigMap's trainer.yaml, where the pod would see it (TOKENSMITH_CONFIG points there)
    config = children.trainer_config_map(JOB, spec)["data"][children.CONFIG_FILE]
    (work / "config").mkdir()
    (work / "config" / children.CONFIG_FILE).write_text(config)
    os.chmod(tmp_path, 0o755)
    for path in [work, *work.rglob("*")]:
        os.chmod(path, 0o777 if path.is_dir() else 0o666)

    worker = children.worker_pod(JOB, spec, 1, 0, children.Defaults())
    container = worker["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "tokensmith.operator.launch"]
    _run_as_pod(
        worker["spec"],
        container,
        work,
        # the rendezvous DNS name needs the cluster; the ConfigMap is mounted elsewhere here
        {"MASTER_ADDR": "127.0.0.1", "TOKENSMITH_CONFIG": f"{VOLUME}/config/{children.CONFIG_FILE}"},
    )
    step = work / JOB.name / "step-00000004"
    assert (step).is_dir(), sorted(p.name for p in (work / JOB.name).iterdir())

    evaluation = children.evaluation_job(
        JOB, spec, 4, f"{VOLUME}/{JOB.name}/step-00000004", "ro-eval-4", children.Defaults()
    )
    pod = evaluation["spec"]["template"]["spec"]
    _run_as_pod(pod, pod["containers"][0], work, {"CUDA_VISIBLE_DEVICES": ""})
    result = json.loads((work / JOB.name / "evals" / "step-4.json").read_text())
    assert "mmlu_local" in result["results"]
    assert yaml.safe_load(config)["checkpoint"]["dir"] == f"{VOLUME}/{JOB.name}"
