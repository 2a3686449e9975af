#!/usr/bin/env bash
# Install the peer routers the gateway-overhead benchmark compares against into their own venv
# (.venv-peers), so their dependencies never touch Lanterna's .venv.
#   vllm-router : vLLM's Rust router (PyPI "vllm-router")
#   smg         : Shepherd Model Gateway (PyPI "smg")
# Usage: scripts/setup_peers.sh [venv-dir]      (idempotent; prints the two CLI paths)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-peers}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet vllm-router smg
for exe in vllm-router smg; do
  if [ -x "$VENV/bin/$exe" ]; then echo "$exe: $VENV/bin/$exe"; else echo "$exe: no console script in $VENV/bin" >&2; fi
done
