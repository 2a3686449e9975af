"""The ext_proc v3 messages the picker reads and writes (Envoy's protos from ``xds-protos``; formats are GAIE's).

Reads: request/response headers (``raw_value`` first: current Envoy leaves ``value`` empty), the optional endpoint
subset hint Envoy may pass in ``metadata_context``, and the endpoint that finally served the request. Writes: the
pick as the ``x-gateway-destination-endpoint`` header *and* the same value under dynamic metadata
``envoy.lb`` (GAIE's endpoint picker protocol: both, never different; ordered fallbacks as ``a:1,b:2``), body
chunks (``FULL_DUPLEX_STREAMED``: the picker hands every byte back), and ``ImmediateResponse`` errors in the
OpenAI shape. Pure protobuf construction, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import msgspec
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2

from lanterna.errors import LanternaError

LB_NAMESPACE = "envoy.lb"
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
SUBSET_KEY = "x-gateway-destination-endpoint-subset"
SERVED_KEY = "x-gateway-destination-endpoint-served"

BodyMode = int  # processing_mode_pb2.ProcessingMode.BodySendMode value
FULL_DUPLEX: BodyMode = processing_mode_pb2.ProcessingMode.FULL_DUPLEX_STREAMED
BUFFERED: BodyMode = processing_mode_pb2.ProcessingMode.BUFFERED
BUFFERED_PARTIAL: BodyMode = processing_mode_pb2.ProcessingMode.BUFFERED_PARTIAL
BODY_MODES = {"full-duplex": FULL_DUPLEX, "buffered": BUFFERED}

CHUNK_BYTES = 64 * 1024  # body bytes per streamed message: far below any gRPC message limit on Envoy's side

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_encode = msgspec.json.encode

ProcessingRequest = pb.ProcessingRequest
ProcessingResponse = pb.ProcessingResponse


def header_map(headers: pb.HttpHeaders) -> dict[str, str]:
    """Envoy's header list as a dict (lower-case keys; pseudo-headers such as ``:path`` included)."""
    out: dict[str, str] = {}
    for h in headers.headers.headers:
        out[h.key] = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
    return out


def _string_list(md: base_pb2.Metadata, namespace: str, key: str) -> list[str] | None:
    ns = md.filter_metadata.get(namespace)
    if ns is None or key not in ns.fields:
        return None
    v = ns.fields[key]
    if v.HasField("list_value"):
        return [x.string_value for x in v.list_value.values if x.string_value]
    return [s for s in v.string_value.split(",") if s] if v.string_value else []


def subset_hint(req: pb.ProcessingRequest) -> list[str] | None:
    """The endpoints Envoy allows for this request (None: no hint, pick from the whole pool)."""
    if not req.HasField("metadata_context"):
        return None
    return _string_list(req.metadata_context, SUBSET_NAMESPACE, SUBSET_KEY)


def served_endpoint(req: pb.ProcessingRequest) -> str | None:
    """The endpoint that answered, when Envoy reports it (it may have gone down the fallback list)."""
    if not req.HasField("metadata_context"):
        return None
    got = _string_list(req.metadata_context, LB_NAMESPACE, SERVED_KEY)
    return got[0] if got else None


def _set_headers(headers: Mapping[str, str]) -> list[base_pb2.HeaderValueOption]:
    return [base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, raw_value=v.encode()),
                                       append_action=_OVERWRITE) for k, v in headers.items()]


def destination_metadata(destination: str) -> struct_pb2.Struct:
    md = struct_pb2.Struct()
    md.fields[LB_NAMESPACE].struct_value.fields["x-gateway-destination-endpoint"].string_value = destination
    return md


def common(headers: Mapping[str, str] | None = None, body: bytes | None = None) -> pb.CommonResponse:
    """A CONTINUE response setting ``headers`` and, for buffered bodies, replacing the body."""
    out = pb.CommonResponse()
    if headers:
        out.header_mutation.set_headers.extend(_set_headers(headers))
    if body is not None:
        out.body_mutation.body = body
    return out


def request_headers_response(headers: Mapping[str, str] | None = None, destination: str | None = None
                             ) -> pb.ProcessingResponse:
    resp = pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common(headers)))
    if destination is not None:
        resp.dynamic_metadata.CopyFrom(destination_metadata(destination))
    return resp


def buffered_body_response(headers: Mapping[str, str] | None = None, body: bytes | None = None,
                           destination: str | None = None) -> pb.ProcessingResponse:
    """BUFFERED mode: the whole request in one answer (headers can still change: nothing went upstream yet)."""
    resp = pb.ProcessingResponse(request_body=pb.BodyResponse(response=common(headers, body)))
    if destination is not None:
        resp.dynamic_metadata.CopyFrom(destination_metadata(destination))
    return resp


def streamed_body(body: bytes, end_of_stream: bool, *, request: bool = True) -> Iterator[pb.ProcessingResponse]:
    """FULL_DUPLEX_STREAMED: hand ``body`` back to Envoy in bounded chunks, the last one carrying
    ``end_of_stream``. An empty body still yields one message (it may carry the end of stream)."""
    n = len(body)
    at = 0
    while True:
        piece = body[at : at + CHUNK_BYTES]
        at += CHUNK_BYTES
        last = at >= n
        br = pb.BodyResponse()
        sr = br.response.body_mutation.streamed_response
        sr.body = piece
        sr.end_of_stream = end_of_stream and last
        yield pb.ProcessingResponse(request_body=br) if request else pb.ProcessingResponse(response_body=br)
        if last:
            return


def empty_body_response(*, request: bool) -> pb.ProcessingResponse:
    br = pb.BodyResponse()
    return pb.ProcessingResponse(request_body=br) if request else pb.ProcessingResponse(response_body=br)


def response_headers_response() -> pb.ProcessingResponse:
    return pb.ProcessingResponse(response_headers=pb.HeadersResponse())


def trailers_response(*, request: bool) -> pb.ProcessingResponse:
    tr = pb.TrailersResponse()
    return pb.ProcessingResponse(request_trailers=tr) if request else pb.ProcessingResponse(response_trailers=tr)


def immediate(err: LanternaError, request_id: str | None = None) -> pb.ProcessingResponse:
    """The error Envoy sends the client instead of proxying: OpenAI error body, status, content type, and the
    error's own headers (``Retry-After``, ``x-llm-d-request-dropped-reason``)."""
    headers = {"content-type": "application/json", **{k.lower(): v for k, v in err.headers.items()}}
    if request_id:
        headers["x-request-id"] = request_id
    ir = pb.ImmediateResponse(status=http_status_pb2.HttpStatus(code=err.status), body=_encode(err.body()),
                              details=err.error_type)
    ir.headers.set_headers.extend(_set_headers(headers))
    return pb.ProcessingResponse(immediate_response=ir)


def join_destinations(addresses: Iterable[str]) -> str:
    return ",".join(addresses)
