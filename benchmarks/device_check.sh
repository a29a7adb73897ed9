#!/usr/bin/env bash
# The GPU check, one command from a fresh checkout on a machine with an NVIDIA GPU and PyTorch
# (no network needed): installs the project without touching torch, runs the numerical tests on
# CUDA, then times the official RNA-FM code against ours (fp32, bf16, fp16) and reports peak GPU
# memory, then the structure predictor against the official one. Steps 1-3: under 8 minutes on
# one H100; step 4 (structure) has not run on a GPU yet.
#
#   bash benchmarks/device_check.sh           # tests + benchmarks (1000 sequences, 3 rounds)
#   bash benchmarks/device_check.sh --quick   # the tests + short benchmarks
#
# PYTHON (default python3) must be the interpreter that holds a CUDA build of torch. Packages it
# lacks are installed from the wheels in benchmarks/wheels/ (pure Python, MIT): rna-fm (the
# official RNA-FM code, the parity reference), its import-time dependency ptflops, platformdirs.
set -euo pipefail

PY=${PYTHON:-python3}
QUICK=""
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK="--quick" ;;
        -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "device_check.sh: unknown option '$arg' (use --quick or --help)" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."

# 0. CUDA first: without it, stop before installing anything.
CHECK='
import sys
try:
    import torch
except ImportError as exc:
    sys.exit(f"cannot import torch ({exc})")
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() is False)")
'
if ! why=$("$PY" -c "$CHECK" 2>&1); then
    echo "device_check.sh needs an NVIDIA GPU: ${why##*$'\n'} (interpreter: $PY; set PYTHON to change it)" >&2
    exit 1
fi
export PYTHONUNBUFFERED=1
SECONDS=0

# 1. Install: missing pure-Python packages from the carried wheels, then the project itself.
#    --no-index: nothing is fetched; --no-deps: torch is never reinstalled.
echo "== install ($("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__)'))"
install_wheel() {  # import name, distribution name (its wheel: benchmarks/wheels/<name>-*.whl)
    if "$PY" -c "import $1" 2>/dev/null; then
        return 0
    fi
    local wheel
    wheel=$(ls benchmarks/wheels/"${2//-/_}"-*.whl 2>/dev/null | head -n 1 || true)
    if [[ -z "$wheel" ]]; then
        echo "device_check.sh: '$PY' lacks the package $2 (import $1) and benchmarks/wheels/ has no wheel of it" >&2
        exit 1
    fi
    echo "installing $wheel"
    "$PY" -m pip install -q --no-index --no-deps "$wheel"
}
install_wheel ptflops ptflops  # imported by 'import fm'
install_wheel platformdirs platformdirs
install_wheel fm rna-fm
for pair in pytest:pytest hypothesis:hypothesis scipy:scipy sklearn:scikit-learn pandas:pandas \
    safetensors:safetensors huggingface_hub:huggingface_hub tqdm:tqdm joblib:joblib; do
    install_wheel "${pair%%:*}" "${pair#*:}"
done
if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>/tmp/rnafm-pip.log; then
    # typically a setuptools older than pyproject.toml's >= 77: use the checkout as it is
    tools=$("$PY" -c 'import setuptools; print(setuptools.__version__)' 2>/dev/null || echo none)
    echo "pip install -e . failed (setuptools $tools; log: /tmp/rnafm-pip.log); using PYTHONPATH=$PWD"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import fm, rnafm_sklearn; print('rnafm_sklearn from', rnafm_sklearn.__file__)"
echo "   ${SECONDS}s"

# 2. The numerical tests on CUDA (with RNAFM_TEST_DEVICE set, only the tests that take the
#    device fixture run: parity with the official forward pass, pooling, windows, scoring).
echo "== tests on CUDA"
RNAFM_TEST_DEVICE=cuda "$PY" -m pytest -x -q -p no:cacheprovider --durations=5 \
    tests/test_encoder.py tests/test_embedder.py tests/test_long_sequences.py tests/test_scoring.py \
    tests/test_kernels_cuda.py tests/test_finetune_training.py
echo "   ${SECONDS}s"

# 3. Throughput and peak GPU memory, official vs ours, interleaved in one process.
echo "== benchmark"
"$PY" benchmarks/device_bench.py $QUICK
echo "   ${SECONDS}s"

# 4. Secondary structure: the official predictor against ours (fp32, bf16) at 100, 300 and
#    1022 nt, peak GPU memory at 1022 nt (each implementation in a fresh process).
echo "== structure benchmark"
"$PY" benchmarks/structure.py --device cuda --rounds "$([[ -n $QUICK ]] && echo 2 || echo 5)"
echo "== done in ${SECONDS}s"
