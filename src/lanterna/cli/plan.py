"""``lanterna plan``: capacity planning from a model's config.json.

    lanterna plan memory --model llama-3.1-8b --gpu H100 [--tp 1] [--json]
    lanterna plan size --model llama-3.1-8b --gpu H100 --workload random:1000:200 --rate 20 \\
        --slo ttft_p90=1,tpot_p90=50ms [--quick] [--pd] [--wide-ep] [--out plan-out]
    lanterna plan cpu-calibrate --url http://127.0.0.1:8100   # fit step times of a live vLLM on this CPU

``--model`` is a config.json, a model directory (safetensors headers give exact weight bytes) or a bundled
name (llama-3.1-8b, llama-3.1-70b, qwen3-32b, mixtral-8x7b, qwen3-30b-a3b, deepseek-v3). Formulas:
docs/planner.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="plan_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("memory", help="weights, KV cache and concurrency per GPU for one parallel layout")
    _common(p)
    p.add_argument("--tp", type=int, default=None, help="tensor parallel size (default: smallest that fits)")
    p.add_argument("--pp", type=int, default=1, help="pipeline parallel size")
    p.add_argument("--ep", type=int, default=1, help="expert parallel size (MoE; 1 = experts sharded by TP)")
    p.add_argument("--json", action="store_true", help="one JSON object (kv_cache_tokens, max_concurrent_requests...)")
    p = sub.add_parser("size", help="cheapest deployment meeting an SLO, by simulating the virtual cluster")
    _common(p)
    p.add_argument("--workload", required=True,
                   help="random:IN:OUT, shared-prefix:GROUPS:SYSTEM:QUESTION:OUT, or a YAML with a 'workload:' section")
    p.add_argument("--rate", type=float, required=True, help="offered load, requests per second")
    p.add_argument("--slo", required=True, help="ttft_p90=SECONDS,tpot_p90=SECONDS (suffix ms allowed)")
    p.add_argument("--requests", type=int, default=None, help="requests per simulation (default 400; --quick 150)")
    p.add_argument("--max-gpus", type=int, default=64)
    p.add_argument("--tp", type=int, nargs="+", default=None, help="TP sizes to try (default: feasible ones)")
    p.add_argument("--wide-ep", action="store_true", help="also try wide expert parallelism (MoE models)")
    p.add_argument("--cpu-offload-gib", type=float, default=None,
                   help="also try this much CPU KV offload per replica (skipped with --quick)")
    p.add_argument("--pd", action="store_true", help="also try P/D disaggregation (1 in 4 and 1 in 2 replicas prefill)")
    p.add_argument("--pd-link", default="rdma", choices=["nvlink", "rdma", "tcp"], help="P/D KV transfer link")
    p.add_argument("--policy", default="llm-d-default", help="routing policy of the virtual cluster")
    p.add_argument("--quick", action="store_true", help="fewer requests, TP sizes and shapes")
    p.add_argument("--out", type=Path, default=Path("plan-out"), help="where plan.json and pareto.png go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("cpu-calibrate", help="measure real vLLM-on-CPU step times (tiny model) and fit a profile")
    p.add_argument("--url", required=True, help="a running vLLM serving the tiny model (lanterna models tiny)")
    p.add_argument("--served-model", default="tiny", help="the model name it serves")
    p.add_argument("--out", type=Path, default=Path("cpu-profile.json"))
    p.add_argument("--repeats", type=int, default=3)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="config.json, model dir, or a bundled model name")
    p.add_argument("--gpu", default="H100", help="H100, H200, B200, A100, L40S, MI300X, TPU-v6e")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--context-len", type=int, default=8192, help="tokens per request for max concurrency")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--max-num-batched-tokens", type=int, default=8192)
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--kv-dtype-bytes", type=float, default=2.0, help="2 = bf16 KV cache, 1 = fp8")


def run(args: argparse.Namespace) -> int:
    try:
        if args.plan_command == "memory":
            return _memory(args)
        if args.plan_command == "size":
            from lanterna.cli.plan_size import run_size

            rc: int = run_size(args)
            return rc
        from lanterna.cli.plan_calibrate import run_calibrate

        rc = run_calibrate(args)
        return rc
    except (ValueError, FileNotFoundError) as exc:
        print(f"lanterna plan: error: {exc}", file=sys.stderr)
        return 2


def memory_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"gpu_memory_utilization": args.gpu_memory_utilization, "block_size": args.block_size,
            "context_len": args.context_len, "max_num_batched_tokens": args.max_num_batched_tokens,
            "max_num_seqs": args.max_num_seqs, "kv_dtype_bytes": args.kv_dtype_bytes}


def _memory(args: argparse.Namespace) -> int:
    from lanterna.planner.arch import load_arch
    from lanterna.planner.gpus import get_gpu
    from lanterna.planner.memory import GIB, Parallelism, feasible_tp, plan_memory

    arch, gpu, kw = load_arch(args.model), get_gpu(args.gpu), memory_kwargs(args)
    feasible = feasible_tp(arch, gpu, **{k: v for k, v in kw.items()})
    tp = args.tp or (feasible[0] if feasible else 1)
    plan = plan_memory(arch, gpu, Parallelism(tp=tp, pp=args.pp, ep=args.ep), **kw)
    out = {**plan.to_json(), "params_b": arch.params / 1e9, "active_params_b": arch.active_params / 1e9,
           "attention": "MLA" if arch.is_mla else ("GQA" if arch.num_kv_heads < arch.num_heads else "MHA"),
           "sliding_window_layers": arch.num_sliding_layers, "feasible_tp": feasible}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0 if plan.fits else 1
    moe = f", MoE {arch.num_experts} experts top-{arch.experts_per_token}" if arch.is_moe else ""
    print(f"{arch.name}: {arch.params / 1e9:.1f}B params ({arch.active_params / 1e9:.1f}B active{moe}), "
          f"{out['attention']} attention")
    print(f"{gpu.name} x {plan.tp * plan.pp} (TP {plan.tp}, PP {plan.pp}, EP {plan.ep}), "
          f"gpu_memory_utilization {args.gpu_memory_utilization}")
    rows = [("GPU memory", plan.gpu_memory_bytes), ("usable", plan.usable_bytes), ("weights", plan.weight_bytes),
            ("activations (peak)", plan.activation_bytes), ("outside torch", plan.non_torch_bytes),
            ("KV cache", plan.kv_cache_bytes)]
    for name, value in rows:
        print(f"  {name:<20} {value / GIB:8.2f} GiB per GPU")
    print(f"  KV per token         {plan.kv_bytes_per_token / 1024:8.1f} KiB per GPU")
    print(f"  KV cache             {plan.num_gpu_blocks} blocks of {plan.block_size} = {plan.kv_cache_tokens:,} tokens")
    print(f"  max concurrency      {plan.max_concurrent_requests} requests of {plan.context_len} tokens "
          f"({plan.max_concurrency:.2f}x)")
    print(f"  feasible TP          {feasible or 'none on one node'}")
    if not plan.fits:
        print("does not fit: raise --tp/--pp, or pick a larger GPU", file=sys.stderr)
        return 1
    return 0
