"""The local launcher survives losing the free-port race (another process binds the port first)."""

from __future__ import annotations

import socket

import pytest

from lanterna.cluster import launcher as launcher_mod
from lanterna.cluster.launcher import SimLauncher

pytestmark = pytest.mark.integration


async def test_a_sim_whose_port_was_taken_is_started_again_on_fresh_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real = launcher_mod.free_port
    handed = iter([taken])  # the first "free" port handed out is already bound by someone else
    monkeypatch.setattr(launcher_mod, "free_port", lambda host="127.0.0.1": next(handed, None) or real(host))
    launcher = SimLauncher(kv_events=False, sim_args=["--time-scale", "0"])
    try:
        (r,) = await launcher.start(1)
        assert r.port != taken and r.proc is not None and r.proc.poll() is None
    finally:
        await launcher.stop()
        squatter.close()
