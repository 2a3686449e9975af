"""The transport-free routing core: one ``InferenceCall`` through admit -> tokenize -> schedule -> complete.

Faces (the aiohttp gateway; an Envoy ext_proc picker) call ``lanterna.routing.core``'s steps and move bytes;
no step is re-implemented by a face. Nothing in this package imports aiohttp or opens a socket.
"""

from lanterna.routing.call import InferenceCall
from lanterna.routing.state import RoutingState

__all__ = ["InferenceCall", "RoutingState"]
