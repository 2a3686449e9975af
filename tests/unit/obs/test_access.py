"""The access log reads back: every field of a JSON line, the text line, the logger name, and 'off'."""

from __future__ import annotations

import dataclasses
import io
import logging

import msgspec
import pytest

from lanterna.obs.access import ACCESS_LOGGER, AccessLog, AccessRecord, format_text, setup_access_log

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
    assert list(out) == FIELDS == [f.name for f in dataclasses.fields(AccessRecord)]
    assert out == dataclasses.asdict(rec)


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
