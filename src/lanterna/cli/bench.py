"""``lanterna bench``: run, sweep, plot, compare, cluster.

    lanterna bench run CONFIG.yaml [--set cluster.policy=precise] [--out DIR]
    lanterna bench cluster CONFIG.yaml --policy precise --replicas 8     # virtual-time cluster only
    lanterna bench sweep EXPERIMENT.yaml [--out DIR]
    lanterna bench plot RUN_DIR... --out DIR
    lanterna bench compare RUN_DIR... [--baseline 0]

Configs are validated in full before any request is sent; a bad config prints one line per problem
and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from lanterna.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", required=True)
    for name, help_text in (("run", "run a benchmark config (HTTP target or virtual cluster)"),
                            ("cluster", "run a config on the virtual-time cluster")):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("config", type=Path)
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field (dotted key; value parsed as YAML)")
        p.add_argument("--out", type=Path, help="output directory (default: config output_dir/name)")
        p.add_argument("--no-progress", action="store_true")
        if name == "cluster":
            p.add_argument("--policy", help="policy name or EndpointPickerConfig YAML")
            p.add_argument("--replicas", type=int)
    p = sub.add_parser("sweep", help="factors x levels experiment, one report per treatment + Pareto summary")
    p.add_argument("experiment", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("plot", help="PNG plots from run directories")
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--title", default="")
    p = sub.add_parser("compare", help="a table of ratios between runs")
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--baseline", type=int, default=0, help="index of the baseline run (default: first)")


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def execute(cfg: Any, progress: bool = True) -> Any:
    """Run one validated BenchConfig on its target."""
    if cfg.cluster is not None:
        from lanterna.cluster.virtual import run_virtual

        return run_virtual(cfg, progress=progress)
    from lanterna.bench.runner import run_http

    return run_http(cfg, progress=progress)


def _print_summary(res: Any, out: Path) -> None:
    from lanterna.bench.compare import _f

    print(f"{res.config.name}: {res.mode} run -> {out}")
    for st in res.stages:
        s = st.summary
        ttft = s.latency.ttft
        lag = " BEHIND SCHEDULE" if s.behind_schedule else ""
        print(f"  {st.label}: {s.num_completed}/{s.num_requests} ok, failures {s.failures or 0}, "
              f"rate {_f(s.achieved_rate, '.1f')}/{_f(s.requested_rate, 'g')} req/s{lag}, "
              f"out {s.throughput.output_tokens_per_s:,.0f} tok/s, "
              f"TTFT p50 {_f(ttft and ttft.p50, '.3f')} s p90 {_f(ttft and ttft.p90, '.3f')} s")
    if res.extra.get("speedup_vs_real_time"):
        print(f"  virtual {res.extra['virtual_time_s']:.1f} s in {res.extra['wall_time_s']:.1f} s wall "
              f"({res.extra['speedup_vs_real_time']:.0f}x real time)")


def _run(args: argparse.Namespace) -> int:
    from lanterna.bench.config import load_config
    from lanterna.bench.report import write_report

    overrides = _overrides(args.overrides)
    if args.bench_command == "cluster":
        if args.policy:
            overrides["cluster.policy"] = args.policy
        if args.replicas:
            overrides["cluster.replicas"] = args.replicas
    cfg = load_config(args.config, overrides)
    if args.bench_command == "cluster" and cfg.cluster is None:
        raise ConfigError(f"{args.config}: 'bench cluster' needs a 'cluster' section")
    if cfg.cluster is not None:
        from lanterna.cluster.policies import resolve_policy

        resolve_policy(cfg.cluster.policy)  # a bad policy fails before the run
    res = execute(cfg, progress=not args.no_progress)
    out = args.out or cfg.output_dir / cfg.name
    write_report(res, out)
    _print_summary(res, out)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        if args.bench_command in ("run", "cluster"):
            return _run(args)
        if args.bench_command == "sweep":
            from lanterna.bench.sweep import run_sweep

            summary = run_sweep(args.experiment, lambda c: execute(c, not args.no_progress), args.out)
            print(f"{summary['experiment']}: {len(summary['runs'])} treatments; Pareto front:")
            for p in summary["pareto_front"]:
                print(f"  {p['treatment']} stage {p['stage']}: {p['output_tps']:,.0f} tok/s, TTFT p50 {p['ttft_p50_s']:.3f} s")
            return 0
        from lanterna.bench.report import load_report

        reports = [load_report(p) for p in args.runs]
        if args.bench_command == "plot":
            from lanterna.bench.plots import plot_runs

            for p in plot_runs(reports, args.out, args.title):
                print(p)
            return 0
        from lanterna.bench.compare import compare_rows, markdown_table, run_label

        if not 0 <= args.baseline < len(reports):
            raise ConfigError(f"--baseline must be in 0..{len(reports) - 1}")
        print(markdown_table(compare_rows(reports, args.baseline), run_label(reports[args.baseline])))
        return 0
    except ConfigError as exc:
        print(f"lanterna bench: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"lanterna bench: {exc}", file=sys.stderr)
        return 1
