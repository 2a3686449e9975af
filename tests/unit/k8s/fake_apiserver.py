"""A small Kubernetes API server on loopback speaking the real list/watch protocol (no real one runs here).

What the discovery client relies on, as the real API server does it:
- ``GET /api/v1/namespaces/{ns}/pods`` and ``GET /apis/{group}/{version}/namespaces/{ns}/inferencepools``:
  a list (``{kind: XList, metadata: {resourceVersion, continue}, items}``, paged by ``limit``/``continue``),
  filtered by ``labelSelector`` (equality terms) and ``fieldSelector=metadata.name=N``;
- the same path with ``watch=true&resourceVersion=RV``: a chunked stream of one JSON event per line, first the
  history after RV, then live events; filtered watches turn a relabel out of the selector into ``DELETED`` and
  into it into ``ADDED`` (as the watch cache does); ``timeoutSeconds`` ends the stream; bookmarks when asked;
- a resourceVersion older than the compaction horizon: an ``ERROR`` event with a 410 ``Status`` (watch) or HTTP
  410 (list);
- ``GET /apis/{group}/{version}``: the resource list, 404 when that group version is not served.
Test hooks: ``put``/``delete`` objects, ``drop_watches()`` (connections cut mid-stream), ``compact()``.
"""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

Obj = dict[str, Any]


@dataclass
class _Event:
    rv: int
    resource: str  # "pods" | "inferencepools/<group>/<version>"
    namespace: str
    old: Obj | None
    new: Obj | None  # None: deleted


@dataclass
class FakeApiServer:
    served_pool_versions: tuple[str, ...] = ("v1",)
    rv: int = 100
    objects: dict[tuple[str, str, str], Obj] = field(default_factory=dict)  # (resource, ns, name) -> object
    history: list[_Event] = field(default_factory=list)
    compacted: int = 0  # watches from a version below this get 410
    watches: list[tuple[str, asyncio.Queue[_Event | None]]] = field(default_factory=list)
    num_watch_requests: int = 0
    num_list_requests: int = 0
    opened: asyncio.Event = field(default_factory=asyncio.Event)  # set whenever a watch starts streaming
    gate: asyncio.Event | None = None  # while set to an unset Event, new watch requests wait (``hold``)
    server: TestServer | None = None
    scale_patches: list[tuple[str, Obj]] = field(default_factory=list)  # (content type, body) per scale PATCH

    # -- lifecycle --------------------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{ns}/pods", self._pods)
        app.router.add_get("/apis/{group}/{version}/namespaces/{ns}/inferencepools", self._pools)
        app.router.add_get("/apis/{group}/{version}", self._resources)
        app.router.add_get("/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale", self._get_scale)
        app.router.add_patch("/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale", self._patch_scale)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return f"http://127.0.0.1:{self.server.port}"

    async def close(self) -> None:
        self.drop_watches()
        if self.server is not None:
            await self.server.close()

    # -- test hooks -------------------------------------------------------------------------------------------

    def put(self, resource: str, obj: Obj) -> None:
        meta = obj["metadata"]
        key = (resource, meta.get("namespace", "default"), meta["name"])
        self.rv += 1
        new = copy.deepcopy(obj)
        new["metadata"]["resourceVersion"] = str(self.rv)
        old = self.objects.get(key)
        self.objects[key] = new
        self._emit(_Event(self.rv, resource, key[1], old, new))

    def delete(self, resource: str, name: str, namespace: str = "default") -> None:
        old = self.objects.pop((resource, namespace, name))
        self.rv += 1
        self._emit(_Event(self.rv, resource, namespace, old, None))

    async def wait_watching(self, resource: str = "pods", *, after: int = 0, timeout_s: float = 10.0) -> None:
        """Return once a watch on ``resource`` is streaming live events (and more than ``after`` were asked)."""
        async with asyncio.timeout(timeout_s):
            while not (any(r == resource for r, _ in self.watches) and self.num_watch_requests > after):
                self.opened.clear()
                await self.opened.wait()

    def drop_watches(self) -> None:
        """Cut every open watch (a load balancer or API server restart): the client must resume."""
        for _, q in self.watches:
            q.put_nowait(None)

    def hold(self) -> None:
        """New watch requests wait until ``release()`` (changes made meanwhile are missed by the client)."""
        self.gate = asyncio.Event()

    def release(self) -> None:
        if self.gate is not None:
            self.gate.set()
            self.gate = None

    def compact(self) -> None:
        """Forget history: a watch resumed from an older version now gets 410 Gone."""
        self.compacted = self.rv + 1
        self.history.clear()

    def _emit(self, ev: _Event) -> None:
        self.history.append(ev)
        for _, q in self.watches:
            q.put_nowait(ev)

    # -- handlers ---------------------------------------------------------------------------------------------

    async def _resources(self, req: web.Request) -> web.Response:
        if req.match_info["version"] not in self.served_pool_versions:
            return web.json_response(_status(404, "NotFound", "the server could not find the requested resource"),
                                     status=404)
        return web.json_response({"kind": "APIResourceList", "groupVersion": f"{req.match_info['group']}/"
                                  f"{req.match_info['version']}", "resources": [{"name": "inferencepools",
                                                                                  "namespaced": True,
                                                                                  "kind": "InferencePool"}]})

    # -- deployments/scale (the autoscaler's actuator) ----------------------------------------------------------

    def _scale(self, dep: Obj) -> Obj:
        meta = dep["metadata"]
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": meta["name"], "namespace": meta.get("namespace", "default"),
                             "resourceVersion": meta["resourceVersion"]},
                "spec": {"replicas": dep["spec"].get("replicas", 1)},
                "status": {"replicas": dep.get("status", {}).get("replicas", 0),
                           "selector": ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())}}

    async def _get_scale(self, req: web.Request) -> web.Response:
        dep = self.objects.get(("deployments", req.match_info["ns"], req.match_info["name"]))
        if dep is None:
            return web.json_response(_status(404, "NotFound", f"deployments.apps \"{req.match_info['name']}\" "
                                             "not found"), status=404)
        return web.json_response(self._scale(dep))

    async def _patch_scale(self, req: web.Request) -> web.Response:
        self.scale_patches.append((req.headers.get("Content-Type", ""), await req.json()))
        key = ("deployments", req.match_info["ns"], req.match_info["name"])
        dep = self.objects.get(key)
        if dep is None:
            return web.json_response(_status(404, "NotFound", "not found"), status=404)
        if req.headers.get("Content-Type", "").split(";")[0] not in ("application/merge-patch+json",
                                                                     "application/strategic-merge-patch+json"):
            return web.json_response(_status(415, "UnsupportedMediaType", "unsupported patch type"), status=415)
        patch = self.scale_patches[-1][1]
        replicas = patch.get("spec", {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            return web.json_response(_status(422, "Invalid", "spec.replicas must be a non-negative integer"),
                                     status=422)
        new = copy.deepcopy(dep)
        new["spec"]["replicas"] = replicas
        self.put("deployments", new)
        return web.json_response(self._scale(self.objects[key]))

    async def _pods(self, req: web.Request) -> web.StreamResponse:
        return await self._serve(req, "pods", "Pod", "v1")

    async def _pools(self, req: web.Request) -> web.StreamResponse:
        group, version = req.match_info["group"], req.match_info["version"]
        if version not in self.served_pool_versions:
            return web.json_response(_status(404, "NotFound", "not served"), status=404)
        return await self._serve(req, f"inferencepools/{group}/{version}", "InferencePool", f"{group}/{version}")

    async def _serve(self, req: web.Request, resource: str, kind: str, api_version: str) -> web.StreamResponse:
        ns = req.match_info["ns"]
        q = req.query
        labels = _parse_labels(q.get("labelSelector", ""))
        name = _parse_name(q.get("fieldSelector", ""))

        def visible(obj: Obj | None) -> bool:
            if obj is None:
                return False
            meta = obj["metadata"]
            have = meta.get("labels") or {}
            return (name is None or meta["name"] == name) and all(have.get(k) == v for k, v in labels.items())

        if q.get("watch", "").lower() not in ("true", "1"):  # Go's ParseBool: the client sends "True"
            return self._list(resource, ns, kind, api_version, visible, q)
        return await self._watch(req, resource, ns, visible)

    def _list(self, resource: str, ns: str, kind: str, api_version: str, visible: Any, q: Any) -> web.Response:
        self.num_list_requests += 1
        items = [o for (r, n, _), o in sorted(self.objects.items()) if r == resource and n == ns and visible(o)]
        start = int(q.get("continue") or 0)
        limit = int(q.get("limit") or 0) or len(items) or 1
        page, rest = items[start:start + limit], start + limit < len(items)
        meta: Obj = {"resourceVersion": str(self.rv)}
        if rest:
            meta["continue"] = str(start + limit)
        return web.json_response({"kind": f"{kind}List", "apiVersion": api_version, "metadata": meta, "items": page})

    async def _watch(self, req: web.Request, resource: str, ns: str, visible: Any) -> web.StreamResponse:
        self.num_watch_requests += 1
        if self.gate is not None:
            await self.gate.wait()
        since = int(req.query.get("resourceVersion") or self.rv)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(req)
        if since < self.compacted - 1:
            await _send(resp, {"type": "ERROR", "object": _status(410, "Expired",
                                                                    f"too old resource version: {since} ({self.compacted})")})
            return resp
        queue: asyncio.Queue[_Event | None] = asyncio.Queue()
        for ev in self.history:
            if ev.rv > since:
                queue.put_nowait(ev)
        self.watches.append((resource, queue))
        self.opened.set()
        timeout = float(req.query.get("timeoutSeconds") or 3600)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    ev = await queue.get()
                    if ev is None:  # dropped: end the stream without a clean timeout
                        break
                    if ev.resource != resource or ev.namespace != ns:
                        continue
                    was, now = visible(ev.old), visible(ev.new)
                    if now:
                        kind = "MODIFIED" if was else "ADDED"
                        obj = ev.new
                    elif was:
                        kind = "DELETED"
                        obj = ev.new if ev.new is not None else dict(ev.old or {}, metadata=dict(
                            (ev.old or {})["metadata"], resourceVersion=str(ev.rv)))
                    else:
                        continue
                    await _send(resp, {"type": kind, "object": obj})
        except TimeoutError:
            if req.query.get("allowWatchBookmarks", "").lower() in ("true", "1"):
                await _send(resp, {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {
                    "resourceVersion": str(self.rv)}}})
        finally:
            self.watches.remove((resource, queue))
        return resp


async def _send(resp: web.StreamResponse, event: Obj) -> None:
    await resp.write(json.dumps(event).encode() + b"\n")


def _status(code: int, reason: str, message: str) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _parse_labels(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",") if part)


def _parse_name(text: str) -> str | None:
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key == "metadata.name":
            return value
    return None


def pod(name: str, ip: str | None, labels: dict[str, str], *, ready: bool = True,
        annotations: dict[str, str] | None = None, namespace: str = "default") -> Obj:
    """A Pod object as the API server returns it (the fields discovery reads, and a few it must ignore)."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations or {},
                     "uid": f"uid-{name}", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:latest"}]},
        "status": {"phase": "Running", "podIP": ip, "hostIP": "10.1.0.1",
                   "conditions": [{"type": "Initialized", "status": "True"},
                                  {"type": "Ready", "status": "True" if ready else "False"}]},
    }


def pool_v1(name: str, labels: dict[str, str], ports: list[int], namespace: str = "default") -> Obj:
    return {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"matchLabels": labels}, "targetPorts": [{"number": p} for p in ports],
                     "endpointPickerRef": {"name": f"{name}-epp", "port": {"number": 9002}}}}


def pool_v1alpha2(name: str, labels: dict[str, str], port: int, namespace: str = "default") -> Obj:
    return {"apiVersion": "inference.networking.x-k8s.io/v1alpha2", "kind": "InferencePool",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": labels, "targetPortNumber": port, "extensionRef": {"name": f"{name}-epp"}}}


def deployment(name: str, replicas: int, labels: dict[str, str], namespace: str = "default") -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}}},
            "status": {"replicas": replicas}}
