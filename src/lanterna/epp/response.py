"""What the picker reads from a response Envoy streams past it: token usage, for load accounting and metrics.

vLLM puts ``usage`` last: in the final ``data:`` frame of a stream (``stream_options.include_usage``) or at the
end of a JSON body. The tap keeps a bounded tail (whole bodies up to ``WHOLE_KEEP`` bytes) and parses once when
the response ends, so a long stream costs a ``bytes.count`` and a bounded copy per chunk, nothing per token.
"""

from __future__ import annotations

from lanterna.gateway.streaming import Usage, usage_from_body, usage_from_tail

TAIL_KEEP = 8192
WHOLE_KEEP = 64 * 1024

__all__ = ["ResponseTap", "Usage", "usage_from_json_tail"]


def usage_from_json_tail(tail: bytes) -> Usage | None:
    """``usage`` from the end of a JSON object too long to keep whole: the last top-level ``"usage"`` key and
    everything after it, reopened as an object (a quoted ``"usage"`` inside a string is escaped, so never matches)."""
    at = tail.rfind(b'"usage"')
    if at < 0:
        return None
    return usage_from_body(b"{" + tail[at:])


class ResponseTap:
    __slots__ = ("sse", "num_frames", "num_bytes", "_buf")

    def __init__(self, sse: bool) -> None:
        self.sse = sse
        self.num_frames = 0
        self.num_bytes = 0
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.num_bytes += len(chunk)
        buf = self._buf
        buf += chunk
        if self.sse:
            self.num_frames += chunk.count(b"data: ")
            if len(buf) > 2 * TAIL_KEEP:
                del buf[:-TAIL_KEEP]
        elif self.num_bytes > WHOLE_KEEP and len(buf) > 2 * TAIL_KEEP:
            del buf[:-TAIL_KEEP]

    def usage(self) -> Usage | None:
        buf = bytes(self._buf)
        if self.sse:
            return usage_from_tail(buf)
        if self.num_bytes == len(buf):
            return usage_from_body(buf)
        return usage_from_json_tail(buf)

    def output_tokens_estimate(self) -> int | None:
        """Without ``usage``: one token per ``data:`` frame, less the ``[DONE]`` frame (what the gateway counts)."""
        return max(0, self.num_frames - 1) if self.sse and self.num_frames else None
