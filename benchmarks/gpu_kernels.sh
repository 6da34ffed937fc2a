#!/usr/bin/env bash
# One prepared GPU check for omni_lab.kernels (issue 4), under 5 minutes on one H100/H200-class GPU:
#   1. the gpu-marked tests (Triton kernels compiled for CUDA vs the torch reference, dispatch picks Triton);
#   2. the CUDA benchmark: Triton pooled attention mass vs torch SDPA forward (flash, bf16) at 32K and 128K
#      (target: <= 2x SDPA's time), and vs the torch reference on the GPU at 32K (target: >= 10x faster).
#
# Usage: bash benchmarks/gpu_kernels.sh            (PYTHON=/path/to/python to pick the interpreter)
# Needs torch with CUDA, triton and pytest in that interpreter; nothing is installed. This checkout's code is put
# on the path through a throw-away shim package (omni_lab -> ./omni_lab, omni_lab.kernels -> ./kernels/omni_lab_kernels), so an
# omni-lab installed elsewhere on the machine is not what gets tested.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
SHIM="$(mktemp -d)"
trap 'rm -rf "$SHIM"' EXIT
mkdir "$SHIM/omni_lab"
for entry in "$REPO"/omni_lab/*; do ln -s "$entry" "$SHIM/omni_lab/"; done
ln -s "$REPO/kernels/omni_lab_kernels" "$SHIM/omni_lab/kernels"
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 OMNI_LAB_KERNELS=auto
unset TRITON_INTERPRET
cd "$SHIM"  # so that neither the repo root nor its omni_lab/ shadows the shim on sys.path

"$PYTHON" - <<'PY'
import torch, triton
import omni_lab.kernels as kernels
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print(f"torch {torch.__version__}, triton {triton.__version__}, {torch.cuda.get_device_name()}, "
      f"kernels from {kernels.__file__}")
PY

echo "== 1. gpu-marked tests"
timeout 150 "$PYTHON" -m pytest "$REPO/tests/test_kernels_triton.py" -c "$REPO/pyproject.toml" --rootdir "$REPO" \
    -m gpu -q -p no:cacheprovider

echo "== 2. benchmark (Triton vs SDPA forward, Triton vs torch reference on the GPU)"
timeout 200 "$PYTHON" "$REPO/benchmarks/bench_kernels.py" --device cuda --lengths 32768 131072 --repeats 5 \
    --reference-max-length 32768
