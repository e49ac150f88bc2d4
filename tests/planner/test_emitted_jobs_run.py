"""Issue 12's promise: every job `tokensmith plan --emit-job` writes is one the operator accepts and the
trainer runs. The planner's search, the operator's spec check and the trainer's config validation all read
`tokensmith.planner.capability`; these tests prove they agree end to end, through the real commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from tokensmith.cli import cli
from tokensmith.operator import children
from tokensmith.operator.reconcile import check_spec
from tokensmith.operator.spec import effective_trainer_config, parse_manifest
from tokensmith.planner import capability, search
from tokensmith.planner.gpus import CATALOGUE
from tokensmith.planner.performance import ModelScalars
from tokensmith.planner.shapes import shape_for_params

BUDGETS_USD = ("1e4", "1e5", "1e6", "1e7", "1e8")


def _emit(gpu: str, budget: str, path: Path) -> Path:
    result = CliRunner().invoke(cli, ["plan", "--budget-usd", budget, "--gpu", gpu, "--emit-job", str(path)])
    assert result.exit_code == 0, f"{gpu} ${budget}: {result.output}"
    return path


@pytest.mark.parametrize("gpu", sorted(g.name for g in CATALOGUE.values()))
def test_every_emitted_job_passes_the_operator_and_the_trainer(gpu: str, tmp_path: Path) -> None:
    """`plan --emit-job` for $10k..$100M; each job goes through what `operator render` does (the spec check,
    then every child object and the first and last worker pod; the full render is the next test) and through
    the trainer's own validation with the gang's world size (exit 78 would mean a plan it refuses)."""
    layouts = set()
    for budget in BUDGETS_USD:
        manifest = yaml.safe_load(_emit(gpu, budget, tmp_path / f"{budget}.yaml").read_text())
        meta, spec = parse_manifest(manifest)
        assert check_spec(meta["name"], spec) is None, f"{gpu} ${budget}: {check_spec(meta['name'], spec)}"
        job = children.JobRef(name=meta["name"], namespace="default", uid="<job-uid>")
        objects = children.job_children(job, spec) + children.worker_pods(
            job, spec, 1, (0, spec.cluster.nodes - 1), children.Defaults()
        )
        assert objects and all(o["metadata"]["name"] for o in objects)
        cfg = effective_trainer_config(spec, meta["name"])
        cfg.grad_accumulation(spec.world_size)
        layouts.add((spec.parallelism.tensor, spec.parallelism.pipeline))
    # The grid reaches model-parallel plans (the point of the test), not only data parallelism.
    assert any(tp * pp > 1 for tp, pp in layouts), layouts


@pytest.mark.parametrize(("gpu", "budget"), [("A100-80GB", "1e4"), ("H100-SXM", "2e6"), ("H200", "1e8")])
def test_operator_render_of_an_emitted_job(gpu: str, budget: str, tmp_path: Path) -> None:
    """The user's path, both commands through the CLI (the issue's example budget among them)."""
    job = _emit(gpu, budget, tmp_path / "job.yaml")
    rendered = CliRunner().invoke(cli, ["operator", "render", str(job)])
    assert rendered.exit_code == 0, rendered.output
    _, spec = parse_manifest(yaml.safe_load(job.read_text()))
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # thousands of pods for the $100M plan
    pods = [o for o in yaml.load_all(rendered.stdout, Loader=loader) if o["kind"] == "Pod"]
    assert len(pods) == spec.cluster.nodes


@pytest.mark.parametrize("params", [1.3e9, 13e9, 70e9, 405e9])
def test_no_candidate_that_fits_breaks_a_trainer_rule(params: float) -> None:
    """Over the planner's whole search grid: every candidate it would consider (fits the GPU) passes the
    same `capability.problems` check the operator and trainer make, with the GPUs per node and world size."""
    gpu = CATALOGUE["h100-sxm"]
    model = ModelScalars.from_config(shape_for_params(params))
    grid = search.candidate_grid(search.gpu_count_grid(gpu.gpus_per_node, 4096))
    econ = search.Economics(price_per_gpu_hour=gpu.price_usd_hour)
    result = search.evaluate(grid, model, gpu, gpu.gpus_per_node, 20 * params, 4 * 2**20, econ)
    flat = search.flat_grid(grid)
    fits = np.flatnonzero(result["fits"])
    assert fits.size > 0
    for i in fits[:: max(1, fits.size // 2000)]:  # a spread sample keeps the test under a second
        tp, pp = int(flat["tp"][i]), int(flat["pp"][i])
        layout = capability.Layout.for_world(
            int(flat["gpus"][i]), tensor=tp, pipeline=pp, zero_stage=int(flat["zero"][i]),
            virtual_stages=int(flat["virtual"][i]),
        )  # fmt: skip
        found = capability.problems(
            layout, model.n_layers, model.n_heads, model.n_kv_heads,
            gpus_per_node=gpu.gpus_per_node, world_size=int(flat["gpus"][i]),
        )  # fmt: skip
        assert found == [], (layout, found)
