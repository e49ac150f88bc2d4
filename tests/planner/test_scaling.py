"""Scaling laws against the reference test vectors (reference/scaling-notes.md) and the property that
each law's compute-optimal point minimises its own loss on C = 6ND."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from tokensmith.planner import scaling
from tokensmith.planner.scaling import (
    CHINCHILLA,
    CHINCHILLA_REFIT,
    CHINCHILLA_ROUNDED,
    KAPLAN,
    TokensPerParamLaw,
    get_law,
    inference_aware_optimum,
    kaplan_frontier,
)

# (C, law, N*, D*, tokens/param, L* or None), Hoffmann rounded / TeX / Besiroglu; notes §1.2.
VECTORS = [
    (1e21, CHINCHILLA_ROUNDED, 1.824e9, 9.136e10, 50.1, 2.3289),
    (1e21, CHINCHILLA, 2.215e9, 7.526e10, 34.0, 2.2954),
    (1e21, CHINCHILLA_REFIT, 2.778e9, 5.999e10, 21.6, 2.3055),
    (5.76e23, CHINCHILLA_ROUNDED, 3.219e10, 2.982e12, 92.6, 1.9307),
    (5.76e23, CHINCHILLA, 4.031e10, 2.382e12, 59.1, 1.9184),
    (5.76e23, CHINCHILLA_REFIT, 7.225e10, 1.329e12, 18.4, 1.9744),
    (1e24, CHINCHILLA_ROUNDED, 4.130e10, 4.036e12, 97.7, None),
    (1e24, CHINCHILLA, 5.185e10, 3.214e12, 62.0, None),
    (1e24, CHINCHILLA_REFIT, 9.586e10, 1.739e12, 18.1, None),
    (3.8e25, CHINCHILLA_ROUNDED, 2.135e11, 2.967e13, 139, None),
    (3.8e25, CHINCHILLA, 2.729e11, 2.321e13, 85.1, None),
    (3.8e25, CHINCHILLA_REFIT, 6.187e11, 1.024e13, 16.5, None),
    (1e26, CHINCHILLA_ROUNDED, 3.305e11, 5.043e13, 153, None),
    (1e26, CHINCHILLA, 4.244e11, 3.927e13, 92.5, None),
    (1e26, CHINCHILLA_REFIT, 1.016e12, 1.641e13, 16.1, None),
]


@pytest.mark.parametrize(("compute", "law", "n", "d", "ratio", "loss"), VECTORS)
def test_chinchilla_optimum_matches_reference_vectors(compute, law, n, d, ratio, loss) -> None:
    opt = law.optimal(compute)
    # The vectors are printed to 4 significant figures: 0.3% tolerance.
    assert opt.params == pytest.approx(n, rel=3e-3)
    assert opt.tokens == pytest.approx(d, rel=3e-3)
    assert opt.tokens_per_param == pytest.approx(ratio, rel=6e-3)
    if loss is not None:
        assert opt.loss == pytest.approx(loss, abs=1e-4)


def test_tex_constants_put_the_gopher_budget_at_40b() -> None:
    # Hoffmann et al. state that Approach 3 gives 40B parameters for the Gopher budget.
    assert CHINCHILLA.optimal(5.76e23).params == pytest.approx(40e9, rel=0.02)


@pytest.mark.parametrize(
    ("law", "n", "d", "loss"),
    [
        (CHINCHILLA_ROUNDED, 70e9, 1.4e12, 1.9366),
        (CHINCHILLA, 70e9, 1.4e12, 1.9208),
        (CHINCHILLA_REFIT, 70e9, 1.4e12, 1.9739),
        (CHINCHILLA_ROUNDED, 280e9, 300e9, 1.9933),
        (CHINCHILLA, 280e9, 300e9, 1.9673),
        (CHINCHILLA_REFIT, 280e9, 300e9, 1.9996),
    ],
)
def test_chinchilla_loss_vectors(law, n, d, loss) -> None:
    assert law.loss(n, d) == pytest.approx(loss, abs=1e-4)


def test_kaplan_loss_vectors() -> None:
    # notes §2: L(N=1e9) = 2.3756, L(D=1e10) = 2.2624 (single-variable laws), joint L(1e9, 2e10) = 2.3739
    assert pytest.approx(2.3756, abs=1e-4) == (8.8e13 / 1e9) ** 0.076
    assert pytest.approx(2.2624, abs=1e-4) == (5.4e13 / 1e10) ** 0.095
    assert KAPLAN.loss(1e9, 2e10) == pytest.approx(2.3739, abs=1e-3)


@pytest.mark.parametrize(
    ("compute", "n", "d", "loss"),
    [(1e21, 7.77e9, 3.87e10, 2.3518), (1e23, 2.24e11, 1.34e11, 1.8681), (1e24, 1.20e12, 2.50e11, 1.6649)],
)
def test_kaplan_frontier_vectors(compute, n, d, loss) -> None:
    got_n, got_d, got_l = kaplan_frontier(compute)
    assert got_n == pytest.approx(n, rel=5e-3)
    assert got_d == pytest.approx(d, rel=5e-3)
    assert got_l == pytest.approx(loss, abs=1e-3)


ALL_LAWS = [CHINCHILLA, CHINCHILLA_ROUNDED, CHINCHILLA_REFIT, KAPLAN]


@pytest.mark.parametrize("law", ALL_LAWS, ids=lambda law: law.name)
def test_closed_form_optimum_minimises_the_law_on_the_compute_curve(law) -> None:
    """Property test: for 40 budgets from 1e18 to 1e27 FLOPs, a bounded numeric minimisation of
    L(N, C/6N) over log N lands on the closed form (and nothing nearby is lower)."""
    for compute in np.geomspace(1e18, 1e27, 40):
        opt = law.optimal(float(compute))
        assert 6.0 * opt.params * opt.tokens == pytest.approx(compute, rel=1e-9)

        def loss_at(log_n: float, compute: float = float(compute)) -> float:
            n = math.exp(log_n)
            return law.loss(n, compute / (6.0 * n))

        found = minimize_scalar(
            loss_at,
            bounds=(math.log(opt.params) - 5.0, math.log(opt.params) + 5.0),
            method="bounded",
            options={"xatol": 1e-9},
        )
        assert math.exp(found.x) == pytest.approx(opt.params, rel=1e-3)
        assert opt.loss <= found.fun + 1e-12
        for factor in (0.9, 1.1):
            assert loss_at(math.log(opt.params * factor)) > opt.loss


@pytest.mark.parametrize("law", [*ALL_LAWS, TokensPerParamLaw(20.0)], ids=lambda law: law.name)
def test_optimal_tokens_and_params_invert_the_optimum(law) -> None:
    for compute in (1e20, 1e23, 1e26):
        opt = law.optimal(compute)
        assert law.optimal_tokens(opt.params) == pytest.approx(opt.tokens, rel=1e-9)
        assert law.optimal_params_for_tokens(opt.tokens) == pytest.approx(opt.params, rel=1e-9)


def test_tokens_per_param_rule() -> None:
    law = get_law("tokens-per-param", 20)
    opt = law.optimal(6 * 20 * 1e9 * 1e9)
    assert opt.params == pytest.approx(1e9)
    assert opt.tokens == pytest.approx(20e9)
    assert opt.loss == pytest.approx(CHINCHILLA.loss(1e9, 20e9))


def test_unknown_law_and_bad_compute() -> None:
    with pytest.raises(ValueError, match="unknown scaling law"):
        get_law("gpt-5")
    with pytest.raises(ValueError):
        CHINCHILLA.optimal(0)
    with pytest.raises(ValueError):
        scaling.get_law("tokens-per-param", -1)


def test_inference_aware_optimum_is_smaller_and_cheaper_in_total() -> None:
    compute = 1e23
    base = inference_aware_optimum(CHINCHILLA, compute, 0.0)
    assert base == CHINCHILLA.optimal(compute)
    inference = 2e13  # tokens served over the model's life
    opt = inference_aware_optimum(CHINCHILLA, compute, inference)
    assert opt.params < base.params and opt.tokens > base.tokens
    assert opt.loss == pytest.approx(base.loss, abs=1e-6)  # same quality
    total = 6 * opt.params * opt.tokens + 2 * opt.params * inference
    assert total < 6 * base.params * base.tokens + 2 * base.params * inference
