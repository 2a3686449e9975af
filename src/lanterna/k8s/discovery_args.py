"""Flags for Kubernetes discovery, shared by ``lanterna gateway`` and ``lanterna epp``.

    --pool NAME [--namespace NS]                      the pods of an InferencePool (v1, or v1alpha2)
    --selector app=vllm [--target-port 8000 ...]      the pods matching a label selector

``spec_from_args`` turns them into a ``DiscoverySpec`` (None when neither is given); ``start_discovery`` makes
the API client (in-cluster or kubeconfig), starts watching and returns the ``KubeDiscovery`` whose ``close()``
also closes the client. No Kubernetes import happens until discovery is asked for.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when used: building the parser (``--help``) loads no client
    from lanterna.k8s.discovery import DiscoverySpec, EndpointSink, KubeDiscovery

NAMESPACE_ENV = "POD_NAMESPACE"  # set from the downward API in the charts


def add_discovery_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Kubernetes discovery (instead of, or beside, --endpoint)")
    a = g.add_argument
    a("--pool", default=None, metavar="NAME",
      help="route to the ready pods of this InferencePool (inference.networking.k8s.io/v1; v1alpha2 when v1 is "
           "not served): spec.selector picks pods, each spec.targetPorts entry is an endpoint")
    a("--selector", default=None, metavar="K=V[,K=V]",
      help="route to the ready pods matching this label selector (equality terms), on --target-port")
    a("--namespace", default=None, metavar="NS", help=f"namespace of the pool/pods (default: ${NAMESPACE_ENV}, "
                                                       "else the kubeconfig's, else default)")
    a("--target-port", type=int, action="append", default=[], metavar="PORT",
      help="with --selector: model-server port(s) on each pod, one endpoint per port (data-parallel ranks; "
           "default 8000)")
    a("--pool-api-version", choices=["auto", "v1", "v1alpha2"], default="auto", help="InferencePool API version")
    a("--pod-kv-events-port", type=int, default=None, metavar="PORT",
      help="connect to each pod's KV-event publisher at this port (+ data-parallel rank); the pod annotation "
           "lanterna.ai/kv-events-port overrides it. Leave unset when pods connect to kvindex.zmq_endpoint")
    a("--kubeconfig", default=None, metavar="FILE",
      help="kubeconfig file (default: the pod's service account in a cluster, else ~/.kube/config)")
    a("--kube-context", default=None, metavar="NAME", help="kubeconfig context")


def spec_from_args(args: argparse.Namespace, models: list[str] | tuple[str, ...] = ()) -> DiscoverySpec | None:
    """The spec these flags ask for, or None without --pool/--selector (raises ValueError on bad flags)."""
    from lanterna.k8s.discovery import DiscoverySpec

    if args.pool is None and args.selector is None:
        if args.target_port or args.pod_kv_events_port is not None:
            raise ValueError("--target-port/--pod-kv-events-port need --pool or --selector")
        return None
    if args.pool is not None and args.target_port:
        raise ValueError("--target-port is for --selector; a pool names its own targetPorts")
    ns = args.namespace or os.environ.get(NAMESPACE_ENV) or _kubeconfig_namespace(args) or "default"
    return DiscoverySpec(namespace=ns, pool=args.pool, pool_version=args.pool_api_version, selector=args.selector,
                         target_ports=tuple(args.target_port or [8000]), kv_events_port=args.pod_kv_events_port,
                         models=tuple(models), kubeconfig=args.kubeconfig, context=args.kube_context)


def _kubeconfig_namespace(args: argparse.Namespace) -> str | None:
    """The current context's namespace, as kubectl would use it (None in a cluster or without a file)."""
    if args.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    path = os.path.expanduser(args.kubeconfig or os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0])
    try:
        import yaml

        with open(path) as f:
            doc: Any = yaml.safe_load(f)
        name = args.kube_context or doc.get("current-context")
        for ctx in doc.get("contexts") or []:
            if ctx.get("name") == name:
                ns = (ctx.get("context") or {}).get("namespace")
                return str(ns) if ns else None
    except (OSError, AttributeError, ValueError):
        return None
    return None


async def start_discovery(spec: DiscoverySpec, sink: EndpointSink) -> KubeDiscovery:
    """Connect to the API server and start feeding ``sink``; ``await disc.close()`` stops it and the client."""
    from lanterna.k8s.discovery import KubeDiscovery, make_api_client

    api = await make_api_client(spec)
    disc = KubeDiscovery(api, spec, sink)
    disc.owned_api = api
    disc.start()
    return disc


class KubeEndpointSource:
    """``lanterna epp``'s endpoint source (``lanterna.epp.server.EndpointSource``): discovery for as long as the
    picker runs; cancelling ``run`` stops the watch and closes the client."""

    def __init__(self, spec: DiscoverySpec) -> None:
        self.spec = spec

    async def run(self, sink: EndpointSink) -> None:
        disc = await start_discovery(self.spec, sink)
        try:
            await disc.wait_stopped()
        finally:
            await disc.close()
