#!/usr/bin/env bash
# GPU check of congrad's kernels, sketch pass and filter: one script to run on a CUDA machine (one H100/H200),
# from the repository root:
#
#     bash bench/gpu_check.sh
#
# Every figure and log goes to $OUT (default ./gpu_check_out):
#   env.txt                 GPU, driver, Python/torch/triton versions
#   test_count_sketch.txt   pytest of tests/test_count_sketch.py on the GPU (the Triton kernel compiled)
#   kernel.txt, kernel.json bench/kernel.py --check: GB/s of ours / index_add_ / read and the goals (PASS/FAIL
#                           lines); with SWEEP=1 also a launch-configuration sweep (adds minutes)
#   persample.txt           bench/persample.py: the batched sketch pass vs a plain forward+backward vs a
#                           per-pair backward loop, on a Llama-3.2-1B-shaped stack of layers, and the cost of
#                           sketching every parameter (full weight matrices, embeddings, norms) vs LoRA only
#   memory_1b.txt/.json     bench/memory.py: peak memory (max_memory_allocated) of a training step and of a
#                           sketch pass, each in its own process, Llama-3.2-1B layer shapes, bf16, 16 x 512
#                           tokens, checkpointing on and off, with congrad.plan's estimate beside each figure;
#                           PASS/FAIL line for the goal sketch <= 1.2 x train with checkpointing
#   memory_8b.txt/.json     the same at Llama-3-8B layer shapes (4 layers, full vocabulary), checkpointing on
#   fsdp.txt                train.py trainer=fsdp on the GPU (one process): FSDP2 with bf16 weights, fp32
#                           adapters and bf16-mixed precision through a whole epoch, ConGrad pass included
#   cpu_gpu_kept_set.txt    filter.py with the same seed on CPU and on the GPU: identical kept sets?
#   summary.txt             one line per step: ok / FAILED (exit status) / TIMEOUT, and the wall time
# The script runs every step even when one fails, and exits non-zero if any failed.
# The project's dependencies must already be importable by `python`; the project itself is installed
# (`pip install --no-deps --no-build-isolation -e .`, offline) when `import congrad.kernels` fails.
#
# Without a CUDA device it says so and exits 0 (set GPU_CHECK_ALLOW_CPU=1 to run the steps anyway, on CPU
# with small shapes: the tests then use Triton's interpreter and the benchmarks their quick settings — a dry
# run of this script).
#
# Settings (environment): OUT, PYTHON (default python), SWEEP=1 to add the kernel sweep, and per-step time
# limits in seconds TEST_TIMEOUT (default 240) and BENCH_TIMEOUT (default 300). On one H100/H200 the whole
# script should take about 6-8 minutes without the sweep (estimated; not yet run on a GPU).
#
# To add a check, append a `step` line at the end of this file (name, time limit, command); its output is
# tee'd into $OUT/<name>.txt and it counts in the summary and the exit status. For example:
#     step persample 240 "$PYTHON" bench/persample.py --json "$OUT/persample.json"

set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."

OUT="${OUT:-./gpu_check_out}"
PYTHON="${PYTHON:-python}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
: > "$OUT/summary.txt"
FAILED=0
if ! "$PYTHON" -c "import congrad.kernels" 2>/dev/null; then
    "$PYTHON" -m pip install --quiet --no-deps --no-build-isolation -e . \
        || { echo "cannot install the project (pip install --no-deps --no-build-isolation -e .)" >&2; exit 1; }
fi
export TRITON_DEFAULT_FP_FUSION="${TRITON_DEFAULT_FP_FUSION:-1}"

# step NAME LIMIT_S CMD...: run CMD with a time limit, tee its output to $OUT/NAME.txt, record the result.
step() {
    local name="$1" limit="$2"
    shift 2
    echo "=== $name: $*" | tee "$OUT/$name.txt"
    local t0=$SECONDS
    timeout --kill-after=20 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    local took=$((SECONDS - t0))
    if [ "$rc" -eq 0 ]; then
        echo "ok      $name (${took}s)" | tee -a "$OUT/summary.txt"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "TIMEOUT $name after ${limit}s" | tee -a "$OUT/summary.txt"
        FAILED=1
    else
        echo "FAILED  $name (exit $rc, ${took}s)" | tee -a "$OUT/summary.txt"
        FAILED=1
    fi
}

# On exit (normal or early): print the summary, exit non-zero if a step failed.
finish() {
    echo "=== summary ($OUT/summary.txt)"
    cat "$OUT/summary.txt"
    exit "$FAILED"
}
trap finish EXIT

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    command -v nvidia-smi >/dev/null && nvidia-smi
    "$PYTHON" - <<'EOF'
import platform, sys
print("python", platform.python_version())
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print("device", p.name, f"{p.total_memory / 2**30:.0f} GiB", "SMs", p.multi_processor_count)
except Exception as e:
    print("torch: import failed:", e)
try:
    import triton
    print("triton", triton.__version__)
except Exception as e:
    print("triton: import failed:", e)
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    if [ "${GPU_CHECK_ALLOW_CPU:-0}" != "1" ]; then
        echo "no CUDA device: nothing to check here (GPU_CHECK_ALLOW_CPU=1 runs the steps on CPU)" \
            | tee -a "$OUT/summary.txt"
        exit 0
    fi
    echo "no CUDA device: GPU_CHECK_ALLOW_CPU=1, running the steps on CPU (a dry run)" | tee -a "$OUT/summary.txt"
    DEVICE=cpu
    BENCH_ARGS=(--quick)
    PERSAMPLE_ARGS=(--device cpu --shapes 4x64 --reps 2 --warmup 1 --breakdown-reps 1)
    MEM_1B=(--device cpu --preset small --layers 2 --shapes 2x64)
    MEM_8B=(--device cpu --preset small --layers 2 --shapes 2x64 --checkpointing on)
    FSDP_ARGS=(trainer.accelerator=cpu trainer.precision=32-true "data.languages=[de,fr,hi]")
    KEPT_ARGS=("data.languages=[de,fr,hi]")
else
    DEVICE=cuda
    BENCH_ARGS=(--check)
    [ "${SWEEP:-0}" = "1" ] && BENCH_ARGS+=(--sweep)
    PERSAMPLE_ARGS=(--device cuda --shapes 8x512)
    MEM_1B=(--device cuda --preset 1b --layers 4 --shapes 16x512)
    MEM_8B=(--device cuda --preset 8b --layers 4 --shapes 16x512 --checkpointing on)
    FSDP_ARGS=(model.backbone.dtype=bfloat16)
    KEPT_ARGS=()
fi

step test_count_sketch "${TEST_TIMEOUT:-240}" "$PYTHON" -m pytest tests/test_count_sketch.py -q -rs -p no:cacheprovider
step kernel "${BENCH_TIMEOUT:-300}" "$PYTHON" bench/kernel.py "${BENCH_ARGS[@]}" --json "$OUT/kernel.json"
step persample "${BENCH_TIMEOUT:-300}" "$PYTHON" bench/persample.py "${PERSAMPLE_ARGS[@]}"
step memory_1b "${BENCH_TIMEOUT:-300}" "$PYTHON" bench/memory.py "${MEM_1B[@]}" --plan --json "$OUT/memory_1b.json"
step memory_8b "${BENCH_TIMEOUT:-300}" "$PYTHON" bench/memory.py "${MEM_8B[@]}" --plan --json "$OUT/memory_8b.json"
step fsdp "${BENCH_TIMEOUT:-300}" "$PYTHON" train.py trainer=fsdp trainer.devices=1 trainer.max_epochs=1 "~logger" "~eval" \
    callbacks.congrad.progress=false "hydra.run.dir=$OUT/fsdp_run" "${FSDP_ARGS[@]}"
step cpu_gpu_kept_set "${BENCH_TIMEOUT:-300}" "$PYTHON" bench/kept_set_cpu_gpu.py --device "$DEVICE" ${KEPT_ARGS[@]+"${KEPT_ARGS[@]}"}
