"""Skipping an optimizer step through DeepSpeed's own overflow path leaves weights and Adam's moments
untouched under ZeRO 0-3, the next step trains normally, and the pre-step gradient norm share equals
DeepSpeed's own global norm. Real DeepSpeed on CPU, in a fresh interpreter (one process, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, socket
    import torch, deepspeed, deepspeed.ops
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    deepspeed.init_distributed(dist_backend="gloo", verbose=False)
    from tokensmith.trainer.skipstep import local_grad_square, skip_optimizer_step

    def trial(stage):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1))
        opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
        cfg = {"train_batch_size": 4, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2,
               "gradient_clipping": 1.0, "zero_optimization": {"stage": stage},
               "zero_allow_untested_optimizer": True}
        eng, o, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=cfg)
        inner = getattr(o, "optimizer", o)
        def weights():
            with deepspeed.zero.GatheredParameters(list(model.parameters()), enabled=stage == 3):
                return [p.detach().clone() for p in model.parameters()]
        def moments():
            return [(v["exp_avg"].clone(), v["exp_avg_sq"].clone()) for v in inner.state.values()]
        def step(bad):
            for micro in range(2):
                loss = eng(torch.randn(2, 8)).pow(2).mean()
                if bad and micro == 1:
                    loss = loss * float("nan")
                eng.backward(loss)
                if micro == 1:
                    square = float(local_grad_square(eng, 1))
                    if bad:
                        skip_optimizer_step(eng)
                        return square
                eng.step()
            return square
        out = {"norm": step(False) ** 0.5, "ds_norm": eng.get_global_grad_norm()}
        w, m = weights(), moments()
        out["nan_square"] = str(step(True))
        w2, m2 = weights(), moments()
        out["weights_same"] = all(torch.equal(a, b) for a, b in zip(w, w2))
        out["moments_same"] = all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(m, m2))
        out["skipped"] = eng.skipped_steps
        step(False)
        w3 = weights()
        out["trains_after"] = any(not torch.equal(a, b) for a, b in zip(w2, w3))
        out["finite_after"] = all(bool(torch.isfinite(a).all()) for a in w3)
        return out

    print("RESULT " + json.dumps({s: trial(s) for s in (0, 1, 2, 3)}, default=float))
    """
)


def test_skip_leaves_state_untouched_under_every_zero_stage(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, done.stderr[-3000:]
    results = json.loads(line.removeprefix("RESULT "))
    for stage, r in results.items():
        assert r["nan_square"] == "nan", stage
        assert r["weights_same"] and r["moments_same"], (stage, r)
        assert r["skipped"] == 1 and r["trains_after"] and r["finite_after"], (stage, r)
        if r["ds_norm"] is not None:  # DeepSpeed reports no norm without ZeRO
            assert r["norm"] == pytest.approx(r["ds_norm"], rel=1e-5), (stage, r)
    assert results["0"]["ds_norm"] is None and results["2"]["ds_norm"] is not None
