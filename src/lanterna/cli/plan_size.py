"""``lanterna plan size``: run the planner's search with the virtual cluster as its evaluator.

Each candidate becomes a ``BenchConfig`` for ``lanterna.cluster.virtual``: ``replicas`` engines with a
``PlannedProfile`` (step times for the model on the GPU at that TP/EP) and the KV blocks the memory model
gives, the workload at a Poisson ``rate`` for a fixed number of requests, routed by ``--policy``. Writes
``plan.json`` (every simulated candidate), ``pareto.png`` and ``deploy/`` (vLLM commands, ``lanterna up``,
Helm values).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lanterna.bench.config import BenchConfig, RandomWorkload, SharedPrefixWorkload, Workload
from lanterna.cli.plan import memory_kwargs
from lanterna.planner.arch import ModelArch, load_arch
from lanterna.planner.deploy import Deployment
from lanterna.planner.gpus import Gpu, get_gpu
from lanterna.planner.memory import Parallelism, feasible_tp, plan_memory
from lanterna.planner.profile import build_profile
from lanterna.planner.search import Candidate, Outcome, SearchResult, Shape, Slo, search


def parse_workload(spec: str) -> Workload:
    """``random:IN:OUT``, ``shared-prefix:GROUPS:SYSTEM:QUESTION:OUT`` or a YAML file (``workload:`` or bare)."""
    kind, _, rest = spec.partition(":")
    nums = [int(x) for x in rest.split(":")] if rest else []
    if kind == "random" and len(nums) == 2:
        return RandomWorkload.model_validate({"input_len": nums[0], "output_len": nums[1]})
    if kind == "shared-prefix" and len(nums) == 4:
        return SharedPrefixWorkload.model_validate({"num_groups": nums[0], "system_len": nums[1],
                                                    "question_len": nums[2], "output_len": nums[3]})
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--workload {spec!r}: expected random:IN:OUT, shared-prefix:G:S:Q:O or a YAML file")
    data = yaml.safe_load(path.read_text())
    data = data.get("workload", data) if isinstance(data, dict) else data
    cfg = BenchConfig.model_validate({"workload": data, "load": {"stages": [{"rate": 1, "num_requests": 1}]},
                                      "cluster": {}})
    return cfg.workload


def _context_len(w: Workload) -> int:
    if isinstance(w, RandomWorkload):
        return w.input_len + w.output_len
    if isinstance(w, SharedPrefixWorkload):
        return w.system_len + w.question_len + w.output_len
    return 8192


class Evaluator:
    """Simulates one candidate; ``print`` shows a line per candidate as the progress display."""

    def __init__(self, args: argparse.Namespace, arch: ModelArch, gpu: Gpu, workload: Workload, slo: Slo,
                 requests: int, console: Any) -> None:
        self.args, self.arch, self.gpu, self.workload, self.slo = args, arch, gpu, workload, slo
        self.requests, self.console, self.count = requests, console, 0
        self.mem_kw = {**memory_kwargs(args), "context_len": _context_len(workload)}

    def __call__(self, cand: Candidate) -> Outcome:
        from lanterna.cluster.virtual import run_virtual
        from lanterna.sim.profiles import register_profile

        self.count += 1
        s = cand.shape
        # without wide EP a MoE's experts are sharded by TP like dense layers (vLLM's default)
        par = Parallelism(tp=s.tp, ep=cand.replicas * s.tp if s.ep else 1)
        if s.ep and self.arch.num_experts % par.ep:
            out = Outcome(cand, feasible=False, note=f"{self.arch.num_experts} experts do not split over EP {par.ep}")
            self._show(out)
            return out
        mem = plan_memory(self.arch, self.gpu, par, **self.mem_kw)
        if not mem.fits:
            out = Outcome(cand, feasible=False, note="does not fit in memory")
            self._show(out)
            return out
        profile = build_profile(self.arch, self.gpu, par)
        register_profile(profile)
        cluster: dict[str, Any] = {
            "replicas": cand.replicas, "profile": profile.name, "policy": self.args.policy,
            "num_gpu_blocks": mem.num_gpu_blocks, "block_size": self.args.block_size,
            "max_num_seqs": self.args.max_num_seqs, "max_num_batched_tokens": self.args.max_num_batched_tokens}
        if s.cpu_offload_gib:
            cluster["tiers"] = {"cpu_gib": s.cpu_offload_gib}
        if s.prefill_share:
            if cand.replicas < 2:
                out = Outcome(cand, feasible=False, note="P/D needs 2+ replicas")
                self._show(out)
                return out
            prefill = min(cand.replicas - 1, max(1, round(cand.replicas * s.prefill_share)))
            cluster["pd"] = {"prefill_replicas": prefill, "link": self.args.pd_link}
            cluster["policy"] = "pd"
        warm = max(1, self.requests // 5)
        cfg = BenchConfig.model_validate({
            "name": "plan", "seed": self.args.seed, "workload": self.workload, "cluster": cluster,
            "load": {"type": "poisson", "warmup": {"rate": self.args.rate, "num_requests": warm},
                     "stages": [{"rate": self.args.rate, "num_requests": self.requests}]}})
        summary = run_virtual(cfg).stages[0].summary
        ttft, tpot = summary.latency.ttft, summary.latency.tpot
        t90, p90 = (ttft.p90 if ttft else None), (tpot.p90 if tpot else None)
        ok = summary.num_failed == 0 and self.slo.met(t90, p90)
        out = Outcome(cand, True, t90, p90, summary.throughput.output_tokens_per_s, summary.num_failed, ok)
        self._show(out)
        return out

    def _show(self, o: Outcome) -> None:
        if self.console is None:
            return
        c = o.candidate
        head = f"[{self.count:>3}] {c.shape.label():<28} x{c.replicas:<3} = {c.num_gpus:>3} GPUs"
        if not o.feasible:
            self.console.print(f"{head}  [dim]{o.note}[/dim]")
            return
        mark = "[green]meets SLO[/green]" if o.meets_slo else "[red]misses[/red]"
        self.console.print(f"{head}  TTFT p90 {_ms(o.ttft_p90_s)}  TPOT p90 {_ms(o.tpot_p90_s)}  "
                           f"{o.tokens_per_s_per_gpu:8.0f} tok/s/GPU  {mark}")


def _ms(v: float | None) -> str:
    return "     -" if v is None else f"{v * 1e3:7.1f} ms"


PD_SHARES = (0.25, 0.5)  # prefill replicas / all replicas (1P3D, 1P1D ...)


def shapes_for(args: argparse.Namespace, arch: ModelArch, gpu: Gpu, context_len: int) -> list[Shape]:
    tps = args.tp or feasible_tp(arch, gpu, **{**memory_kwargs(args), "context_len": context_len})
    if args.quick:
        tps = tps[:2]
    out = [Shape(tp=tp) for tp in tps]
    if args.wide_ep and arch.is_moe:
        out += [Shape(tp=1, ep=True)]
    if args.cpu_offload_gib and not args.quick:
        out += [Shape(tp=tp, cpu_offload_gib=args.cpu_offload_gib) for tp in tps[:1]]
    return out


def _ttft(o: Outcome) -> float | None:
    return o.ttft_p90_s


def _tpot(o: Outcome) -> float | None:
    return o.tpot_p90_s


def plot_pareto(res: SearchResult, slo: Slo, best: Outcome | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels: list[tuple[str, Callable[[Outcome], float | None], float | None]] = [
        ("TTFT p90 (s)", _ttft, slo.ttft_p90_s), ("TPOT p90 (s)", _tpot, slo.tpot_p90_s)]
    shapes = sorted({o.candidate.shape for o in res.outcomes if o.feasible})
    for ax, (label, key, bound) in zip(axes, panels, strict=True):
        for shape in shapes:
            pts = [o for o in res.outcomes if o.feasible and o.candidate.shape == shape and key(o) is not None]
            ax.scatter([key(o) for o in pts], [o.tokens_per_s_per_gpu for o in pts], label=shape.label(), s=28)
            for o in pts:
                ax.annotate(str(o.candidate.replicas), (key(o), o.tokens_per_s_per_gpu), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        front = res.pareto(key)
        ax.plot([key(o) for o in front], [o.tokens_per_s_per_gpu for o in front], "k--", lw=1, label="Pareto front")
        if bound is not None:
            ax.axvline(bound, color="red", lw=1, ls=":", label="SLO")
        if best is not None and key(best) is not None:
            ax.scatter([key(best)], [best.tokens_per_s_per_gpu], marker="*", s=220, color="gold",
                       edgecolor="k", zorder=5, label="chosen")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("output tokens/s per GPU")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_size(args: argparse.Namespace) -> int:
    from rich.console import Console

    arch, gpu = load_arch(args.model), get_gpu(args.gpu)
    workload, slo = parse_workload(args.workload), Slo.parse(args.slo)
    requests = args.requests or (150 if args.quick else 400)
    console = None if args.no_progress else Console(stderr=True, soft_wrap=True)
    shapes = shapes_for(args, arch, gpu, _context_len(workload))
    if not shapes:
        raise ValueError(f"{arch.name} fits no TP size on {gpu.name}")
    ev = Evaluator(args, arch, gpu, workload, slo, requests, console)
    explore = 0 if args.quick else 2
    res = search(shapes, ev, max_gpus=args.max_gpus, explore_above=explore)
    if args.pd:  # P/D splits at the TP of the cheapest aggregated answer (the smallest TP when none met the SLO)
        tp = res.best.candidate.shape.tp if res.best is not None else shapes[0].tp
        pd = search([Shape(tp=tp, prefill_share=share) for share in PD_SHARES], ev, max_gpus=args.max_gpus,
                    explore_above=explore)
        res.outcomes += pd.outcomes
    best = res.best
    args.out.mkdir(parents=True, exist_ok=True)
    title = (f"{arch.name} on {gpu.name}, {args.workload} at {args.rate:g} req/s, SLO {args.slo}")
    plot_pareto(res, slo, best, args.out / "pareto.png", title)
    report: dict[str, Any] = {
        "model": arch.name, "gpu": gpu.name, "workload": args.workload, "rate": args.rate, "slo": args.slo,
        "requests_per_candidate": requests, "num_simulations": len(res.outcomes),
        "candidates": [_outcome_json(o) for o in res.outcomes],
        "chosen": _outcome_json(best) if best else None,
    }
    if best is not None:
        model_ref = str(args.model) if Path(args.model).is_dir() else arch.model_id  # vLLM loads a dir or an id
        dep = Deployment(model_ref, best.candidate, args.gpu_memory_utilization, args.max_num_seqs,
                         args.max_num_batched_tokens, args.block_size)
        d = args.out / "deploy"
        d.mkdir(exist_ok=True)
        (d / "vllm.sh").write_text("\n".join(dep.vllm_commands()) + "\n")
        (d / "lanterna-up.sh").write_text(dep.lanterna_up() + "\n")
        (d / "values.yaml").write_text(dep.helm_values())
        (d / "deploy-render.sh").write_text(dep.deploy_render() + "\n")
        report["deploy"] = {"vllm": dep.vllm_commands(), "lanterna_up": dep.lanterna_up(),
                            "lanterna_deploy_render": dep.deploy_render(),
                            "helm_values": dep.helm_values()}
    (args.out / "plan.json").write_text(json.dumps(report, indent=2))
    if best is None:
        print(f"no configuration up to {args.max_gpus} GPUs meets {args.slo} at {args.rate:g} req/s "
              f"({len(res.outcomes)} simulated); see {args.out / 'pareto.png'}")
        return 1
    c = best.candidate
    print(f"cheapest meeting {args.slo} at {args.rate:g} req/s: {c.replicas} x {c.shape.label()} = {c.num_gpus} "
          f"{gpu.name}  (TTFT p90 {_ms(best.ttft_p90_s).strip()}, TPOT p90 {_ms(best.tpot_p90_s).strip()}, "
          f"{best.tokens_per_s_per_gpu:.0f} output tok/s/GPU; {len(res.outcomes)} simulations)")
    print(report["deploy"]["lanterna_up"] if c.replicas <= 4 else f"lanterna up: see {args.out / 'deploy'}")
    print(f"Helm values: {args.out / 'deploy' / 'values.yaml'}; plot: {args.out / 'pareto.png'}")
    return 0


def _outcome_json(o: Outcome) -> dict[str, Any]:
    c = o.candidate
    return {"shape": c.shape.label(), "tp": c.shape.tp, "wide_ep": c.shape.ep, "prefill_share": c.shape.prefill_share,
            "cpu_offload_gib": c.shape.cpu_offload_gib, "replicas": c.replicas, "num_gpus": c.num_gpus,
            "feasible": o.feasible, "ttft_p90_s": o.ttft_p90_s, "tpot_p90_s": o.tpot_p90_s,
            "output_tokens_per_s": o.output_tokens_per_s, "tokens_per_s_per_gpu": o.tokens_per_s_per_gpu,
            "num_failed": o.num_failed, "meets_slo": o.meets_slo, "note": o.note}
