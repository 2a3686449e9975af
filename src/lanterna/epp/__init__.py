"""Envoy ext_proc endpoint picker (GAIE's EPP protocol) over the routing core: ``lanterna epp``."""

from lanterna.epp.exchange import Exchange, Modes
from lanterna.epp.server import EndpointSource, EppOptions, EppServer, ExtProcServicer, serve_epp

__all__ = ["EndpointSource", "EppOptions", "EppServer", "Exchange", "ExtProcServicer", "Modes", "serve_epp"]
