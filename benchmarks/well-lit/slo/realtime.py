"""Prediction error on a real-time run: the gateway (predicted-latency-scorer) in front of ``lanterna sim`` processes.

    PYTHONPATH=src .venv/bin/python benchmarks/well-lit/slo/realtime.py [--replicas 3] [--rate 6] [--duration-s 40]

Starts N sims (physics timing of ``--profile``, slowed by ``--time-scale`` so that the gateway's CPU on a small
shared machine stays small next to step times) and a gateway whose only scorer is ``predicted-latency-scorer``
bootstrapped from the same profile (its prior is then ``time-scale`` times too fast: the online fit has to
learn the real pace). Streams a shared-prefix workload with SLO headers, then reads the gateway's
``lanterna_latency_prediction_ape`` histograms from ``/metrics``: MAPE of TTFT and TPOT over the whole run and
the share of predictions within 20% / 50%. Writes ``results/realtime.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
import routing_quality as rq  # noqa: E402
from realtime_crosscheck import TokenRenderer  # noqa: E402

from lanterna.bench.config import parse_config  # noqa: E402
from lanterna.bench.runner import HttpRunner  # noqa: E402
from lanterna.obs.predict_metrics import APE  # noqa: E402

MODEL = "sim-model"


def epp(profile: str) -> dict[str, Any]:
    return {"apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig",
            "plugins": [{"type": "predicted-latency-scorer", "parameters": {"bootstrapProfile": profile}},
                        {"type": "max-score-picker"}],
            "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "predicted-latency-scorer"},
                                                                   {"pluginRef": "max-score-picker"}]}]}


def ape_from_metrics(text: str) -> dict[str, Any]:
    """MAPE and within-20%/50% shares per kind from the Prometheus exposition."""
    out: dict[str, Any] = {}
    for kind in ("ttft", "tpot"):
        s = c = 0.0
        le: dict[str, float] = {}
        for line in text.splitlines():
            if f'kind="{kind}"' not in line or not line.startswith(APE):
                continue
            v = float(line.rsplit(" ", 1)[1])
            if line.startswith(f"{APE}_sum"):
                s = v
            elif line.startswith(f"{APE}_count"):
                c = v
            elif 'le="' in line:
                le[line.split('le="')[1].split('"')[0]] = v
        out[kind] = {"samples": c, "mape": s / c if c else None,
                     "within_20pct": le.get("0.2", 0) / c if c else None,
                     "within_50pct": le.get("0.5", 0) / c if c else None}
    return out


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()  # type: ignore[no-any-return]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sim_args = ["--profile", args.profile, "--timing", "physics", "--time-scale", str(args.time_scale)]
    with tempfile.TemporaryDirectory(prefix="lanterna-slo-rt-") as tmp:
        logdir = Path(tmp)
        async with rq.sim_replicas(args.replicas, sim_args, MODEL) as reps:
            policy = logdir / "epp.yaml"
            policy.write_text(yaml.safe_dump(epp(args.profile)))
            proc = await asyncio.to_thread(rq.start_router, f"lanterna:{policy}", reps, logdir)
            try:
                cfg = parse_config({
                    "name": "slo-realtime", "seed": 3,
                    "workload": {"type": "shared-prefix", "num_groups": 24, "prompts_per_group": 8,
                                 "system_len": 2000, "question_len": 500, "output_len": 100},
                    "load": {"type": "poisson", "stages": [{"rate": args.rate, "duration_s": args.duration_s}]},
                    "target": {"url": proc.url, "model": MODEL, "api": "completions",
                               "headers": {"x-slo-ttft-ms": "1500", "x-slo-tpot-ms": "150"}}})
                t0 = time.perf_counter()
                res = await HttpRunner(cfg, progress=False, renderer=TokenRenderer()).run()  # type: ignore[arg-type]
                wall = time.perf_counter() - t0
                text = await asyncio.to_thread(fetch, proc.url + "/metrics")
            finally:
                rq.peers.stop(proc)
    s = res.stages[0].summary
    return {"config": {k: v for k, v in vars(args).items() if k != "out"}, "wall_s": wall,
            "completed": s.num_completed, "failed": s.num_failed,
            "ttft_p50_s": s.latency.ttft.p50 if s.latency.ttft else None,
            "prediction": ape_from_metrics(text)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--profile", default="qwen3-32b-tp2-h100")
    ap.add_argument("--rate", type=float, default=4.0)
    ap.add_argument("--duration-s", type=float, default=45.0)
    ap.add_argument("--time-scale", type=float, default=2.0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "realtime.json")
    args = ap.parse_args()
    res = asyncio.run(main_async(args))
    print(json.dumps(res, indent=1))
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
