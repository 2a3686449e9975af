"""ext_proc test harness: the real picker (``serve_epp``) on loopback, in front of in-process fake model servers,
queried by a real gRPC client replaying Envoy's messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from lanterna.config.model import LanternaConfig
from lanterna.epp import EppOptions, EppServer, Modes, serve_epp
from lanterna.epp.messages import FULL_DUPLEX
from lanterna.gateway.app import create_gateway
from lanterna.gateway.state import Gateway
from tests.unit.epp.envoy_replay import Stream, picker_client
from tests.unit.gateway.conftest import _deep_merge
from tests.unit.gateway.fake_upstream import FakeUpstream
from tests.unit.gateway.fake_upstream import upstreams as upstreams  # shared fixture


@dataclass
class Picker:
    gw: Gateway
    srv: EppServer
    stub: pb_grpc.ExternalProcessorStub

    def stream(self) -> Stream:
        return Stream(self.stub)

    def load(self) -> dict[str, int]:
        return {e.address: e.load.in_flight_requests for e in self.gw.store.all()}

    def loads_all_zero(self) -> bool:
        return all(e.load.in_flight_requests == 0 and e.load.in_flight_prefill_tokens == 0
                   and e.load.in_flight_decode_seqs == 0 and e.load.in_flight_kv_tokens == 0
                   for e in self.gw.store.all())


def picker_config(upstreams: list[FakeUpstream], config: dict[str, Any] | None = None) -> LanternaConfig:
    tree = {"gateway": {"log_format": "text", "seed": 7},
            "endpoints": {"static": [{"address": u.address, "models": u.models} for u in upstreams],
                          "health_interval_s": 3600, "scrape_interval_s": 3600}}
    return LanternaConfig.model_validate(_deep_merge(tree, config or {}))


@asynccontextmanager
async def picker_for(upstreams: list[FakeUpstream], config: dict[str, Any] | None = None, *,
                     mode: int = FULL_DUPLEX) -> AsyncIterator[Picker]:
    cfg = picker_config(upstreams, config)
    gw = create_gateway(cfg)
    opts = EppOptions(grpc_port=0, health_port=0, metrics_port=0,
                      modes=Modes(mode, mode, cfg.gateway.max_body_bytes))
    async with serve_epp(gw, opts) as srv, picker_client(srv.grpc_port) as stub:
        yield Picker(gw, srv, stub)

