"""Every rendered manifest validates: built-in kinds with ``kubernetes-validate`` (the Kubernetes OpenAPI schemas,
strict: unknown fields fail), custom resources against their CRD schemas; the committed ``deploy/manifests`` are
the renderer's output; Lanterna's own container args parse with the real CLI."""

from __future__ import annotations

import dataclasses
import json

import jsonschema
import kubernetes_validate
import pytest
import yaml

from lanterna.cli.main import SUBCOMMANDS, build_parser, main
from lanterna.k8s.discovery_args import spec_from_args
from lanterna.k8s.manifests import PRESETS, DeployOptions, render
from tests.conftest import REPO
from tests.unit.k8s.crd_schemas import SCHEMAS

K8S_VERSION = kubernetes_validate.latest_version()


@pytest.mark.parametrize("preset", sorted(PRESETS), ids=sorted(PRESETS))
def test_every_object_validates(preset: str) -> None:
    kinds = []
    for obj in render(PRESETS[preset]):
        key = (obj["apiVersion"], obj["kind"])
        kinds.append(obj["kind"])
        if key in SCHEMAS:
            jsonschema.validate(obj, SCHEMAS[key])
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "PodDisruptionBudget",
            "ServiceMonitor", "PodMonitor", "PrometheusRule"} <= set(kinds)
    if preset == "epp":
        assert {"InferencePool", "HTTPRoute"} <= set(kinds)
    else:
        assert "HorizontalPodAutoscaler" in kinds


def test_a_bad_object_is_caught() -> None:
    """The validator is not a no-op: a misspelt field fails."""
    dep = next(o for o in render(DeployOptions()) if o["kind"] == "Deployment")
    dep["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    pool = next(o for o in render(PRESETS["epp"]) if o["kind"] == "InferencePool")
    pool["spec"]["targetPortNumber"] = 8000  # the v1alpha2 field is gone in v1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(pool, SCHEMAS[("inference.networking.k8s.io/v1", "InferencePool")])


@pytest.mark.parametrize("preset", sorted(PRESETS), ids=sorted(PRESETS))
def test_committed_manifests_are_current(preset: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "render", "--preset", preset]) == 0
    rendered = capsys.readouterr().out
    committed = (REPO / "deploy" / "manifests" / f"{preset}.yaml").read_text()
    assert rendered == committed, f"run: lanterna deploy render --preset {preset} > deploy/manifests/{preset}.yaml"


def test_rbac_is_read_only_pods_and_pools() -> None:
    role = next(o for o in render(DeployOptions()) if o["kind"] == "Role")
    assert {(tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]} == {
        (("",), ("pods",), ("get", "list", "watch")),
        (("inference.networking.k8s.io", "inference.networking.x-k8s.io"), ("inferencepools",),
         ("get", "list", "watch"))}


def _containers(opts: DeployOptions, name: str) -> list[dict]:
    return [c for o in render(opts) if o["kind"] == "Deployment" and o["metadata"]["name"] == name
            for c in o["spec"]["template"]["spec"]["containers"]]


@pytest.mark.parametrize("preset", ["default", "pd", "precise-offload"])
def test_gateway_args_parse_with_the_real_cli(preset: str) -> None:
    (c,) = _containers(PRESETS[preset], "lanterna")
    args = build_parser().parse_args(c["args"])
    spec = spec_from_args(args)
    assert spec is not None and spec.selector and spec.target_ports == (8000,)
    assert (spec.kv_events_port is not None) == PRESETS[preset].precise


def test_epp_args_parse_when_the_epp_command_exists() -> None:
    if "epp" not in SUBCOMMANDS:
        pytest.skip("lanterna epp is not on this branch yet")
    (c,) = _containers(PRESETS["epp"], "lanterna-epp")
    build_parser().parse_args(c["args"])


def test_vllm_flags_kv_events_offload_and_pd() -> None:
    (c,) = _containers(PRESETS["precise-offload"], "vllm")
    a = c["args"]
    kv = json.loads(a[a.index("--kv-events-config") + 1])
    assert kv["endpoint"] == "tcp://*:5557" and kv["topic"] == "kv@$(POD_IP):8000@meta-llama/Llama-3.1-8B-Instruct"
    xfer = json.loads(a[a.index("--kv-transfer-config") + 1])
    assert xfer["kv_connector"] == "OffloadingConnector" and xfer["kv_connector_extra_config"]["cpu_bytes_to_use"] == 64 << 30
    assert any(e["name"] == "PYTHONHASHSEED" for e in c["env"])  # offloaded block names depend on it
    pd = PRESETS["pd"]
    roles = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]["llm-d.ai/role"]
             for o in render(pd) if o["kind"] == "Deployment" and o["metadata"]["name"].startswith("vllm")}
    assert roles == {"vllm-prefill": "prefill", "vllm-decode": "decode"}
    cfg = yaml.safe_load(next(o for o in render(pd) if o["kind"] == "ConfigMap")["data"]["epp.yaml"])
    from lanterna.scheduler import load_epp_config

    load_epp_config(cfg)  # the scheduler accepts the rendered config


def test_gateway_replicas_spread_and_budget() -> None:
    objs = {(o["kind"], o["metadata"]["name"]): o for o in render(dataclasses.replace(DeployOptions(), replicas=3))}
    dep = objs[("Deployment", "lanterna")]
    assert dep["spec"]["replicas"] == 3
    anti = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"] == \
        "kubernetes.io/hostname"
    assert objs[("PodDisruptionBudget", "lanterna")]["spec"]["minAvailable"] == 1
    assert objs[("HorizontalPodAutoscaler", "lanterna")]["spec"]["minReplicas"] == 3


HELM = REPO / "deploy" / "helm" / "lanterna"


@pytest.mark.parametrize("preset", sorted(PRESETS), ids=sorted(PRESETS))
def test_helm_chart_files_are_current_and_render_the_same_objects(preset: str) -> None:
    """Helm is not installable here, so the chart's only template step (``tpl`` of string placeholders) is
    replayed: with values.yaml and a release namespace the chart yields exactly ``lanterna deploy render``."""
    from lanterna.k8s.manifests import HELM_VALUES, render_helm_file

    text = (HELM / "files" / f"{preset}.yaml").read_text()
    assert text == render_helm_file(preset), "regenerate deploy/helm/lanterna/files (render_helm_file)"
    values = yaml.safe_load((HELM / "values.yaml").read_text())
    assert values["preset"] == "default" and f'"{preset}"' in (HELM / "templates" / "lanterna.yaml").read_text()
    subst = {"{{ .Release.Namespace }}": "ml", "{{ .Values.image }}": values["image"],
             "{{ .Values.vllmImage }}": values["vllmImage"], "{{ .Values.model }}": values["model"],
             '{{ "{{" }}': "{{", '{{ "}}" }}': "}}"}
    for k, v in subst.items():
        text = text.replace(k, v)
    assert "{{ ." not in text
    want = render(dataclasses.replace(PRESETS[preset], namespace="ml", image=values["image"],
                                      vllm_image=values["vllmImage"], model=values["model"]))
    assert list(yaml.safe_load_all(text)) == want
    assert set(HELM_VALUES) == {"namespace", "image", "vllm_image", "model"}


def _autoscaler_objs(opts: DeployOptions) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in render(opts)}


@pytest.mark.parametrize("pd", [False, True], ids=["aggregated", "pd"])
def test_autoscaler_rbac_is_least_privilege_and_bound_to_its_own_account(pd: bool) -> None:
    opts = dataclasses.replace(PRESETS["autoscale"], pd=pd)
    objs = _autoscaler_objs(opts)
    target = "vllm-decode" if pd else "vllm"
    role = objs[("Role", "lanterna-autoscaler")]
    assert {(tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r.get("resourceNames", ())), tuple(r["verbs"]))
            for r in role["rules"]} == {
        (("",), ("pods",), (), ("get", "list", "watch")),  # list/watch cannot be narrowed by name
        (("apps",), ("deployments/scale",), (target,), ("get", "patch"))}
    assert ("Deployment", target) in objs  # resourceNames names a Deployment that exists
    binding = objs[("RoleBinding", "lanterna-autoscaler")]
    assert binding["roleRef"]["name"] == "lanterna-autoscaler"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "lanterna-autoscaler", "namespace": "default"}]
    pod = objs[("Deployment", "lanterna-autoscaler")]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "lanterna-autoscaler" and ("ServiceAccount", "lanterna-autoscaler") in objs
    # the gateway's own identity gains nothing
    assert objs[("Role", "lanterna-discovery")] == _autoscaler_objs(DeployOptions(pd=pd))[("Role", "lanterna-discovery")]


@pytest.mark.parametrize("mode", ["gateway", "epp"])
@pytest.mark.parametrize("pd", [False, True], ids=["aggregated", "pd"])
def test_autoscaler_args_parse_with_the_real_cli_and_point_at_rendered_objects(mode: str, pd: bool) -> None:
    from lanterna.cli.autoscale import build_scaler
    from lanterna.k8s.discovery import DiscoverySpec
    from lanterna.k8s.discovery_model import parse_selector

    opts = dataclasses.replace(PRESETS["autoscale"], mode=mode, pd=pd, autoscale_max_replicas=5)
    objs = _autoscaler_objs(opts)
    (c,) = _containers(opts, "lanterna-autoscaler")
    args = build_parser().parse_args(c["args"])
    assert args.command == "autoscale" and args.actuate == "k8s" and args.namespace == "default"
    scaled = objs[("Deployment", args.deployment)]
    assert "replicas" not in scaled["spec"]  # owned by the autoscaler: re-applying must not reset it
    pod_labels = scaled["spec"]["template"]["metadata"]["labels"]
    DiscoverySpec(selector=args.selector, target_ports=tuple(args.target_port))  # the discovery accepts it
    assert dict(parse_selector(args.selector)) == {k: v for k, v in pod_labels.items()
                                                   if k in dict(parse_selector(args.selector))}
    assert set(dict(parse_selector(args.selector))) >= {"app.kubernetes.io/name", "llm-d.ai/role"}
    assert args.target_port == [8000]
    host, port = args.gateway.removeprefix("http://").split(":")
    svc = objs[("Service", host)]
    assert int(port) in {p["port"] for p in svc["spec"]["ports"]} and int(port) == 9090
    _, variant = build_scaler(args, args.variant)
    assert (variant.min_replicas, variant.max_replicas) == (1, 5)
    monitor = objs[("PodMonitor", "lanterna-autoscaler")]
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == c["ports"][0]["name"]
    assert c["ports"][0]["containerPort"] == args.port and args.host == "0.0.0.0"
    others = [o for o in render(opts) if o["kind"] == "Deployment" and o["metadata"]["name"] != args.deployment]
    assert all("replicas" in o["spec"] for o in others)


def test_no_autoscaler_unless_asked() -> None:
    for preset, opts in PRESETS.items():
        names = {o["metadata"]["name"] for o in render(opts)}
        assert ("lanterna-autoscaler" in names) == (preset == "autoscale")


def test_deploy_cli_autoscaler_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "render", "--autoscaler", "--autoscale-max-replicas", "3", "--pd"]) == 0
    objs = list(yaml.safe_load_all(capsys.readouterr().out))
    (dep,) = [o for o in objs if o["metadata"]["name"] == "lanterna-autoscaler" and o["kind"] == "Deployment"]
    a = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert a[a.index("--max-replicas") + 1] == "3" and a[a.index("--deployment") + 1] == "vllm-decode"
    assert main(["deploy", "render", "--autoscaler", "--autoscale-min-replicas", "4",
                 "--autoscale-max-replicas", "2"]) == 2
    assert main(["deploy", "render", "--autoscaler", "--autoscale-min-replicas", "0"]) == 2


def test_autoscale_cli_rejects_mixed_endpoint_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["autoscale", "--selector", "app=vllm", "--endpoint", "10.0.0.1:8000", "--port", "0"]) != 0
    assert "not both" in capsys.readouterr().err
    assert main(["autoscale", "--target-port", "8000", "--port", "0"]) != 0
    assert "--target-port needs --selector" in capsys.readouterr().err


def test_docs_hpa_path_targets_the_rendered_deployment_with_wva_metric() -> None:
    """The alternative to ``--autoscaler`` in docs/kubernetes.md: KEDA scaling the same Deployment on
    ``wva_desired_replicas`` (one actuator at a time)."""
    text = (REPO / "docs" / "kubernetes.md").read_text()
    block = text.split("```yaml\n# keda-scaledobject.yaml\n", 1)[1].split("```", 1)[0]
    so = yaml.safe_load(block)
    assert so["apiVersion"] == "keda.sh/v1alpha1" and so["kind"] == "ScaledObject"
    assert so["spec"]["scaleTargetRef"]["name"] == "vllm"
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and "wva_desired_replicas" in trigger["metadata"]["query"]
    assert trigger["metricType"] == "AverageValue"  # Value would multiply the current count by the desired one
    assert 'variant_name="vllm"' in trigger["metadata"]["query"]
