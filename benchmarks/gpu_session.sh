#!/usr/bin/env bash
# The GPU checks on an offline GPU node, in one command: install the kit (tools/gpu_kit.py), build the
# C++ extension for the node's Python, print what the node has, run benchmarks/gpu_check.py and,
# with --tests, the engine tests that exercise the GPU path. OUT gets at most six files: session.log
# (everything printed), gpu_check.json (its last line), profile_ours.txt / profile_plain.txt (one
# step's kernels), gpu_tests.log, and build_ext.log when the extension was built.
#
#   python tools/gpu_kit.py build .gpukit                  # here, once: KIT/1 (megatron-core, ...), KIT/2 (rest)
#   bash benchmarks/gpu_session.sh .gpukit OUT [--tests] [gpu_check.py arguments...]   # there
#
# Group 1 of the kit alone runs the throughput, resume and hooks parts (the SmolLM2 parity is then
# reported as skipped); once every group has arrived, a second call with `--skip throughput resume
# hooks --tests` runs the SmolLM2 parity and the tests. GPU_TESTS overrides the test files.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    echo "usage: bash benchmarks/gpu_session.sh KIT OUT [--tests] [gpu_check.py arguments...]" >&2
    exit 2
fi
kit=$1 out=$2
shift 2
tests=0
if [ "${1:-}" = "--tests" ]; then tests=1; shift; fi
PY=${PYTHON:-python3}
SITE=${CPT_SITE:-/tmp/cpt-site}
mkdir -p "$out"
exec > >(tee -a "$out/session.log") 2>&1
started=$(date +%s)
stamp() { echo "[gpu_session +$(( $(date +%s) - started ))s] $*"; }

stamp "node: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
"$PY" tools/gpu_kit.py install "$kit" --target "$SITE" || exit 2
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$PY" -c "import cpt._C" 2>/dev/null; then
    stamp "building the C++ extension"
    "$PY" setup.py build_ext --inplace --parallel "$(nproc)" > "$out/build_ext.log" 2>&1 \
        || { tail -20 "$out/build_ext.log"; echo "gpu_session: the C++ extension did not build" >&2; exit 2; }
fi
"$PY" - <<'EOF'
import sys, torch
from megatron_ext import compat, features
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"megatron-core {compat.megatron_core_version()} (tested range {compat.tested_range()}: "
      f"{'in' if compat.in_tested_range() else 'OUTSIDE'}), kernels {features.summary()}")
EOF
stamp "gpu_check.py $*"
"$PY" benchmarks/gpu_check.py --profile-dir "$out" "$@" | tee "$out/gpu_check.out"
status=${PIPESTATUS[0]}
tail -1 "$out/gpu_check.out" > "$out/gpu_check.json" && rm "$out/gpu_check.out"
if [ "$tests" = 1 ]; then
    files=${GPU_TESTS:-"tests/test_device_policy.py tests/test_kernels.py tests/test_loss.py tests/test_model.py
        tests/test_engine_step_syncs.py tests/test_engine_saves.py tests/test_checkpoint_retention.py
        tests/test_attention_mask.py tests/test_megatron_range.py"}
    stamp "pytest $files"
    # shellcheck disable=SC2086
    "$PY" -m pytest -q -p no:cacheprovider --timeout 300 -W ignore::DeprecationWarning $files 2>&1 \
        | tee "$out/gpu_tests.log" | tail -40
    tested=${PIPESTATUS[0]}
    [ "$tested" -ne 0 ] && status=$tested
fi
stamp "done (exit $status)"
exit "$status"
