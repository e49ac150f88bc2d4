"""Weighted mixtures: weights realised exactly enough, a pure function of (seed, position), so resume
and world-size changes draw the same samples; exhaustion policy; config and CRD mirror."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tokensmith.core.errors import ConfigError
from tokensmith.trainer.config import DataConfig, TrainerConfig, resolve_config
from tokensmith.trainer.mixture import Mixture, SourceSpec
from tokensmith.trainer.sampler import BatchPlan


def _mix(weights: list[float], sizes: list[int] | None = None, seed: int = 7) -> Mixture:
    sizes = sizes or [1000] * len(weights)
    names = [f"s{i}" for i in range(len(weights))]
    return Mixture([SourceSpec(n, w, k) for n, w, k in zip(names, weights, sizes, strict=True)], seed)


def test_seventy_thirty_realised_within_one_percent_over_1000_samples() -> None:
    mixture = _mix([0.7, 0.3], [5000, 800])
    source, _ = mixture.draw(np.arange(1000))
    shares = np.bincount(source, minlength=2) / 1000
    assert abs(shares[0] - 0.7) < 0.01 and abs(shares[1] - 0.3) < 0.01, shares
    # and over every prefix and every window of one global batch (64 samples), within two samples
    for start in range(0, 1000 - 64, 37):
        window = np.bincount(source[start : start + 64], minlength=2)
        assert abs(window[0] - 0.7 * 64) < 2, (start, window)


@pytest.mark.parametrize(
    ("weights", "seed"),
    [([0.7, 0.3], 0), ([0.7, 0.3], 99), ([1, 1, 1], 3), ([5, 3, 2], 4), ([0.01, 0.99], 5), ([1, 2, 3, 4], 6)],
)
def test_counts_are_closed_form_and_match_the_draws(weights: list[float], seed: int) -> None:
    mixture = _mix(weights, seed=seed)
    source, rank = mixture.assign(np.arange(3000))
    total = sum(weights)
    for prefix in (0, 1, 2, 17, 500, 2999, 3000):
        counts = mixture.counts(prefix)
        assert counts.tolist() == np.bincount(source[:prefix], minlength=len(weights)).tolist()
        assert counts.sum() == prefix
        for j, w in enumerate(weights):  # off by less than j + 1 samples (one per level of the hierarchy)
            assert abs(counts[j] - prefix * w / total) < j + 1, (prefix, j, counts)
    for j in range(len(weights)):  # a source's k-th sample has rank k: no rank skipped or repeated
        assert rank[source == j].tolist() == list(range(int((source == j).sum())))


def test_every_window_of_a_source_once_per_its_epoch() -> None:
    mixture = _mix([0.75, 0.25], [30, 11])
    source, window = mixture.draw(np.arange(4 * 44))
    small = window[source == 1]
    for epoch in range(len(small) // 11):
        assert sorted(small[epoch * 11 : (epoch + 1) * 11].tolist()) == list(range(11))
    assert mixture.epochs_needed(4 * 44) == pytest.approx([132 / 30, 44 / 11])


def test_draws_depend_on_seed_and_position_only() -> None:
    a = _mix([0.6, 0.4], seed=1).draw(np.arange(200))
    again = _mix([0.6, 0.4], seed=1).draw(np.arange(200))
    other = _mix([0.6, 0.4], seed=2).draw(np.arange(200))
    assert all((x == y).all() for x, y in zip(a, again, strict=True))
    assert any((x != y).any() for x, y in zip(a, other, strict=True))
    # reading positions in any order or chunking (a resumed run) gives the same answers
    shuffled = np.random.default_rng(0).permutation(200)
    s, w = _mix([0.6, 0.4], seed=1).draw(shuffled)
    assert (s == a[0][shuffled]).all() and (w == a[1][shuffled]).all()


def _sequence(mixture: Mixture, plan: BatchPlan, steps: range) -> list[list[tuple[int, int]]]:
    """Per step, the (source, window) pairs of every DP rank and micro-step, in position order."""
    out = []
    for step in steps:
        drawn: dict[int, tuple[int, int]] = {}
        for micro in range(plan.accumulation):
            for rank in range(plan.world_size):
                positions = plan.positions(step * plan.global_batch, rank, micro)
                for p, s, w in zip(positions, *mixture.draw(positions), strict=True):
                    drawn[int(p)] = (int(s), int(w))
        out.append([drawn[p] for p in sorted(drawn)])
    return out


def test_resume_and_world_size_change_continue_the_same_sequence() -> None:
    mixture = _mix([0.7, 0.3], [400, 90], seed=11)
    straight = _sequence(mixture, BatchPlan(4, 2, 2), range(10))
    resumed = _sequence(mixture, BatchPlan(4, 2, 2), range(6)) + _sequence(
        mixture, BatchPlan(4, 2, 2), range(6, 10)
    )
    shrunk = _sequence(mixture, BatchPlan(4, 2, 2), range(6)) + _sequence(
        mixture, BatchPlan(4, 1, 4), range(6, 10)
    )
    grown = _sequence(mixture, BatchPlan(2, 8, 1), range(10))
    assert straight == resumed == shrunk == grown


def test_exhaustion_policy_names_the_source_and_the_fix() -> None:
    mixture = Mixture([SourceSpec("web", 0.7, 1000), SourceSpec("books", 0.3, 100, epochs=2)], 0)
    assert mixture.exhaustion_problems(600) == []  # books: 180 samples, 1.8 epochs
    (problem,) = mixture.exhaustion_problems(1000)  # books: 300 samples, 3 epochs
    assert "'books'" in problem and "3.00 times" in problem and "epochs=2" in problem


def test_data_config_sources_and_shorthand() -> None:
    shorthand = DataConfig(train_path="/d/train")
    (only,) = shorthand.training_sources()
    assert only.path == "/d/train" and only.weight == 1 and only.label == "train"
    mixed = DataConfig.model_validate(
        {
            "sources": [
                {"path": "/d/web/train", "weight": 0.7},
                {"path": "/d/code", "weight": 0.3, "name": "py"},
            ]
        }
    )
    assert [s.label for s in mixed.training_sources()] == ["web", "py"]
    with pytest.raises(ValueError, match="not both"):
        DataConfig.model_validate({"train_path": "/x", "sources": [{"path": "/y"}]})
    with pytest.raises(ValueError, match="unique"):
        DataConfig.model_validate({"sources": [{"path": "/a/train"}, {"path": "/a/train"}]})
    with pytest.raises(ValueError):
        DataConfig.model_validate({"sources": [{"path": "/a", "weight": 0}]})
    cfg = resolve_config(sets=["data.sources=[{path: /a, weight: 2}, {path: /b, name: bee}]"])
    assert [s.label for s in cfg.data.training_sources()] == ["a", "bee"]


def _shards(folder: Path, tokens: int, vocab: int = 64, tokenizer: str | None = None) -> Path:
    from tokensmith.trainer.data.shards import write_shards

    folder.mkdir(parents=True)
    rng = np.random.default_rng(tokens)
    docs = [[*rng.integers(0, vocab - 1, 50).tolist(), vocab - 1] for _ in range(tokens // 51)]
    if tokenizer is not None:
        (folder / "tokenizer.json").write_text(tokenizer)
    write_shards(folder, docs, vocab, vocab - 1, tokenizer="tokenizer.json" if tokenizer else None)
    return folder


def test_preflight_reads_every_source_and_refuses_what_cannot_work(tmp_path: Path) -> None:
    from tokensmith.trainer.sources import open_training_data

    web = _shards(tmp_path / "web", 5100, tokenizer='{"t": 1}')
    books = _shards(tmp_path / "books", 1020, tokenizer='{"t": 1}')
    other = _shards(tmp_path / "other", 1020, tokenizer='{"t": 2}')
    base = {
        "model": {
            "preset": "tiny",
            "vocab_size": 64,
            "seq_len": 16,
            "d_model": 32,
            "n_heads": 2,
            "n_kv_heads": 2,
        },
        "train": {"max_steps": 10, "micro_batch": 2, "global_batch_tokens": 16 * 8},
    }

    def config(*sources: dict) -> TrainerConfig:
        return TrainerConfig.model_validate({**base, "data": {"sources": list(sources)}})

    data = open_training_data(config({"path": str(web), "weight": 0.7}, {"path": str(books), "weight": 0.3}))
    assert data.names == ["web", "books"]
    rows, source, _ = data.batch(np.arange(40))
    assert rows.shape == (40, 17) and set(source.tolist()) == {0, 1}
    assert data.realised_tokens(80, 16) == {"web": 56 * 16, "books": 24 * 16}
    # books: 63 windows, 80 samples x 0.3 = 24 draws fit in one epoch; 0.9 of 80 = 72 do not
    open_training_data(
        config({"path": str(web), "weight": 0.7}, {"path": str(books), "weight": 0.3, "epochs": 1})
    )
    with pytest.raises(ConfigError, match=r"'books' would be read 1\.14 times .* epochs=1"):
        open_training_data(
            config({"path": str(web), "weight": 0.1}, {"path": str(books), "weight": 0.9, "epochs": 1})
        )
    with pytest.raises(ConfigError, match="different tokenizers"):
        open_training_data(config({"path": str(web)}, {"path": str(other)}))
    with pytest.raises(ConfigError, match=r"data.sources\[1\] \(missing\)"):
        open_training_data(config({"path": str(web)}, {"path": str(tmp_path / "missing")}))


def test_operator_spec_data_sources_mirror_the_trainer() -> None:
    from tokensmith.operator.spec import LLMTrainingJobSpec, effective_trainer_config

    spec = LLMTrainingJobSpec.model_validate(
        {
            "data": {
                "sources": [{"path": "/data/web/train", "weight": 0.7}, {"path": "/data/code", "weight": 0.3}]
            },
            "checkpoint": {"volume": {"persistentVolumeClaim": {"claimName": "ck"}}},
        }
    )
    cfg = effective_trainer_config(spec, "job")
    assert cfg.data.train_path is None
    assert [(s.label, s.weight) for s in cfg.data.training_sources()] == [("web", 0.7), ("code", 0.3)]


def test_realised_mixture_reaches_the_job_status() -> None:
    from tokensmith.operator.observe import apply_report
    from tokensmith.operator.spec import LLMTrainingJobStatus
    from tokensmith.trainer.reporting import progress_patch

    record = {"type": "progress", "step": 3, "tokens": 96, "source_tokens": {"web": 64, "code": 32}}
    status = apply_report(LLMTrainingJobStatus(), json.loads(json.dumps(record)))
    assert status.progress is not None and status.progress.source_tokens == {"web": 64, "code": 32}
    patch = progress_patch(3, 96, 1.0, source_tokens={"web": 64, "code": 32})
    assert patch["status"]["progress"]["sourceTokens"] == {"web": 64, "code": 32}
