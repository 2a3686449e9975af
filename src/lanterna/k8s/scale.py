"""Actuating on Kubernetes: a Deployment's ``scale`` subresource, one Deployment per variant.

``GET``/``PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale`` (RBAC: ``deployments/scale`` get,
patch; ``lanterna deploy`` renders it) through the official ``kubernetes_asyncio`` client. ``spec.replicas`` is
what was asked for (ready + starting), which is what the autoscaler counts as supply; readiness comes from the
endpoints' metrics, not from here. Patching only the subresource leaves the rest of the Deployment alone (an
HPA on the same Deployment would fight it: use one or the other, e.g. publish-only ``wva_desired_replicas`` for
KEDA, or ``--actuate k8s`` without an HPA).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


class DeploymentScaler:
    """Implements ``autoscale.loop.Actuator`` over an ``ApiClient`` (``k8s.discovery.make_api_client``)."""

    def __init__(self, api_client: Any, namespace: str, deployments: Mapping[str, str]) -> None:
        from kubernetes_asyncio import client

        self._apps = client.AppsV1Api(api_client)
        self.namespace = namespace
        self.deployments = dict(deployments)  # variant -> Deployment name

    async def replicas(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for variant, name in self.deployments.items():
            scale = await self._apps.read_namespaced_deployment_scale(name, self.namespace)
            out[variant] = int(scale.spec.replicas or 0)
        return out

    async def scale(self, variant: str, replicas: int) -> None:
        name = self.deployments[variant]
        kw: dict[str, Any] = {"_content_type": "application/merge-patch+json"}  # the client's own option, untyped
        await self._apps.patch_namespaced_deployment_scale(name, self.namespace, {"spec": {"replicas": replicas}},
                                                           **kw)
        log.info("k8s_scaled", extra={"deployment": name, "namespace": self.namespace, "replicas": replicas})
