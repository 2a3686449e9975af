"""Kubernetes manifests for Lanterna and its vLLM model servers (pure: options in, objects out).

``lanterna deploy render`` prints them for users without Helm; the Helm chart (``deploy/helm/lanterna``) renders
the same objects from ``values.yaml``. Two modes:

- ``gateway``: Lanterna is the gateway. A Deployment (active-active replicas, spread over nodes by anti-affinity,
  a PodDisruptionBudget, an HPA on CPU) watching the model-server pods by label selector, a Service, a
  ServiceMonitor;
- ``epp``: Lanterna is the endpoint picker behind a Gateway API Inference Extension gateway: an ``InferencePool``
  (``inference.networking.k8s.io/v1``) whose ``endpointPickerRef`` is ``lanterna epp --grpc-port 9002``, and an
  ``HTTPRoute`` from the cluster's ``Gateway`` to the pool.

Both: vLLM Deployments (one aggregated, or prefill + decode with NIXL for P/D) labelled with ``llm-d.ai/role``,
KV events on when the scheduler routes by them (each pod's publisher binds ``tcp://*:5557`` and every Lanterna
replica connects to every pod, so active-active replicas hold the same index), offload flags from
``lanterna.offload.vllm_offload_args``, RBAC limited to get/list/watch pods and inferencepools, a PodMonitor for
vLLM and PrometheusRule alerts.

Optional (``autoscaler``): ``lanterna autoscale --actuate k8s`` as its own Deployment and ServiceAccount, whose
Role may only read pods and get/patch ``deployments/scale`` of the one model-server Deployment it scales
(``resourceNames``), with a PodMonitor for its ``wva_*`` gauges. The scaled Deployment then has no
``spec.replicas`` (as with an HPA), so re-applying the manifests does not undo the autoscaler.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from lanterna.offload.vllm_args import OffloadSpec, gib_to_bytes, vllm_offload_args

Obj = dict[str, Any]

KV_EVENTS_PORT = 5557
VLLM_PORT = 8000
GATEWAY_PORT = 8000
METRICS_PORT = 9090
GRPC_PORT = 9002
GRPC_HEALTH_PORT = 9003
AUTOSCALER_PORT = 9100  # ``lanterna autoscale``'s /metrics
NAME = "lanterna"


@dataclass(frozen=True, slots=True)
class DeployOptions:
    mode: Literal["gateway", "epp"] = "gateway"
    namespace: str = "default"
    image: str = "ghcr.io/lanterna/lanterna:0.1.0"
    replicas: int = 2  # Lanterna replicas (active-active)
    max_replicas: int = 8  # HPA ceiling (gateway mode)
    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    vllm_image: str = "vllm/vllm-openai:v0.11.0"
    vllm_replicas: int = 2  # aggregated servers, or decode servers with P/D
    prefill_replicas: int = 1
    pd: bool = False
    precise: bool = False  # precise-prefix-cache-scorer from KV events
    cpu_offload_gib: float = 0.0  # vLLM CPU KV tier per pod (0: off)
    gpus_per_pod: int = 1
    pool: str = "lanterna-pool"
    gateway_name: str = "inference-gateway"  # the Gateway the HTTPRoute attaches to (epp mode)
    extra_labels: dict[str, str] = field(default_factory=dict)
    autoscaler: bool = False  # ``lanterna autoscale --actuate k8s`` on the (decode) model-server Deployment
    autoscale_min_replicas: int = 1  # >= 1: scale from zero needs the gateway's hold (``up --autoscale`` only)
    autoscale_max_replicas: int = 8

    @property
    def server_labels(self) -> dict[str, str]:
        """The labels every model-server pod carries and the pool/selector matches."""
        return {"app.kubernetes.io/name": "vllm", "llm-d.ai/inferenceServing": "true", **self.extra_labels}


def _meta(name: str, o: DeployOptions, **labels: str) -> Obj:
    return {"name": name, "namespace": o.namespace,
            "labels": {"app.kubernetes.io/part-of": NAME, "app.kubernetes.io/managed-by": "lanterna-deploy", **labels}}


def scheduler_config(o: DeployOptions) -> Obj | None:
    """The EndpointPickerConfig the options call for (None: the built-in ``lanterna`` policy)."""
    if o.pd:
        plugins: list[Obj] = [
            {"type": "prefix-based-pd-decider", "parameters": {"nonCachedTokens": 256}},
            {"type": "disagg-profile-handler", "parameters": {"deciderPluginName": "prefix-based-pd-decider"}},
            {"type": "prefill-filter"}, {"type": "decode-filter"}, {"type": "queue-scorer"},
            {"type": "precise-prefix-cache-scorer" if o.precise else "prefix-cache-scorer"},
            {"type": "max-score-picker"}]
        prefix = plugins[5]["type"]
        profiles = [
            {"name": "prefill", "plugins": [{"pluginRef": "prefill-filter"}, {"pluginRef": "queue-scorer"},
                                            {"pluginRef": "max-score-picker"}]},
            {"name": "decode", "plugins": [{"pluginRef": "decode-filter"}, {"pluginRef": prefix, "weight": 2},
                                           {"pluginRef": "queue-scorer"}, {"pluginRef": "max-score-picker"}]}]
    elif o.precise:
        plugins = [{"type": "precise-prefix-cache-scorer"}, {"type": "kv-cache-utilization-scorer"},
                   {"type": "queue-scorer"}, {"type": "max-score-picker"}]
        profiles = [{"name": "default", "plugins": [
            {"pluginRef": "precise-prefix-cache-scorer", "weight": 3},
            {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
            {"pluginRef": "queue-scorer", "weight": 2}, {"pluginRef": "max-score-picker"}]}]
    else:
        return None
    return {"apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig", "plugins": plugins,
            "schedulingProfiles": profiles}


def rbac(o: DeployOptions) -> list[Obj]:
    """Least privilege: read pods and InferencePools in the namespace, nothing else."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, o)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(f"{NAME}-discovery", o),
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                   {"apiGroups": ["inference.networking.k8s.io", "inference.networking.x-k8s.io"],
                    "resources": ["inferencepools"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _meta(f"{NAME}-discovery", o),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{NAME}-discovery"},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": o.namespace}]},
    ]


def scaled_deployment(o: DeployOptions) -> str:
    """The model-server Deployment the autoscaler owns: the aggregated one, or decode with P/D."""
    return "vllm-decode" if o.pd else "vllm"


def _scaled_labels(o: DeployOptions) -> dict[str, str]:
    return {**o.server_labels, "llm-d.ai/role": "decode" if o.pd else "both"}


def autoscaler_args(o: DeployOptions) -> list[str]:
    """``lanterna autoscale``: endpoints from the scaled pods (selector), demand from Lanterna's /metrics."""
    app = f"{NAME}-epp" if o.mode == "epp" else NAME
    selector = ",".join(f"{k}={v}" for k, v in _scaled_labels(o).items())
    return ["autoscale", "--gateway", f"http://{app}:{METRICS_PORT}", "--selector", selector,
            "--target-port", str(VLLM_PORT), "--namespace", o.namespace, "--host", "0.0.0.0",
            "--port", str(AUTOSCALER_PORT), "--actuate", "k8s", "--deployment", scaled_deployment(o),
            "--variant", scaled_deployment(o), "--min-replicas", str(o.autoscale_min_replicas),
            "--max-replicas", str(o.autoscale_max_replicas)]


def autoscaler(o: DeployOptions) -> list[Obj]:
    """The autoscaler's identity, least-privilege RBAC, Deployment (one replica: two would fight) and monitor."""
    name = f"{NAME}-autoscaler"
    sel = {"app.kubernetes.io/name": name}
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
             {"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": [scaled_deployment(o)],
              "verbs": ["get", "patch"]}]
    container: Obj = {
        "name": "autoscaler", "image": o.image, "args": autoscaler_args(o),
        "ports": [{"name": "metrics", "containerPort": AUTOSCALER_PORT}],
        "readinessProbe": {"httpGet": {"path": "/metrics", "port": "metrics"}, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/metrics", "port": "metrics"}, "periodSeconds": 20,
                          "failureThreshold": 3},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, o)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(name, o), "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _meta(name, o),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": o.namespace}]},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, o, **sel),
         "spec": {"replicas": 1, "selector": {"matchLabels": sel}, "strategy": {"type": "Recreate"},
                  "template": {"metadata": {"labels": {**sel, "app.kubernetes.io/part-of": NAME}},
                               "spec": {"serviceAccountName": name, "containers": [container]}}}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": _meta(name, o),
         "spec": {"selector": {"matchLabels": sel},
                  "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}]}},
    ]


def _lanterna_args(o: DeployOptions) -> list[str]:
    if o.mode == "epp":
        # gRPC health on 9003 and metrics on 9090: GAIE's endpoint-picker defaults (PROTOCOLS.md section 6)
        args = ["epp", "--grpc-port", str(GRPC_PORT), "--pool", o.pool]
    else:
        selector = ",".join(f"{k}={v}" for k, v in o.server_labels.items())
        args = ["gateway", "--host", "0.0.0.0", "--port", str(GATEWAY_PORT), "--selector", selector,
                "--target-port", str(VLLM_PORT), "--set", f"gateway.metrics_port={METRICS_PORT}",
                "--set", f"gateway.pool_name={o.pool}"]
    args += ["--model", o.model]
    if o.precise:
        args += ["--pod-kv-events-port", str(KV_EVENTS_PORT)]
    if scheduler_config(o) is not None:
        args += ["--scheduler-config", "/etc/lanterna/epp.yaml"]
    return args


def lanterna(o: DeployOptions) -> list[Obj]:
    """The Lanterna Deployment, its Service, disruption budget, scaling and scrape config."""
    app = f"{NAME}-epp" if o.mode == "epp" else NAME
    sel = {"app.kubernetes.io/name": app}
    if o.mode == "epp":
        ports = [{"name": "grpc", "containerPort": GRPC_PORT}, {"name": "grpc-health", "containerPort": GRPC_HEALTH_PORT},
                 {"name": "metrics", "containerPort": METRICS_PORT}]
        probe: Obj = {"grpc": {"port": GRPC_HEALTH_PORT, "service": "inference-extension"}}
        svc_ports = [{"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT, "appProtocol": "http2"},
                     {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT}]
    else:
        ports = [{"name": "http", "containerPort": GATEWAY_PORT}, {"name": "metrics", "containerPort": METRICS_PORT}]
        probe = {"httpGet": {"path": "/ready", "port": "http"}}
        svc_ports = [{"name": "http", "port": 80, "targetPort": "http"},
                     {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"}]
    container: Obj = {
        "name": NAME, "image": o.image, "args": _lanterna_args(o), "ports": ports,
        "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "readinessProbe": {**probe, "periodSeconds": 2, "failureThreshold": 2},
        "livenessProbe": {**({"tcpSocket": {"port": GRPC_PORT}} if o.mode == "epp" else
                             {"httpGet": {"path": "/health", "port": "http"}}), "periodSeconds": 10,
                          "failureThreshold": 3},
        "resources": {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
    }
    volumes: list[Obj] = []
    out: list[Obj] = []
    cfg = scheduler_config(o)
    if cfg is not None:
        import yaml

        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{app}-scheduler", o),
                    "data": {"epp.yaml": yaml.safe_dump(cfg, sort_keys=False)}})
        container["volumeMounts"] = [{"name": "scheduler", "mountPath": "/etc/lanterna", "readOnly": True}]
        volumes.append({"name": "scheduler", "configMap": {"name": f"{app}-scheduler"}})
    pod_spec: Obj = {
        "serviceAccountName": NAME, "terminationGracePeriodSeconds": 45, "containers": [container],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": sel},
                                                "topologyKey": "kubernetes.io/hostname"}}]}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                       "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": sel}}],
    }
    if volumes:
        pod_spec["volumes"] = volumes
    out += [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(app, o, **sel),
         "spec": {"replicas": o.replicas, "selector": {"matchLabels": sel},
                  "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                  "template": {"metadata": {"labels": {**sel, "app.kubernetes.io/part-of": NAME}},
                               "spec": pod_spec}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(app, o, **sel),
         "spec": {"selector": sel, "ports": svc_ports}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(app, o),
         "spec": {"minAvailable": 1, "selector": {"matchLabels": sel}}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": _meta(app, o),
         "spec": {"selector": {"matchLabels": sel}, "endpoints": [{"port": "metrics", "interval": "15s"}]}},
    ]
    if o.mode == "gateway":
        out.append({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _meta(app, o),
                    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app},
                             "minReplicas": o.replicas, "maxReplicas": max(o.max_replicas, o.replicas),
                             "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                                 "type": "Utilization", "averageUtilization": 60}}}]}})
    return out


def _vllm_args(o: DeployOptions, role: str) -> tuple[list[str], list[Obj]]:
    args = ["--model", o.model, "--port", str(VLLM_PORT), "--enable-prefix-caching"]
    env: list[Obj] = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    if o.precise:
        kv = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{KV_EVENTS_PORT}",
              "topic": f"kv@$(POD_IP):{VLLM_PORT}@{o.model}"}
        args += ["--kv-events-config", json.dumps(kv, separators=(",", ":"))]
    if o.pd:
        args += ["--kv-transfer-config", json.dumps({"kv_connector": "NixlConnector", "kv_role": "kv_both"},
                                                    separators=(",", ":"))]
    elif o.cpu_offload_gib > 0:
        off = vllm_offload_args(OffloadSpec(cpu_bytes=gib_to_bytes(o.cpu_offload_gib)))
        args += list(off.flags)
        env += [{"name": k, "value": v} for k, v in sorted(off.env.items())]
    return args, env


def vllm(o: DeployOptions) -> list[Obj]:
    """Model-server Deployments: one aggregated (role ``both``), or prefill + decode for P/D."""
    roles = [("prefill", o.prefill_replicas), ("decode", o.vllm_replicas)] if o.pd else [("both", o.vllm_replicas)]
    out = []
    for role, replicas in roles:
        name = "vllm" if role == "both" else f"vllm-{role}"
        labels = {**o.server_labels, "llm-d.ai/role": role}
        args, env = _vllm_args(o, role)
        ports = [{"name": "http", "containerPort": VLLM_PORT}]
        if o.precise:
            ports.append({"name": "kv-events", "containerPort": KV_EVENTS_PORT})
        gpu = {"nvidia.com/gpu": str(o.gpus_per_pod)}
        memory = f"{32 + int(o.cpu_offload_gib)}Gi"
        container = {
            "name": "vllm", "image": o.vllm_image, "args": args, "env": env, "ports": ports,
            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5},
            "startupProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10,
                             "failureThreshold": 90},
            "resources": {"requests": {**gpu, "cpu": "8", "memory": memory}, "limits": {**gpu, "memory": memory}},
            "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],
        }
        spec: Obj = {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "containers": [container], "terminationGracePeriodSeconds": 60,
                         "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]}}}
        if o.autoscaler and name == scaled_deployment(o):
            del spec["replicas"]  # the autoscaler owns it; created at 1, re-applying keeps its count
        out.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, o, **labels),
                    "spec": spec})
    out.append({"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": _meta("vllm", o),
                "spec": {"selector": {"matchLabels": o.server_labels},
                         "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "15s",
                                                  "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_label_llm_d_ai_role"],
                                                                   "targetLabel": "role"}]}]}})
    return out


def inference_pool(o: DeployOptions) -> list[Obj]:
    """EPP mode: the pool the gateway routes to, and the route from the cluster's Gateway to it."""
    return [
        {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool", "metadata": _meta(o.pool, o),
         "spec": {"selector": {"matchLabels": o.server_labels}, "targetPorts": [{"number": VLLM_PORT}],
                  "endpointPickerRef": {"name": f"{NAME}-epp", "port": {"number": GRPC_PORT},
                                        "failureMode": "FailClose"}}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": _meta(o.pool, o),
         "spec": {"parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": o.gateway_name}],
                  "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                             "backendRefs": [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                              "name": o.pool}],
                             "timeouts": {"request": "300s"}}]}},
    ]


def alerts(o: DeployOptions) -> Obj:
    """PrometheusRule: no capacity, shedding, slow first tokens, KV pressure, stale KV index, failing upstreams."""
    pool = f'inference_pool="{o.pool}"'
    rules = [
        ("LanternaNoReadyEndpoints", f"max(inference_pool_ready_pods{{{pool}}}) == 0", "2m", "critical",
         "No model-server pod is ready in pool {{ $labels.inference_pool }}."),
        ("LanternaSheddingRequests", "sum(rate(lanterna_flow_control_rejected_requests_total[5m])) "
         "/ clamp_min(sum(rate(inference_objective_request_total[5m])), 1e-9) > 0.05", "10m", "warning",
         "More than 5% of requests are rejected by flow control (saturated or queue TTL)."),
        ("LanternaHighTTFT", "histogram_quantile(0.99, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[5m]))) "
         "> 5", "10m", "warning", "p99 time to first token above 5 s."),
        ("LanternaKVCacheFull", f"max(inference_pool_average_kv_cache_utilization{{{pool}}}) > 0.95", "15m",
         "warning", "Average KV-cache use above 95%: add replicas or offload."),
        ("LanternaKVIndexLagging", "max(lanterna_kvindex_lag_seconds) > 30", "5m", "warning",
         "KV events from an endpoint are more than 30 s old: precise routing is stale."),
        ("LanternaUpstreamFailures", "sum(rate(lanterna_gateway_upstream_failures_total[5m])) > 1", "10m", "warning",
         "Model servers are failing requests (connect errors, timeouts, 5xx)."),
    ]
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": _meta(NAME, o),
            "spec": {"groups": [{"name": "lanterna", "rules": [
                {"alert": name, "expr": expr, "for": for_, "labels": {"severity": sev},
                 "annotations": {"summary": text}} for name, expr, for_, sev, text in rules]}]}}


def render(o: DeployOptions) -> list[Obj]:
    """Every object, in apply order (RBAC, config, Lanterna, pool and route, model servers, autoscaler,
    monitoring)."""
    objs = rbac(o) + lanterna(o)
    if o.mode == "epp":
        objs += inference_pool(o)
    objs += vllm(o)
    if o.autoscaler:
        objs += autoscaler(o)
    return objs + [alerts(o)]


PRESETS: dict[str, DeployOptions] = {
    "default": DeployOptions(),
    "epp": DeployOptions(mode="epp", replicas=1),
    "pd": DeployOptions(pd=True),
    "precise-offload": DeployOptions(precise=True, cpu_offload_gib=64),
    "autoscale": DeployOptions(autoscaler=True),
}


# Helm: the chart ships each preset rendered with these string fields left as template placeholders, and renders
# the chosen one with ``tpl`` (so the chart and ``lanterna deploy render`` cannot drift: a test regenerates it).
HELM_VALUES: dict[str, str] = {"namespace": "{{ .Release.Namespace }}", "image": "{{ .Values.image }}",
                               "vllm_image": "{{ .Values.vllmImage }}", "model": "{{ .Values.model }}"}
_PROMQL_LABEL = "{{ $labels.inference_pool }}"
_PROMQL_LABEL_ESCAPED = '{{ "{{" }} $labels.inference_pool {{ "}}" }}'


def render_helm_file(preset: str) -> str:
    """``deploy/helm/lanterna/files/<preset>.yaml``: the preset with placeholders for ``tpl``."""
    import dataclasses

    import yaml

    h = HELM_VALUES
    opts = dataclasses.replace(PRESETS[preset], namespace=h["namespace"], image=h["image"],
                               vllm_image=h["vllm_image"], model=h["model"])
    text = yaml.safe_dump_all(render(opts), sort_keys=False, width=1 << 16)  # no folded placeholders
    return text.replace(_PROMQL_LABEL, _PROMQL_LABEL_ESCAPED)
