"""The access log reads back: every field of a JSON line, the text line, the logger name, and 'off'."""

from __future__ import annotations

import asyncio
import io
import logging

import msgspec
import pytest

from lanterna.obs.access import (
    ACCESS_LOGGER,
    AccessLog,
    AccessRecord,
    LineSink,
    SinkHandler,
    format_text,
    setup_access_log,
)

FIELDS = ["ts", "request_id", "method", "path", "status", "duration_ms", "model", "adapter", "endpoint",
          "prefill_endpoint", "profile", "prompt_tokens", "cached_tokens", "output_tokens", "ttft_ms",
          "retries", "stream", "fairness_id", "priority", "client", "error"]


def _rec(**kw: object) -> AccessRecord:
    base = dict(ts=1700000000.25, request_id="ab-1", method="POST", path="/v1/chat/completions", status=200,
                duration_ms=84.5, model="m", adapter="sql-lora", endpoint="10.0.0.7:8000",
                prefill_endpoint="10.0.0.8:8000", profile="prefill+decode", prompt_tokens=812,
                cached_tokens=768, output_tokens=64, ttft_ms=21.75, retries=1, stream=True,
                fairness_id="tenant-a", priority=-1, client="127.0.0.1", error=None)
    base.update(kw)
    return AccessRecord(**base)  # type: ignore[arg-type]


def test_json_line_has_every_field_in_order(caplog: pytest.LogCaptureFixture) -> None:
    rec = _rec()
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        AccessLog("json").write(rec)
    [line] = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    out = msgspec.json.decode(line.getMessage())
    assert list(out) == FIELDS == list(AccessRecord.__struct_fields__)
    assert out == msgspec.structs.asdict(rec)


def test_setup_writes_message_only_to_its_stream_and_not_to_root(caplog: pytest.LogCaptureFixture) -> None:
    buf = io.StringIO()
    log = setup_access_log("json", stream=buf)
    try:
        with caplog.at_level(logging.INFO):
            log.write(_rec(status=429, error="rejected-saturated", output_tokens=None, ttft_ms=None))
        line = buf.getvalue()
        assert line.endswith("\n") and line.count("\n") == 1
        out = msgspec.json.decode(line)
        assert (out["status"], out["error"], out["output_tokens"], out["ttft_ms"]) == (
            429, "rejected-saturated", None, None)
        assert not [r for r in caplog.records if r.name == ACCESS_LOGGER]  # propagate=False: no double line
        setup_access_log("json", stream=buf)  # idempotent: still one handler of ours
        assert len(logging.getLogger(ACCESS_LOGGER).handlers) == 1
    finally:
        setup_access_log("off")
        logging.getLogger(ACCESS_LOGGER).propagate = True


def test_text_line() -> None:
    line = format_text(_rec(adapter=None, error=None))
    assert line.startswith('127.0.0.1 "POST /v1/chat/completions" 200 84.5ms rid=ab-1 model=m adapter=- ')
    for part in ("endpoint=10.0.0.7:8000", "prefill=10.0.0.8:8000", "profile=prefill+decode", "prompt=812",
                 "cached=768", "output=64", "ttft=21.8ms", "retries=1", "stream=1", "fairness=tenant-a",
                 "priority=-1", "error=-"):
        assert part in line.split(), part


def test_off_writes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    log = AccessLog("off")
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        log.write(_rec())
    assert not log.enabled
    assert not [r for r in caplog.records if r.name == ACCESS_LOGGER]


def test_cli_logging_setup_puts_access_lines_on_stdout_and_config_defaults_to_json(
        capsys: pytest.CaptureFixture[str]) -> None:
    from pydantic import ValidationError

    from lanterna.config.model import GatewayConfig
    from lanterna.obs.logs import setup_logging

    assert GatewayConfig().access_log == "json"
    with pytest.raises(ValidationError):
        GatewayConfig(access_log="xml")  # type: ignore[arg-type]
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("json", "INFO", access_log="text")
        AccessLog("text").write(_rec())
        out, err = capsys.readouterr()
        assert out.startswith('127.0.0.1 "POST /v1/chat/completions" 200 ') and out.count("\n") == 1
        assert "rid=ab-1" not in err  # not duplicated through the root (stderr) handler
    finally:
        setup_access_log("off")
        logging.getLogger(ACCESS_LOGGER).propagate = True
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    @property
    def writes(self) -> int:
        return len(self.sizes)

    def write(self, s: str) -> int:
        self.sizes.append(len(s))
        return super().write(s)


async def test_stdout_sink_writes_one_loop_iterations_lines_at_once_without_log_records(
        caplog: pytest.LogCaptureFixture) -> None:
    buf = CountingStream()
    log = setup_access_log("json", stream=buf)
    handler = logging.getLogger(ACCESS_LOGGER).handlers[0]
    assert isinstance(handler, SinkHandler)
    handler.sink.flush_s = 0  # end of the loop iteration (the default waits flush_s: next test)
    try:
        made: list[logging.LogRecord] = []
        factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(lambda *a, **kw: made.append(factory(*a, **kw)) or made[-1])
        try:
            for i in range(3):
                log.write(_rec(request_id=f"r{i}"))
            assert buf.getvalue() == "" and buf.writes == 0  # buffered until the loop turns
            await asyncio.sleep(0)
        finally:
            logging.setLogRecordFactory(factory)
        assert buf.writes == 1 and not made
        assert [msgspec.json.decode(ln)["request_id"] for ln in buf.getvalue().splitlines()] == ["r0", "r1", "r2"]
    finally:
        setup_access_log("off")
        logging.getLogger(ACCESS_LOGGER).propagate = True


async def test_sink_writes_lines_of_several_loop_iterations_once_after_flush_s() -> None:
    buf = CountingStream()
    sink = LineSink(buf, flush_s=0.02)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(3):
        sink.write(f"line{i}")
        await asyncio.sleep(0)  # each line in its own loop iteration, as requests arrive
    assert buf.writes == 0
    done = loop.create_future()
    loop.call_later(0.05, done.set_result, None)
    await done
    assert buf.writes == 1 and buf.getvalue() == "line0\nline1\nline2\n"
    assert loop.time() - t0 >= 0.02


async def test_sink_flushes_when_full_and_a_users_handler_gets_every_line_through_the_logger() -> None:
    buf = CountingStream()
    log = setup_access_log("text", stream=buf)
    logger = logging.getLogger(ACCESS_LOGGER)
    handler = logger.handlers[0]
    assert isinstance(handler, SinkHandler)
    handler.sink.max_lines = 2
    handler.sink.flush_s = 0
    theirs = io.StringIO()
    try:
        log.write(_rec(request_id="a"))
        log.write(_rec(request_id="b"))  # the second waiting line fills the sink: written at once
        assert buf.writes == 1 and buf.getvalue().count("\n") == 2
        user = logging.StreamHandler(theirs)
        logger.addHandler(user)  # someone routes the access log: the LogRecord path again, both handlers
        log.write(_rec(request_id="c"))
        await asyncio.sleep(0)
        assert "rid=c" in theirs.getvalue() and "rid=c" in buf.getvalue()
        logger.removeHandler(user)
    finally:
        setup_access_log("off")
        logger.propagate = True


def test_a_large_flush_is_written_in_whole_line_chunks_under_pipe_buf() -> None:
    buf = CountingStream()
    sink = LineSink(buf, max_lines=1000)
    sink._pending = True  # as if a flush were scheduled: lines accumulate
    lines = [f"line-{i:04d}-" + "x" * 180 for i in range(100)]
    for ln in lines:
        sink.write(ln)
    sink.flush()
    assert buf.getvalue().splitlines() == lines
    assert buf.writes > 1 and max(buf.sizes) <= 4096  # each write ends on a line boundary (checked above)
