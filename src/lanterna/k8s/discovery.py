"""Kubernetes endpoint discovery: watch pods (by label selector or an InferencePool) and feed an ``EndpointSink``.

The endpoint-source API that ``lanterna gateway`` and ``lanterna epp`` share: build a ``DiscoverySpec`` (from
flags: ``discovery_args``), ``api = await make_api_client(spec)``, then ``KubeDiscovery(api, spec, sink)`` with
any object that has ``add_endpoint(Endpoint)`` / ``remove_endpoint(id)`` (the gateway's ``Gateway`` does: health
checks, metric scrapes and KV-event subscriptions start and stop with each endpoint). ``start()``, optionally
``await wait_synced()``, and ``await close()`` at shutdown.

The protocol is Kubernetes' list-then-watch, over ``kubernetes_asyncio``'s API client (auth, TLS, in-cluster or
kubeconfig) with the list/watch loop our own, so every case is explicit:

- list (paged with ``limit``/``continue``) gives the full set and a ``resourceVersion``; the difference with
  what the sink holds is applied (removals first), so a relist never drops an endpoint that is still there;
- watch from that ``resourceVersion`` with bookmarks; each event updates one pod's endpoints;
- the stream ending (server timeout, dropped connection) resumes the watch from the last version seen;
- ``410 Gone`` (the version was compacted away; as an HTTP status or an ``ERROR`` event) relists;
- any other failure waits ``retry_s`` and resumes (or relists when no version is known).

With a pool, a second loop watches that one ``InferencePool`` (``fieldSelector=metadata.name=NAME``); an edit
to its selector or ports restarts the pod loop with the new target; a deleted pool removes every endpoint.
Decoding reads only the fields the rules need (``discovery_model``), not the client's generated models.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import aiohttp
import msgspec

from lanterna.endpoints.types import Endpoint
from lanterna.k8s.discovery_model import (
    POOL_PLURAL,
    POOL_VERSIONS,
    EndpointSpec,
    InferencePool,
    ListMeta,
    Pod,
    PoolShapeError,
    PoolTarget,
    Status,
    WatchEvent,
    diff,
    parse_selector,
    pod_endpoints,
    pool_target,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class EndpointSink(Protocol):
    """Where discovered endpoints go (``lanterna.gateway.state.Gateway`` implements it). Calls are serial."""

    async def add_endpoint(self, ep: Endpoint) -> None: ...

    async def remove_endpoint(self, endpoint_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class DiscoverySpec:
    """What to watch. Exactly one of ``pool`` / ``selector``; with a selector, ``target_ports`` are the ports."""

    namespace: str = "default"
    pool: str | None = None
    pool_version: Literal["auto", "v1", "v1alpha2"] = "auto"  # auto: v1, else v1alpha2 when v1 is not served
    selector: str | None = None
    target_ports: tuple[int, ...] = (8000,)
    kv_events_port: int | None = None  # dial each pod's publisher at this port (+ DP rank); None: not per pod
    models: tuple[str, ...] = ()  # served models; empty: each endpoint's /v1/models tells
    kubeconfig: str | None = None  # None: in-cluster when running in a pod, else ~/.kube/config
    context: str | None = None
    watch_timeout_s: int = 300  # server-side watch timeout; the stream then ends and resumes
    retry_s: float = 1.0

    def __post_init__(self) -> None:
        if (self.pool is None) == (self.selector is None):
            raise ValueError("give exactly one of a pool name and a label selector")
        if self.selector is not None:
            parse_selector(self.selector)  # raises ValueError on a bad selector


@dataclass(slots=True)
class DiscoveryStats:
    num_lists: int = 0  # pod lists (the first one, relists after 410 and after errors, pool edits)
    num_resumes: int = 0  # watches resumed from a resourceVersion after the stream ended
    num_gone: int = 0  # 410 Gone answers (each followed by a relist)
    num_errors: int = 0  # failed list/watch calls (each followed by a retry)


class _Gone(Exception):
    """410: the resourceVersion is too old; the caller relists."""


class _ApiFailed(Exception):
    pass


_LIST_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10)


async def make_api_client(spec: DiscoverySpec) -> Any:
    """A ``kubernetes_asyncio`` ApiClient: the pod's service account in a cluster, else the kubeconfig."""
    from kubernetes_asyncio import client, config

    conf = client.Configuration()
    if spec.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(config_file=spec.kubeconfig, context=spec.context, client_configuration=conf,
                                      persist_config=False)
    return client.ApiClient(conf)


class KubeDiscovery:
    """Keeps ``sink`` holding exactly the endpoints of the ready pods the spec selects."""

    def __init__(self, api: Any, spec: DiscoverySpec, sink: EndpointSink) -> None:
        from kubernetes_asyncio import client

        self.spec = spec
        self.stats = DiscoveryStats()
        self._sink = sink
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._published: dict[str, EndpointSpec] = {}
        self._pods: dict[str, Pod] = {}
        self._target: PoolTarget | None = None
        if spec.selector is not None:
            self._target = PoolTarget(parse_selector(spec.selector), spec.target_ports)
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pod_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # serialises sink calls between the pool and pod loops
        self.owned_api: Any = None  # an ApiClient that close() closes too (start_discovery made it)

    @property
    def endpoints(self) -> dict[str, EndpointSpec]:
        return dict(self._published)

    @property
    def target(self) -> PoolTarget | None:
        return self._target

    def start(self) -> None:
        if self._task is None:
            main = self._pool_loop() if self.spec.pool is not None else self._pod_loop()
            self._task = asyncio.create_task(main, name="k8s-discovery")

    async def wait_synced(self, timeout_s: float = 30.0) -> None:
        """Return once the first list has been applied (the sink then holds every ready pod)."""
        async with asyncio.timeout(timeout_s):
            await self._synced.wait()

    async def wait_stopped(self) -> None:
        """Return when discovery stops (it runs until ``close()``; cancelling this wait stops it too)."""
        if self._task is not None:
            await self._task

    async def close(self) -> None:
        for task in (self._pod_task, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._pod_task = None
        if self.owned_api is not None:
            await self.owned_api.close()
            self.owned_api = None

    # -- the sink -------------------------------------------------------------------------------------------

    def _endpoint(self, spec: EndpointSpec) -> Endpoint:
        return Endpoint(id=spec.id, address=spec.id, labels=dict(spec.labels), models=frozenset(self.spec.models),
                        kv_events_endpoint=spec.kv_events)

    async def _apply(self, desired: dict[str, EndpointSpec], scope: Callable[[EndpointSpec], bool]) -> None:
        """Make the published endpoints within ``scope`` equal ``desired`` (removals first)."""
        async with self._lock:
            current = {eid: s for eid, s in self._published.items() if scope(s)}
            removed, added = diff(current, desired)
            for eid in removed:
                self._published.pop(eid, None)
                await self._call(self._sink.remove_endpoint(eid), "remove", eid)
            for spec in added:
                self._published[spec.id] = spec
                await self._call(self._sink.add_endpoint(self._endpoint(spec)), "add", spec.id)
            if removed or added:
                log.info("k8s_endpoints_changed", extra={"removed": removed, "added": [s.id for s in added],
                                                         "num_endpoints": len(self._published)})

    @staticmethod
    async def _call(aw: Awaitable[None], op: str, eid: str) -> None:
        try:
            await aw
        except Exception:  # one endpoint's failed start must not stop discovery
            log.exception("k8s_sink_failed", extra={"op": op, "endpoint": eid})

    def _desired(self, pods: list[Pod]) -> dict[str, EndpointSpec]:
        target = self._target
        if target is None:
            return {}
        return {s.id: s for p in pods for s in pod_endpoints(p, target, self.spec.kv_events_port)}

    # -- pods ------------------------------------------------------------------------------------------------

    async def _pod_loop(self) -> None:
        target = self._target
        assert target is not None
        ns, sel = self.spec.namespace, target.selector

        async def on_list(items: list[Pod]) -> None:
            self._pods = {p.metadata.name: p for p in items}
            await self._apply(self._desired(items), lambda s: True)
            self._synced.set()

        async def on_event(kind: str, pod: Pod) -> None:
            name = pod.metadata.name
            if kind == "DELETED":
                self._pods.pop(name, None)
                pods = []
            else:
                self._pods[name] = pod
                pods = [pod]
            await self._apply(self._desired(pods), lambda s: s.pod == name)

        def call(**kw: Any) -> Awaitable[Any]:
            return self._core.list_namespaced_pod(ns, label_selector=sel, **kw)

        await self._list_watch(call, Pod, on_list, on_event, count_lists=True)

    # -- the pool --------------------------------------------------------------------------------------------

    async def _pool_loop(self) -> None:
        name = self.spec.pool
        assert name is not None
        version = await self._pool_version()
        group = POOL_VERSIONS[version]

        async def on_list(items: list[InferencePool]) -> None:
            await self._set_pool(items[0] if items else None)

        async def on_event(kind: str, pool: InferencePool) -> None:
            await self._set_pool(None if kind == "DELETED" else pool)

        def call(**kw: Any) -> Awaitable[Any]:
            return self._custom.list_namespaced_custom_object(group, version, self.spec.namespace, POOL_PLURAL,
                                                              field_selector=f"metadata.name={name}", **kw)

        try:
            await self._list_watch(call, InferencePool, on_list, on_event, count_lists=False)
        finally:
            if self._pod_task is not None:
                self._pod_task.cancel()

    async def _pool_version(self) -> str:
        if self.spec.pool_version != "auto":
            return self.spec.pool_version
        while True:
            try:
                resp: Any = await self._custom.get_api_resources(POOL_VERSIONS["v1"], "v1", _preload_content=False,
                                                            _request_timeout=_LIST_TIMEOUT)
                async with resp:
                    if resp.status == 200:
                        return "v1"
                    if resp.status == 404:
                        return "v1alpha2"
                    raise _ApiFailed(f"HTTP {resp.status}")
            except (aiohttp.ClientError, TimeoutError, _ApiFailed) as exc:
                self.stats.num_errors += 1
                log.warning("k8s_discovery_retry", extra={"error": str(exc), "what": "api-resources"})
                await asyncio.sleep(self.spec.retry_s)

    async def _set_pool(self, pool: InferencePool | None) -> None:
        try:
            target = pool_target(pool) if pool is not None else None
        except PoolShapeError as exc:
            log.warning("k8s_pool_invalid", extra={"error": str(exc)})
            target = None
        if target == self._target and (self._pod_task is not None or target is None):
            if target is None:
                self._synced.set()
            return
        log.info("k8s_pool_target", extra={"pool": self.spec.pool, "selector": target.selector if target else None,
                                           "ports": list(target.ports) if target else []})
        old = self._pod_task
        self._pod_task = None
        if old is not None:
            old.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await old
        self._target = target
        if target is None:  # no pool (yet, or any more): nothing to route to
            self._pods = {}
            await self._apply({}, lambda s: True)
            self._synced.set()
            return
        self._pod_task = asyncio.create_task(self._pod_loop(), name="k8s-discovery-pods")

    # -- list then watch -------------------------------------------------------------------------------------

    async def _list_watch(self, call: Callable[..., Awaitable[Any]], item: type[T],
                          on_list: Callable[[list[T]], Awaitable[None]],
                          on_event: Callable[[str, T], Awaitable[None]], *, count_lists: bool) -> None:
        list_type = msgspec.defstruct("List", [("metadata", ListMeta, ListMeta()), ("items", list[item], [])])  # type: ignore[valid-type]
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    items, rv = await self._list(call, list_type)
                    if count_lists:
                        self.stats.num_lists += 1
                    await on_list(items)
                rv = await self._watch(call, item, rv, on_event)
                self.stats.num_resumes += 1
            except _Gone:
                self.stats.num_gone += 1
                log.info("k8s_watch_gone", extra={"resource_version": rv})
                rv = None
            except (aiohttp.ClientError, TimeoutError, _ApiFailed, msgspec.DecodeError) as exc:
                self.stats.num_errors += 1
                log.warning("k8s_discovery_retry", extra={"error": repr(exc)})
                await asyncio.sleep(self.spec.retry_s)

    async def _list(self, call: Callable[..., Awaitable[Any]], list_type: Any) -> tuple[list[Any], str]:
        items: list[Any] = []
        cont: str | None = None
        while True:
            kw: dict[str, Any] = {"limit": 500, "_preload_content": False, "_request_timeout": _LIST_TIMEOUT}
            if cont:
                kw["_continue"] = cont
            resp = await call(**kw)
            async with resp:
                body = await resp.read()
                _raise_for(resp.status, body)
            page = msgspec.json.decode(body, type=list_type)
            items.extend(page.items)
            cont = _continue_token(body)
            if not cont:
                return items, page.metadata.resourceVersion

    async def _watch(self, call: Callable[..., Awaitable[Any]], item: type[T], rv: str,
                     on_event: Callable[[str, T], Awaitable[None]]) -> str:
        """Follow one watch stream from ``rv``; return the last version seen when the stream ends."""
        timeout = aiohttp.ClientTimeout(connect=10, sock_read=self.spec.watch_timeout_s + 30)
        resp = await call(watch=True, resource_version=rv, allow_watch_bookmarks=True,
                          timeout_seconds=self.spec.watch_timeout_s, _preload_content=False, _request_timeout=timeout)
        async with resp:
            if resp.status != 200:
                _raise_for(resp.status, await resp.read())
            async for ev in _events(resp.content):
                if ev.type == "ERROR":
                    st = msgspec.json.decode(ev.object, type=Status)
                    if st.code == 410:
                        raise _Gone(st.message)
                    raise _ApiFailed(f"watch error {st.code} {st.reason}: {st.message}")
                meta = msgspec.json.decode(ev.object, type=_Versioned).metadata
                rv = meta.resourceVersion or rv
                if ev.type in ("ADDED", "MODIFIED", "DELETED"):
                    await on_event(ev.type, msgspec.json.decode(ev.object, type=item))
        return rv


class _Versioned(msgspec.Struct, frozen=True):
    metadata: ListMeta = ListMeta()


class _ContinueMeta(msgspec.Struct, frozen=True):
    cont: str = msgspec.field(default="", name="continue")


class _ListContinue(msgspec.Struct, frozen=True):
    metadata: _ContinueMeta = _ContinueMeta()


def _continue_token(body: bytes) -> str:
    return msgspec.json.decode(body, type=_ListContinue).metadata.cont


def _raise_for(status: int, body: bytes) -> None:
    if 200 <= status < 300:
        return
    if status == 410:
        raise _Gone(body[:200].decode(errors="replace"))
    raise _ApiFailed(f"HTTP {status}: {body[:200].decode(errors='replace')}")


async def _events(content: aiohttp.StreamReader) -> AsyncIterator[WatchEvent]:
    """Watch events, one JSON object per line, until the server ends the stream."""
    decoder = msgspec.json.Decoder(WatchEvent)
    while True:
        line = await content.readline()
        if not line:
            return
        if line.strip():
            yield decoder.decode(line)
