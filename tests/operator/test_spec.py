"""The LLMTrainingJob models: aliases, precedence over the embedded trainer config, manifests, bad input."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tokensmith.operator.spec import (
    LLMTrainingJobSpec,
    LLMTrainingJobStatus,
    build_manifest,
    effective_trainer_config,
    format_validation_error,
    parse_manifest,
    status_to_dict,
)

CKPT = {"volume": {"persistentVolumeClaim": {"claimName": "ckpt"}}}


def test_camel_case_on_the_wire_snake_case_in_python() -> None:
    spec = LLMTrainingJobSpec.model_validate(
        {"checkpoint": CKPT, "cluster": {"nodes": 4, "gpusPerNode": 8}, "budget": {"maxGPUHours": 10}}
    )
    assert spec.cluster.gpus_per_node == 8
    assert spec.budget.max_gpu_hours == 10
    assert spec.world_size == 32
    doc = build_manifest("j", spec, namespace="ml")
    assert doc["apiVersion"] == "tokensmith.dev/v1alpha1" and doc["kind"] == "LLMTrainingJob"
    assert doc["spec"]["cluster"] == {"nodes": 4}  # gpusPerNode 8 is the default: left out
    assert doc["spec"]["budget"] == {"maxGPUHours": 10.0}
    meta, again = parse_manifest(doc)
    assert meta["name"] == "j" and again == spec


def test_job_level_sections_override_the_embedded_trainer_config() -> None:
    spec = LLMTrainingJobSpec.model_validate(
        {
            "checkpoint": {**CKPT, "everySteps": 50, "keep": 2},
            "model": {"preset": "tiny", "n_layers": 3},
            "data": {"trainPath": "/data/train", "tokens": 1_000_000},
            "parallelism": {"zeroStage": 1, "microBatch": 4},
            "trainer": {"model": {"preset": "gpt2-124m"}, "train": {"tokens": 5, "lr": 3e-4}},
        }
    )
    cfg = effective_trainer_config(spec, job_name="myjob")
    assert cfg.model.n_layers == 3 and cfg.model.d_model == 64  # spec.model replaces trainer.model
    assert cfg.data.train_path == "/data/train"
    assert cfg.train.tokens == 1_000_000 and cfg.train.lr == 3e-4  # untouched fields kept
    assert cfg.deepspeed.zero_stage == 1 and cfg.train.micro_batch == 4
    assert cfg.checkpoint.dir == "/checkpoints/myjob"
    assert cfg.checkpoint.every_steps == 50 and cfg.checkpoint.keep == 2


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"checkpoint": CKPT, "cluster": {"nodes": 0}}, "spec.cluster.nodes"),
        ({"checkpoint": CKPT, "budget": {"maxGPUHours": -1}}, "spec.budget.maxGPUHours"),
        ({"checkpoint": CKPT, "model": {"preset": "gpt-9"}}, "unknown model preset 'gpt-9'"),
        ({}, "spec.checkpoint: Field required"),
        ({"checkpoint": {"volume": {}}}, "must name exactly one volume source"),
        ({"checkpoint": CKPT, "budget": {"maxCostUSD": 5}}, "needs budget.pricePerGPUHour"),
        ({"checkpoint": CKPT, "cluster": {"nodse": 2}}, "spec.cluster.nodse: Extra inputs"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: dict, expected: str) -> None:
    with pytest.raises(ValidationError) as err:
        LLMTrainingJobSpec.model_validate(spec)
    assert expected in format_validation_error(err.value)


def test_status_field_names_are_the_documented_ones() -> None:
    status = LLMTrainingJobStatus.model_validate(
        {
            "phase": "Running",
            "progress": {"step": 3, "tokens": 300, "loss": 2.5, "heartbeatTime": "2026-01-01T00:00:00Z"},
            "lastCheckpoint": {"step": 2, "path": "/ck/step-2"},
            "evaluations": [{"step": 2, "results": {"ppl": 9.1}, "job": "j-eval-2"}],
            "gpuHours": 1.5,
            "costUSD": 3.0,
        }
    )
    doc = status_to_dict(status)
    for key in (
        "phase",
        "conditions",
        "restarts",
        "attempt",
        "progress",
        "lastCheckpoint",
        "gpuHours",
        "costUSD",
    ):
        assert key in doc
    assert doc["progress"]["heartbeatTime"].startswith("2026-01-01T00:00:00")
    assert doc["evaluations"][0] == {
        "step": 2,
        "job": "j-eval-2",
        "phase": "Running",
        "results": {"ppl": 9.1},
    }


def test_manifest_with_wrong_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected apiVersion"):
        parse_manifest({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {}})


def test_status_tolerates_unknown_fields_and_a_corrupted_field_keeps_the_rest() -> None:
    from tokensmith.operator.handlers import read_status

    st = LLMTrainingJobStatus.model_validate({"phase": "Running", "restarts": 2, "mfu": 0.41})
    assert st.restarts == 2
    kept = read_status({"phase": "Running", "restarts": 3, "attempt": 4, "progress": {"step": "many"}})
    assert (kept.phase, kept.restarts, kept.attempt, kept.progress) == ("Running", 3, 4, None)
