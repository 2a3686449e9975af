"""A real gRPC ext_proc client that replays what Envoy sends for one request, message by message.

Envoy's order: request headers, body chunks (the last with ``end_of_stream``), then response headers and
response body chunks. Responses are read back one at a time, so a test sees exactly what the picker answered
to each message (and that it answered nothing yet, in full-duplex mode, while the body is incomplete).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import orjson
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

FULL_DUPLEX = processing_mode_pb2.ProcessingMode.FULL_DUPLEX_STREAMED
BUFFERED = processing_mode_pb2.ProcessingMode.BUFFERED


def http_headers(headers: Mapping[str, str], end_of_stream: bool = False) -> pb.HttpHeaders:
    hm = base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()])
    return pb.HttpHeaders(headers=hm, end_of_stream=end_of_stream)


def request_headers(path: str = "/v1/completions", extra: Mapping[str, str] | None = None, *,
                    end_of_stream: bool = False, mode: int | None = None,
                    subset: list[str] | None = None) -> pb.ProcessingRequest:
    h = {":method": "POST", ":path": path, ":authority": "gw", ":scheme": "http",
         "content-type": "application/json", **(extra or {})}
    req = pb.ProcessingRequest(request_headers=http_headers(h, end_of_stream))
    if mode is not None:
        req.protocol_config.request_body_mode = mode
        req.protocol_config.response_body_mode = mode
    if subset is not None:
        lst = req.metadata_context.filter_metadata["envoy.lb.subset_hint"].fields[
            "x-gateway-destination-endpoint-subset"].list_value
        for a in subset:
            lst.values.add().string_value = a
    return req


def request_body(chunk: bytes, end_of_stream: bool) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=chunk, end_of_stream=end_of_stream))


def response_headers(status: int = 200, content_type: str = "application/json", served: str | None = None,
                     end_of_stream: bool = False) -> pb.ProcessingRequest:
    req = pb.ProcessingRequest(response_headers=http_headers({":status": str(status), "content-type": content_type},
                                                             end_of_stream))
    if served is not None:
        req.metadata_context.filter_metadata["envoy.lb"].fields[
            "x-gateway-destination-endpoint-served"].string_value = served
    return req


def response_body(chunk: bytes, end_of_stream: bool) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(response_body=pb.HttpBody(body=chunk, end_of_stream=end_of_stream))


def set_headers(common: pb.CommonResponse) -> dict[str, str]:
    return {o.header.key: (o.header.raw_value.decode() if o.header.raw_value else o.header.value)
            for o in common.header_mutation.set_headers}


def destination_metadata(resp: pb.ProcessingResponse) -> str | None:
    ns = resp.dynamic_metadata.fields.get("envoy.lb")
    if ns is None:
        return None
    v = ns.struct_value.fields.get("x-gateway-destination-endpoint")
    return v.string_value if v is not None else None


@dataclass
class Immediate:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


def immediate(resp: pb.ProcessingResponse) -> Immediate:
    ir = resp.immediate_response
    return Immediate(ir.status.code, {o.header.key: o.header.raw_value.decode() for o in ir.headers.set_headers},
                     orjson.loads(ir.body))


class Stream:
    """One ``Process`` stream (one HTTP request through Envoy)."""

    def __init__(self, stub: pb_grpc.ExternalProcessorStub) -> None:
        self.call = stub.Process()

    async def send(self, req: pb.ProcessingRequest) -> None:
        await self.call.write(req)

    async def recv(self) -> pb.ProcessingResponse:
        resp = await self.call.read()
        assert resp is not grpc.aio.EOF, "the picker closed the stream"
        return resp

    async def exchange(self, req: pb.ProcessingRequest, n: int = 1) -> list[pb.ProcessingResponse]:
        await self.send(req)
        return [await self.recv() for _ in range(n)]

    async def done(self) -> None:
        await self.call.done_writing()

    def cancel(self) -> None:
        self.call.cancel()


@asynccontextmanager
async def picker_client(port: int) -> AsyncIterator[pb_grpc.ExternalProcessorStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield pb_grpc.ExternalProcessorStub(ch)
