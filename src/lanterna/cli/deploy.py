"""``lanterna deploy render``: Kubernetes manifests for Lanterna and vLLM, for users without Helm.

    lanterna deploy render                         # Lanterna as the gateway, aggregated vLLM
    lanterna deploy render --mode epp              # Lanterna as the EPP of an InferencePool + HTTPRoute
    lanterna deploy render --pd                    # prefill/decode vLLM Deployments (NIXL)
    lanterna deploy render --precise --cpu-offload-gib 64 | kubectl apply -f -
    lanterna deploy render --autoscaler            # + lanterna autoscale --actuate k8s on the vLLM Deployment

The same objects as the Helm chart in ``deploy/helm/lanterna``; ``deploy/manifests/*.yaml`` are these presets.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="deploy_command", required=True)
    r = sub.add_parser("render", help="print manifests (YAML, one document per object)")
    a = r.add_argument
    a("--preset", choices=["default", "epp", "pd", "precise-offload", "autoscale"], default=None,
      help="start from a preset (deploy/manifests/<preset>.yaml); flags below override it")
    a("--mode", choices=["gateway", "epp"], default=None, help="Lanterna as the gateway, or as an InferencePool's EPP")
    a("--namespace", default=None)
    a("--image", default=None, help="Lanterna image")
    a("--replicas", type=int, default=None, help="Lanterna replicas (active-active)")
    a("--model", default=None, help="model vLLM serves")
    a("--vllm-image", default=None)
    a("--vllm-replicas", type=int, default=None, help="aggregated (or decode, with --pd) vLLM replicas")
    a("--prefill-replicas", type=int, default=None)
    a("--pd", action="store_true", default=None, help="prefill/decode disaggregation")
    a("--precise", action="store_true", default=None, help="precise prefix routing from vLLM KV events")
    a("--cpu-offload-gib", type=float, default=None, help="vLLM CPU KV-cache tier per pod (GiB)")
    a("--pool", default=None, help="InferencePool name (also the metrics' inference_pool label)")
    a("--gateway-name", default=None, help="epp mode: the Gateway the HTTPRoute attaches to")
    a("--autoscaler", action="store_true", default=None,
      help="add lanterna autoscale --actuate k8s (own ServiceAccount; Role: deployments/scale of the vLLM "
           "Deployment only) scaling the aggregated (or decode) vLLM Deployment")
    a("--autoscale-min-replicas", type=int, default=None, help="with --autoscaler: fewest vLLM replicas (>= 1)")
    a("--autoscale-max-replicas", type=int, default=None, help="with --autoscaler: most vLLM replicas")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import yaml

    from lanterna.k8s.manifests import PRESETS, render
    from lanterna.offload.vllm_args import OffloadArgsError

    opts = PRESETS[args.preset or "default"]
    keys = ("mode", "namespace", "image", "replicas", "model", "vllm_image", "vllm_replicas", "prefill_replicas",
            "pd", "precise", "cpu_offload_gib", "pool", "gateway_name", "autoscaler", "autoscale_min_replicas",
            "autoscale_max_replicas")
    changes = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    for k in ("replicas", "vllm_replicas", "prefill_replicas", "autoscale_min_replicas", "autoscale_max_replicas"):
        if changes.get(k, 1) < 1:
            print(f"lanterna deploy: error: --{k.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    lo = changes.get("autoscale_min_replicas", opts.autoscale_min_replicas)
    if lo > changes.get("autoscale_max_replicas", opts.autoscale_max_replicas):
        print("lanterna deploy: error: --autoscale-min-replicas exceeds --autoscale-max-replicas", file=sys.stderr)
        return 2
    try:
        objs = render(dataclasses.replace(opts, **changes))
    except OffloadArgsError as exc:
        print(f"lanterna deploy: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump_all(objs, sort_keys=False, width=120))
    return 0
