"""The resolved settings of one plan: the law, the GPU, the economics, and every assumption used
(default or given) with its source, which the plan reports."""

from __future__ import annotations

from typing import Any

from tokensmith.planner import arch, energy, reliability, scaling, search
from tokensmith.planner.gpus import GPU, get_gpu
from tokensmith.planner.schema import PlanError, Request

DEFAULT_GPU = "H100-SXM"
DEFAULT_SEQ_LEN = 4096
DEFAULT_VOCAB = 32000


class Context:
    """Resolved settings shared by every evaluation of one plan (built once per plan)."""

    def __init__(self, req: Request) -> None:
        self.req = req
        self.assumptions: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.mfu_source: str | None = None  # set when the MFU is derived from a budget
        self.law = self._law()
        self.gpu: GPU = self._gpu()
        gpn = req.gpus_per_node or self.gpu.gpus_per_node
        if req.gpus is not None and req.gpus < gpn:
            gpn = req.gpus
        if req.gpus is not None and req.gpus % gpn:
            raise PlanError(
                f"--gpus {req.gpus} is not a whole number of {gpn}-GPU nodes; "
                "change --gpus or set --gpus-per-node"
            )
        self.gpus_per_node = gpn
        self.seq_len = int(
            self._default("seq_len", req.seq_len, DEFAULT_SEQ_LEN, "Llama 2's context (Touvron et al. 2023)")
        )
        self.vocab = int(
            self._default(
                "vocab_size", req.vocab_size, DEFAULT_VOCAB, "Llama 2's tokenizer (Touvron et al. 2023)"
            )
        )
        self.econ = self._economics()
        self.precision, self.layouts, self.moe = self._stack()

    def record(self, name: str, value: Any, source: str) -> None:
        self.assumptions[name] = {"value": value, "source": source}

    def _default(self, name: str, given: Any, default: Any, source: str) -> Any:
        if given is not None:
            self.record(name, given, "given")
            return given
        self.record(name, default, f"default: {source}")
        return default

    def _law(self) -> scaling.Law:
        req = self.req
        name = req.law
        if req.tokens_per_param is not None:
            if name not in (None, "tokens-per-param"):
                raise PlanError(
                    f"--tokens-per-param applies to --law tokens-per-param, not --law {name}; "
                    "drop one of them"
                )
            name = "tokens-per-param"
        name = name or "chinchilla"
        try:
            law = scaling.get_law(name, req.tokens_per_param or 20.0)
        except ValueError as err:
            raise PlanError(str(err)) from None
        self.record(
            "law", law.name, law.source if req.law or req.tokens_per_param else f"default: {law.source}"
        )
        if law.name == "tokens-per-param":
            self.record(
                "predicted_loss_law",
                "chinchilla",
                "tokens-per-param predicts no loss; Chinchilla's fit is used",
            )
        return law

    def _gpu(self) -> GPU:
        try:
            gpu = get_gpu(self.req.gpu or DEFAULT_GPU)
        except ValueError as err:
            raise PlanError(str(err)) from None
        self.record("gpu", gpu.name, "given" if self.req.gpu else "default: a current training GPU")
        self.record("gpu_peak_tflops", gpu.peak_tflops, f"{gpu.vendor} datasheet, dense BF16")
        return gpu

    def _stack(self) -> tuple[str, str, dict[str, int] | None]:
        """Precision, layout scope and MoE description, checked against the GPU and the trainer."""
        from tokensmith.planner import capability

        req, gpu = self.req, self.gpu
        precision = (req.precision or "bf16").lower()
        if precision not in ("bf16", "fp8"):
            raise PlanError(f"--precision must be bf16 or fp8, got {req.precision!r}")
        layouts = (req.layouts or "trainable").lower()
        if layouts not in search.LAYOUTS:
            raise PlanError(f"--layouts must be one of {', '.join(search.LAYOUTS)}, got {req.layouts!r}")
        if precision == "fp8" and not gpu.fp8_tflops:
            raise PlanError(
                f"{gpu.name} has no FP8 tensor cores; use --precision bf16 or an FP8 GPU "
                "(H100, H800, H200, B200, MI300X, L40S)"
            )
        moe = None
        if req.model is not None:
            preset = arch.PRESETS.get(req.model.lower())
            if preset is None:
                raise PlanError(f"unknown --model {req.model!r}; known: {', '.join(arch.PRESETS)}")
            if req.params is not None or req.experts or req.experts_per_token or req.shared_experts:
                raise PlanError("--model fixes the architecture; drop --params and the --experts options")
            if preset.get("experts"):
                moe = {k: preset.get(k, 0) for k in ("experts", "experts_per_token", "shared_experts")}
        if req.experts:
            k = req.experts_per_token or min(2, req.experts)
            if k > req.experts:
                raise PlanError(f"--experts-per-token ({k}) exceeds --experts ({req.experts})")
            moe = {"experts": req.experts, "experts_per_token": k, "shared_experts": req.shared_experts or 0}
        elif req.experts_per_token or req.shared_experts:
            raise PlanError("--experts-per-token and --shared-experts need --experts (routed experts)")
        if layouts == "trainable":
            untrainable = []
            if moe:
                untrainable.append("mixture-of-experts models")
            if precision not in capability.PRECISIONS:
                untrainable.append(f"{precision} training")
            if untrainable:
                raise PlanError(
                    f"tokensmith train does not run {' or '.join(untrainable)}; add --layouts any to plan "
                    "for another stack (Megatron-LM, DeepSeek's)"
                )
        self.record("precision", precision, "given" if req.precision else "default: bf16 mixed precision")
        self.record(
            "layouts",
            layouts,
            "given: any stack (interleaving, EP, CP, FP8 allowed)"
            if layouts == "any"
            else "default: layouts tokensmith train runs (planner/capability.py)",
        )
        if precision == "fp8":
            self.record("gpu_fp8_peak_tflops", gpu.fp8_tflops, f"{gpu.vendor} datasheet, dense FP8")
        if moe:
            self.record(
                "moe_law_params",
                "active",
                "default: Chinchilla on active parameters (a dense-model law; MoE laws, e.g. Clark et al. "
                "2022 and Krajewski et al. 2024, give MoE a lower loss at the same active size)",
            )
        return precision, layouts, moe

    def _economics(self) -> search.Economics:
        req, gpu = self.req, self.gpu
        price = self._default(
            "price_per_gpu_hour",
            req.price_per_gpu_hour,
            gpu.price_usd_hour,
            "indicative 2025 on-demand price",
        )
        purchase = (
            self._default(
                "purchase_price",
                req.purchase_price,
                gpu.purchase_usd,
                "indicative price per GPU incl. server share",
            )
            if req.owned
            else gpu.purchase_usd
        )
        lifetime = (
            self._default("lifetime_years", req.lifetime_years, 4.0, "typical accelerator depreciation")
            if req.owned
            else 4.0
        )
        self.record(
            "ownership", "owned" if req.owned else "cloud", "given" if req.owned else "default: rented"
        )
        pue = self._default(
            "pue", req.pue, energy.DEFAULT_PUE, "Patterson et al. 2021, hyperscale data centre"
        )
        carbon = self._default(
            "carbon_intensity_kg_per_kwh",
            req.carbon_intensity,
            energy.DEFAULT_CARBON_KG_PER_KWH,
            "US average used by Patterson et al. 2021",
        )
        eprice = self._default(
            "energy_price_usd_per_mwh",
            req.energy_price,
            energy.DEFAULT_ENERGY_USD_PER_MWH,
            "typical US industrial price",
        )
        if req.gpu_power_w is None:
            self.record(
                "gpu_power",
                f"TDP {gpu.tdp_w:g} W x ({energy.IDLE_FRACTION} + {1 - energy.IDLE_FRACTION} "
                f"x min(1, MFU/{energy.MFU_AT_TDP}))",
                "default: utilisation-dependent draw (energy.py)",
            )
        else:
            self.record("gpu_power_w", req.gpu_power_w, "given")
        if req.gpu_power_w is not None and req.node_overhead is None:
            # A given per-GPU power is taken as the whole per-GPU figure (as papers quote it).
            overhead = 0.0
            self.record("node_overhead_fraction_of_tdp", 0.0, "default with --gpu-power-w: included in it")
        else:
            overhead = self._default(
                "node_overhead_fraction_of_tdp",
                req.node_overhead,
                energy.NODE_OVERHEAD,
                "DGX A100/H100 system power specs",
            )
        mtbf = self._default(
            "mtbf_gpu_hours",
            req.mtbf_gpu_hours,
            round(reliability.LLAMA3_GPU_HOURS_PER_FAILURE),
            "Llama 3: 419 interruptions in 54 days on 16,384 H100 (Dubey et al. 2024)",
        )
        restart = self._default(
            "restart_minutes",
            req.restart_minutes,
            reliability.DEFAULT_RESTART_MINUTES,
            "Daly 2006's examples",
        )
        if req.checkpoint_minutes is None:
            self.record("checkpoint_interval", "Daly 2006 optimum", "default")
        else:
            self.record("checkpoint_minutes", req.checkpoint_minutes, "given")
        self.record(
            "checkpoint_write",
            f"{reliability.CHECKPOINT_FIXED_SECONDS:g} s + "
            f"{reliability.CHECKPOINT_BYTES_PER_PARAM} B/param at "
            f"min(nodes x {reliability.DEFAULT_NODE_WRITE_GBS:g}, {reliability.DEFAULT_STORAGE_GBS:g}) GB/s",
            "default: reliability.py",
        )
        return search.Economics(
            price_per_gpu_hour=float(price),
            owned=req.owned,
            purchase_usd=float(purchase),
            lifetime_years=float(lifetime),
            pue=float(pue),
            carbon_kg_per_kwh=float(carbon),
            energy_usd_per_mwh=float(eprice),
            gpu_power_w=req.gpu_power_w,
            node_overhead=float(overhead),
            mtbf_gpu_hours=float(mtbf),
            restart_minutes=float(restart),
            checkpoint_minutes=req.checkpoint_minutes,
        )
