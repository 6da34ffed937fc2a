#!/usr/bin/env bash
# One prepared GPU check (issue 26): every real-size figure into ONE JSON file, in <= 8 minutes on one H100 80 GB or
# H200 141 GB. It replaces the former gpu_kernels.sh (whose gpu-marked tests and kernel benchmark are its steps
# "tests" and "kernels").
#
#   bash benchmarks/gpu_check.sh [--dry-run] [OUT_DIR]
#
# OUT_DIR defaults to $OUT, then to benchmarks/results/. The file is OUT_DIR/gpu_check_<gpu|dry-run>_<UTC time>.json;
# its path is the last line printed. What is measured, the span of each figure and the JSON's layout:
# benchmarks/gpu_check.py's docstring. Parts, each under its own `timeout` (and each step inside under its own
# limit; a step that fails or runs out records why and the rest goes on):
#   env 25 s · tests (pytest -m gpu, tests/test_kernels_triton.py) 45 s · kernels 120 s · model (random:full in BF16:
#   load, capture overhead at 8K / 20K, decode tok/s, EVS efficiency, 256-frame video memory) 285 s = 475 s at most.
# --dry-run: the same code on CPU at tiny sizes (random:toy; Triton's interpreter): about 30 s of CPU time (longer on a
# busy machine); tests/test_gpu_check.py runs it.
#
# On a lent machine, from the repository root, with an interpreter that has torch (CUDA), triton, transformers >= 5.25
# and omni-lab's dependencies (`pip install -e .` with the constraints, done beforehand; nothing is installed here):
#
#   PYTHON=python bash benchmarks/gpu_check.sh benchmarks/results
#
# (through the `run` device tool: command "PYTHON=python bash benchmarks/gpu_check.sh \$OUT", timeout_s 540; a carried
# .venv must be one built for that machine.) PYTHON defaults to .venv/bin/python when it exists, else python3. This
# checkout's code is put first on the path through a throw-away shim package (omni_lab -> ./omni_lab,
# omni_lab.kernels -> ./kernels/omni_lab_kernels, omni_lab.widgets -> ./widgets/omni_lab_widgets), so an omni-lab
# installed elsewhere is not what gets measured.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=""
OUT_DIR=""
for argument in "$@"; do
    case "$argument" in
        --dry-run) DRY="--dry-run" ;;
        -h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) OUT_DIR="$argument" ;;
    esac
done
OUT_DIR="${OUT_DIR:-${OUT:-$REPO/benchmarks/results}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON="python3"; fi
fi
MODE="gpu"; [[ -n "$DRY" ]] && MODE="dry-run"
JSON="$OUT_DIR/gpu_check_${MODE}_$(date -u +%Y%m%dT%H%M%SZ).json"

SHIM="$(mktemp -d)"
trap 'rm -rf "$SHIM"' EXIT
mkdir "$SHIM/omni_lab"
for entry in "$REPO"/omni_lab/*; do ln -s "$entry" "$SHIM/omni_lab/"; done
ln -s "$REPO/kernels/omni_lab_kernels" "$SHIM/omni_lab/kernels"
ln -s "$REPO/widgets/omni_lab_widgets" "$SHIM/omni_lab/widgets"
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error OMNI_LAB_KERNELS=auto PYTHONUNBUFFERED=1
if [[ -n "$DRY" ]]; then
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" CUDA_VISIBLE_DEVICES=""
fi
cd "$SHIM"  # so that neither the repo root nor its omni_lab/ shadows the shim on sys.path

CHECK="$REPO/benchmarks/gpu_check.py"
KILLED=""
part() {  # part NAME SECONDS [ENV=VALUE ...]: one part under its own timeout; a kill is noted for "close"
    local name="$1" seconds="$2"
    shift 2
    echo "== $name (at most $seconds s)"
    env "$@" timeout --kill-after=10 "$seconds" "$PYTHON" "$CHECK" "$name" --out "$JSON" $DRY
    local rc=$?
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then KILLED="${KILLED:+$KILLED, }$name after $seconds s"; fi
    if [[ $rc -ne 0 ]]; then echo "   $name exited with $rc (recorded in the JSON)"; fi
}

part env 25
part tests 45
if [[ -n "$DRY" ]]; then
    part kernels 120 TRITON_INTERPRET=1  # interpreted Triton on CPU (set before triton is first imported)
else
    part kernels 120 TRITON_INTERPRET=0
fi
part model 285
"$PYTHON" "$CHECK" close --out "$JSON" $DRY ${KILLED:+--killed "$KILLED"}
echo "$JSON"
