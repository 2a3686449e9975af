"""Cost per access-log record: format only, and format + write through the ``lanterna.access`` logger
to a null stream (the handler's lock and write included), for JSON and text. Prints microseconds per record."""

from __future__ import annotations

import io
import logging
import time

from lanterna.obs.access import AccessRecord, format_json, format_text, setup_access_log


class _Null(io.TextIOBase):
    def write(self, s: str) -> int:
        return len(s)


def _rec() -> AccessRecord:
    return AccessRecord(ts=1.7e9, request_id="1a2b3c4d-2f", method="POST", path="/v1/chat/completions",
                        status=200, duration_ms=123.4, model="Qwen/Qwen3-0.6B", adapter=None,
                        endpoint="10.0.0.7:8000", profile="decode", prompt_tokens=812, cached_tokens=768,
                        output_tokens=64, ttft_ms=21.7, retries=0, stream=True, fairness_id="tenant-a",
                        priority=0, client="127.0.0.1")


def _per_call_us(fn: object, n: int) -> float:
    f = fn  # type: ignore[assignment]
    t0 = time.perf_counter()
    for _ in range(n):
        f()  # type: ignore[operator]
    return (time.perf_counter() - t0) / n * 1e6


def main(n: int = 200_000) -> None:
    rec = _rec()
    print(f"format_json            {_per_call_us(lambda: format_json(rec), n):6.2f} us/record")
    print(f"format_text            {_per_call_us(lambda: format_text(rec), n):6.2f} us/record")
    for mode in ("json", "text"):
        log = setup_access_log(mode, stream=_Null())  # type: ignore[arg-type]
        print(f"write ({mode}, handler)  {_per_call_us(lambda log=log: log.write(_rec()), n):6.2f} us/record "
              "(record construction included)")
    off = setup_access_log("off")
    print(f"write (off)            {_per_call_us(lambda: off.write(rec), n):6.2f} us/record")
    logging.getLogger("lanterna.access").handlers.clear()


if __name__ == "__main__":
    main()
