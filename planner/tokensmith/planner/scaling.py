"""Scaling laws: predicted loss L(N, D) and the compute-optimal (N, D) under C = 6ND.

Laws (constants from the papers; see docs/planner.md and the reference notes for their provenance):

- ``chinchilla``: Hoffmann et al. 2022 (arXiv:2203.15556), Approach 3, L = E + A/N^alpha + B/D^beta,
  with the constants at the precision of the paper's TeX source (alpha = 0.3392, beta = 0.2849,
  E = 1.6934, A = 406.4, B = 410.7). These reproduce the paper's own statement that Approach 3 puts
  the Gopher budget (5.76e23 FLOP) at a 40B model.
- ``chinchilla-rounded``: the same fit with the constants as usually printed (E = 1.69,
  alpha = 0.34, beta = 0.28); rounding moves the optimum a lot, so it is offered for comparison.
- ``chinchilla-refit``: Besiroglu et al. 2024 ("Chinchilla scaling: a replication attempt",
  arXiv:2404.10102): E = 1.8172, A = 482.01, B = 2085.43, alpha = 0.3478, beta = 0.3658.
- ``kaplan``: Kaplan et al. 2020 (arXiv:2001.08361), eq. (1.5) L(N, D) = [(N_c/N)^(a_N/a_D) + D_c/D]^a_D
  with a_N = 0.076, a_D = 0.103, N_c = 6.4e13, D_c = 1.8e13; N counts non-embedding parameters.
- ``tokens-per-param``: D = k N (k = 20 by default, the rule of thumb read off Chinchilla's Table 3);
  it predicts no loss of its own, so its loss is Chinchilla's (stated in the plan's assumptions).

Every law gives ``loss(N, D)`` and ``optimal(C)``; for the parametric laws the optimum is the closed
form of the minimum of L on the curve C = 6ND (Hoffmann et al. eq. 4; derived below for Kaplan), and a
test checks it against a numeric minimisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LAW_NAMES = ("chinchilla", "chinchilla-rounded", "chinchilla-refit", "kaplan", "tokens-per-param")

PF_DAY = 8.64e19  # FLOP in one petaflop/s-day (Kaplan et al. 2020)


@dataclass(frozen=True)
class Optimum:
    """Compute-optimal allocation: parameters (in the law's convention), tokens, expected loss."""

    params: float
    tokens: float
    loss: float

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params


@dataclass(frozen=True)
class ChinchillaLaw:
    """L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, eq. 2; Approach 3)."""

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str
    non_embedding: bool = False  # Chinchilla counts every parameter

    def loss(self, params: float, tokens: float) -> float:
        return self.E + self.A / params**self.alpha + self.B / tokens**self.beta

    def optimal(self, compute: float) -> Optimum:
        """Closed form of argmin L on C = 6ND (Hoffmann et al. eq. 4):
        N = G (C/6)^a, D = (C/6)^b / G, G = (alpha A / (beta B))^(1/(alpha+beta)),
        a = beta/(alpha+beta), b = alpha/(alpha+beta)."""
        _check_positive(compute, "compute")
        s = self.alpha + self.beta
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / s)
        n = g * (compute / 6.0) ** (self.beta / s)
        d = compute / (6.0 * n)
        return Optimum(n, d, self.loss(n, d))

    def optimal_tokens(self, params: float) -> float:
        """Tokens that make `params` compute-optimal: invert N(C) above."""
        _check_positive(params, "params")
        s = self.alpha + self.beta
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / s)
        c_over_6 = (params / g) ** (s / self.beta)
        return c_over_6 / params

    def optimal_params_for_tokens(self, tokens: float) -> float:
        _check_positive(tokens, "tokens")
        s = self.alpha + self.beta
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / s)
        c_over_6 = (tokens * g) ** (s / self.alpha)
        return c_over_6 / tokens


@dataclass(frozen=True)
class KaplanLaw:
    """L(N, D) = [(N_c/N)^(a_N/a_D) + D_c/D]^a_D (Kaplan et al. 2020, eq. 1.5), N non-embedding.

    Minimising it on C = 6ND: with p = a_N/a_D, the bracket (N_c/N)^p + 6 D_c N / C is convex in N and
    its derivative vanishes at N* = (p N_c^p C / (6 D_c))^(1/(p+1)); D* = C/(6N*). (This is the
    L(N, D) law's own optimum; Kaplan's separately fitted compute-efficient frontier N = 1.3e9 C^0.73,
    which assumes training stops well before convergence, is `kaplan_frontier`.)
    """

    name: str = "kaplan"
    alpha_n: float = 0.076
    alpha_d: float = 0.103
    n_c: float = 6.4e13
    d_c: float = 1.8e13
    source: str = (
        "Kaplan et al. 2020, arXiv:2001.08361, eq. (1.5): a_N=0.076, a_D=0.103, N_c=6.4e13, D_c=1.8e13"
    )
    non_embedding: bool = True

    @property
    def p(self) -> float:
        return self.alpha_n / self.alpha_d

    def loss(self, params: float, tokens: float) -> float:
        return ((self.n_c / params) ** self.p + self.d_c / tokens) ** self.alpha_d

    def optimal(self, compute: float) -> Optimum:
        _check_positive(compute, "compute")
        p = self.p
        n = (p * self.n_c**p * compute / (6.0 * self.d_c)) ** (1.0 / (p + 1.0))
        d = compute / (6.0 * n)
        return Optimum(n, d, self.loss(n, d))

    def optimal_tokens(self, params: float) -> float:
        _check_positive(params, "params")
        p = self.p
        compute = params ** (p + 1.0) * 6.0 * self.d_c / (p * self.n_c**p)
        return compute / (6.0 * params)

    def optimal_params_for_tokens(self, tokens: float) -> float:
        _check_positive(tokens, "tokens")
        # D = C/(6N) and N^(p+1) = p N_c^p C/(6 D_c) give N^p = p N_c^p D / D_c.
        return (self.p * self.n_c**self.p * tokens / self.d_c) ** (1.0 / self.p)


@dataclass(frozen=True)
class TokensPerParamLaw:
    """D = k N: the "20 tokens per parameter" rule (Hoffmann et al. 2022, Table 3 gives about 20).

    On C = 6ND it gives N = sqrt(C / 6k). Its loss is the Chinchilla fit's (it has none of its own)."""

    k: float = 20.0
    name: str = "tokens-per-param"
    source: str = "D = k N (Hoffmann et al. 2022, Table 3: about 20 tokens per parameter)"
    non_embedding: bool = False

    def loss(self, params: float, tokens: float) -> float:
        return CHINCHILLA.loss(params, tokens)

    def optimal(self, compute: float) -> Optimum:
        _check_positive(compute, "compute")
        n = math.sqrt(compute / (6.0 * self.k))
        d = self.k * n
        return Optimum(n, d, self.loss(n, d))

    def optimal_tokens(self, params: float) -> float:
        _check_positive(params, "params")
        return self.k * params

    def optimal_params_for_tokens(self, tokens: float) -> float:
        _check_positive(tokens, "tokens")
        return tokens / self.k


Law = ChinchillaLaw | KaplanLaw | TokensPerParamLaw

CHINCHILLA = ChinchillaLaw(
    "chinchilla",
    E=1.6934,
    A=406.4,
    B=410.7,
    alpha=0.3392,
    beta=0.2849,
    source="Hoffmann et al. 2022, arXiv:2203.15556, Approach 3 (TeX-source precision): "
    "E=1.6934, A=406.4, B=410.7, alpha=0.3392, beta=0.2849",
)
CHINCHILLA_ROUNDED = ChinchillaLaw(
    "chinchilla-rounded",
    E=1.69,
    A=406.4,
    B=410.7,
    alpha=0.34,
    beta=0.28,
    source="Hoffmann et al. 2022, Approach 3 as usually printed: "
    "E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28",
)
CHINCHILLA_REFIT = ChinchillaLaw(
    "chinchilla-refit",
    E=1.8172,
    A=482.01,
    B=2085.43,
    alpha=0.3478,
    beta=0.3658,
    source="Besiroglu et al. 2024, arXiv:2404.10102 (refit of Chinchilla's data): "
    "E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658",
)
KAPLAN = KaplanLaw()


def get_law(name: str, tokens_per_param: float = 20.0) -> Law:
    """The law called `name` (one of LAW_NAMES); ValueError names the choices otherwise."""
    key = name.lower()
    if key == "tokens-per-param":
        _check_positive(tokens_per_param, "tokens-per-param")
        return TokensPerParamLaw(k=tokens_per_param)
    laws: dict[str, Law] = {
        "chinchilla": CHINCHILLA,
        "chinchilla-rounded": CHINCHILLA_ROUNDED,
        "chinchilla-refit": CHINCHILLA_REFIT,
        "kaplan": KAPLAN,
    }
    if key not in laws:
        raise ValueError(f"unknown scaling law {name!r}; choose one of {', '.join(LAW_NAMES)}")
    return laws[key]


def kaplan_frontier(compute: float) -> tuple[float, float, float]:
    """Kaplan et al. 2020's fitted compute-efficient frontier (Fig. 14/eq. 6.x), C in FLOP:
    N = 1.3e9 C^0.73 and D = 2.0e10 C^0.27 (C in PF-days), L(C_min) = (3.1e8 / C)^0.050.
    Returns (N non-embedding, D, L). Note D here is Kaplan's fitted data use, not C/(6N)."""
    _check_positive(compute, "compute")
    c = compute / PF_DAY
    return 1.3e9 * c**0.73, 2.0e10 * c**0.27, (3.1e8 / c) ** 0.050


def inference_aware_optimum(law: Law, compute: float, inference_tokens: float) -> Optimum:
    """Sardana et al. 2023 ("Beyond Chinchilla-Optimal", arXiv:2401.00448): for the loss that the
    compute-optimal model reaches with training budget `compute`, the (N, D) that reaches the same
    loss at the least total compute 6ND + 2N D_inf (training plus inference). Solved numerically
    (golden-section search on log N), as in the paper; D follows from the loss constraint."""
    _check_positive(compute, "compute")
    if inference_tokens < 0:
        raise ValueError("inference tokens must be zero or positive")
    base = law.optimal(compute)
    if inference_tokens == 0:
        return base
    target = base.loss

    def tokens_for(n: float) -> float:
        # Bisection on log D: the laws are decreasing in D.
        lo, hi = math.log(n * 1e-3), math.log(n * 1e7)
        if law.loss(n, math.exp(hi)) > target:
            return math.inf
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            if law.loss(n, math.exp(mid)) > target:
                lo = mid
            else:
                hi = mid
        return math.exp(hi)

    def total(log_n: float) -> float:
        n = math.exp(log_n)
        d = tokens_for(n)
        return 6.0 * n * d + 2.0 * n * inference_tokens

    lo, hi = math.log(base.params) - math.log(100.0), math.log(base.params)
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    for _ in range(100):
        if total(a) < total(b):
            hi = b
        else:
            lo = a
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    n = math.exp(0.5 * (lo + hi))
    d = tokens_for(n)
    return Optimum(n, d, law.loss(n, d))


def _check_positive(value: float, name: str) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
