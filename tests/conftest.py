"""Shared test helpers: free loopback ports, repo paths."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference" / "vllm-0.32-cpu"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bind to 0, read it back, release)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def port() -> int:
    return free_port()
