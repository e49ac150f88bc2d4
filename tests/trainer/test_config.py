"""Trainer config: presets, --set, --print-config, and the bad inputs that must exit 78 with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tokensmith.cli import cli
from tokensmith.core.errors import EXIT_CONFIG, ConfigError
from tokensmith.trainer.config import TRAINER_PRESETS, TrainerConfig, known_keys, parse_value, resolve_config

from .conftest import tiny_sets

ISSUE_KEYS = [
    "data.train_path",
    "data.valid_path",
    "checkpoint.dir",
    "checkpoint.every_steps",
    "checkpoint.keep",
    "train.max_steps",
    "train.tokens",
    "train.seed",
    "train.micro_batch",
    "train.global_batch_tokens",
    "train.lr",
    "deepspeed.zero_stage",
    "model.preset",
]


def test_the_issue_keys_exist() -> None:
    assert set(ISSUE_KEYS) <= set(known_keys())


@pytest.mark.parametrize("preset", list(TRAINER_PRESETS))
def test_every_preset_resolves(preset: str) -> None:
    cfg = resolve_config(preset=preset)
    assert cfg.model.preset == preset
    assert cfg.total_steps() >= 1


def test_precedence_preset_then_file_then_set(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump({"train": {"lr": 5e-4, "seed": 7}, "model": {"n_layers": 3}}))
    cfg = resolve_config(file, "tiny", ["train.lr=2e-4", "train.tokens=1.5M", "checkpoint.keep=5"])
    assert cfg.train.lr == 2e-4  # --set beats the file
    assert cfg.train.seed == 7  # the file beats the preset default
    assert cfg.model.n_layers == 3 and cfg.model.d_model == 64  # file over the tiny preset
    assert cfg.train.tokens == 1_500_000
    assert cfg.checkpoint.keep == 5
    assert cfg.train.warmup_steps == TRAINER_PRESETS["tiny"]["train"]["warmup_steps"]


def test_a_new_model_preset_replaces_the_model_section() -> None:
    cfg = resolve_config(preset="tiny", sets=["model.preset=gpt2-124m"])
    assert (cfg.model.n_layers, cfg.model.norm, cfg.model.position) == (12, "layernorm", "learned")


def test_parse_value() -> None:
    assert parse_value("7B") == 7_000_000_000
    assert parse_value("3e-4") == 3e-4
    assert parse_value("true") is True
    assert parse_value("gpt2-124m") == "gpt2-124m"


def test_steps_from_tokens_and_accumulation() -> None:
    cfg = resolve_config(preset="tiny", sets=["train.tokens=10000", "train.global_batch_tokens=4096"])
    assert cfg.total_steps() == 3  # rounded up: the budget is reached
    assert cfg.grad_accumulation(2) == 2  # 32 sequences / (8 x 2)
    with pytest.raises(ConfigError, match=r"multiple of train\.micro_batch x data-parallel"):
        cfg.grad_accumulation(3)


def test_print_config_round_trips() -> None:
    result = CliRunner().invoke(
        cli, ["train", "--preset", "tiny", "--set", "train.lr=0.002", "--print-config"]
    )
    assert result.exit_code == 0, result.output
    cfg = TrainerConfig.model_validate(yaml.safe_load(result.output))
    assert cfg.train.lr == 0.002 and cfg.model.preset == "tiny"
    as_json = CliRunner().invoke(cli, ["train", "--preset", "tiny", "--print-config", "--format", "json"])
    assert '"zero_stage": 2' in as_json.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "gpt5"], "unknown preset 'gpt5'; known presets: tiny"),
        (["--preset", "tiny", "--set", "model.preset=gpt5"], "unknown model preset 'gpt5'"),
        (["--preset", "tiny", "--set", "model.d_model=66"], "d_model (66) must be divisible by n_heads (4)"),
        (["--preset", "tiny", "--set", "trian.lr=1"], "unknown key 'trian.lr'; did you mean train.lr?"),
        (["--preset", "tiny", "--set", "train.lr"], "expected dotted.key=value"),
        (["--preset", "tiny", "--set", "train.lr=-1"], "train.lr: Input should be greater than 0"),
        (["--config", "/nonexistent/run.yaml"], "config file /nonexistent/run.yaml does not exist"),
    ],
)
def test_bad_config_exits_78_with_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["train", *args])
    assert result.exit_code == EXIT_CONFIG, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_data_path_exits_78(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["train", "--preset", "tiny", "--set", f"data.train_path={tmp_path / 'nowhere'}", "--nproc", "1"]
    )
    assert result.exit_code == EXIT_CONFIG, result.output
    assert "data.train_path" in result.output and "does not exist" in result.output
    no_path = CliRunner().invoke(cli, ["train", "--preset", "tiny", "--nproc", "1"])
    assert no_path.exit_code == EXIT_CONFIG
    assert "set data.train_path" in no_path.output


def test_global_batch_not_a_multiple_of_micro_batch_times_world_exits_78(
    pydoc_data: Path, tmp_path: Path
) -> None:
    # 256 tokens / 32 = 8 sequences; micro 4 x 3 processes = 12 does not divide 8.
    args = ["train", *tiny_sets(pydoc_data, tmp_path / "ck", **{"train.max_steps": 1}), "--nproc", "3"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == EXIT_CONFIG, result.output
    expect = "must be a multiple of train.micro_batch x data-parallel degree (4 x 3 = 12 sequences"
    assert expect in result.output


def test_vocabulary_larger_than_the_model_exits_78(pydoc_data: Path, tmp_path: Path) -> None:
    args = tiny_sets(pydoc_data, tmp_path / "ck", **{"train.max_steps": 1, "model.vocab_size": 100})
    result = CliRunner().invoke(cli, ["train", *args, "--nproc", "1"])
    assert result.exit_code == EXIT_CONFIG
    assert "set model.vocab_size >= 512" in result.output


def test_no_budget_exits_78(pydoc_data: Path, tmp_path: Path) -> None:
    args = tiny_sets(pydoc_data, tmp_path / "ck", **{"train.tokens": "null"})
    result = CliRunner().invoke(cli, ["train", *args, "--nproc", "1"])
    assert result.exit_code == EXIT_CONFIG
    assert "set train.tokens" in result.output
