#!/usr/bin/env bash
# The GPU figures, in one run, on a Linux machine with an NVIDIA GPU and MLX's CUDA build
# (Python 3.12; the NVIDIA libraries on the machine):
#
#     python3.12 -m venv .venv && .venv/bin/pip install -e . "mlx[cuda13]==0.32.4"
#     PYTHON=.venv/bin/python benchmarks/gpu.sh                  # the real size
#     PYTHON=.venv/bin/python benchmarks/gpu.sh --size small     # the same steps, small (CPU too)
#
# Steps (--steps picks some; all by default):
#   full_size  benchmarks/full_size.py: the random 4.4 B checkpoint (bf16, official layout)
#              and its `voxtral convert -q --q-bits 4`; each through transcribe, live --input,
#              serve (one upload, one realtime session) and bench on jfk.wav (11 s): load
#              time, peak memory, tokens/s, first-token latency
#   batch      benchmarks/batch_scaling.py --model: decoder tokens/s with B = 1..64 streams
#              a pass, bf16 and 4-bit
#   serve      benchmarks/serve_capacity.py --model: real-time streams the 4-bit server
#              sustains
# Figures go to OUT (--out, default gpu-results/): one .txt per step (full_size.json too),
# machine.txt (GPU, MLX), log.txt (commands, errors). Checkpoints go to --work (default
# OUT/checkpoints; 8.9 + 2.5 GB at the real size). A failed step does not stop the others;
# the exit status is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

SIZE=full OUT=gpu-results WORK="" STEPS="full_size batch serve"
usage="usage: benchmarks/gpu.sh [--size full|small] [--out DIR] [--work DIR] [--steps 'full_size batch serve']"
while [ $# -gt 0 ]; do
    case "$1" in
        --size) SIZE=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
case "$SIZE" in
    full) CLIP=11 BATCHES="1 2 4 8 16 32 64" LEVELS="1 2 4 8 16 24 32 48 64" ;;
    small) CLIP=1 BATCHES="1 2 4" LEVELS="1 2" ;;
    *) echo "$usage" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
WORK=${WORK:-$OUT/checkpoints}
mkdir -p "$OUT" "$WORK"

backend=$("$PYTHON" -c "from voxtral_mlx.bench import backend_name; print(backend_name())") || exit 1
{
    echo "size $SIZE, $(date -u), commit $(git rev-parse --short HEAD 2>/dev/null)"
    "$PYTHON" -c "import mlx.core as mx, platform; print('MLX', mx.__version__, mx.default_device(), platform.python_version())"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    echo "backend: $backend"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"
if [ "$SIZE" = full ] && [ "$backend" != cuda ]; then
    echo "MLX runs on '$backend', not CUDA: install mlx[cuda13], or try --size small" >&2
    exit 1
fi

failed=0
step() {  # step NAME COMMAND...: its stdout to OUT/NAME.txt
    local name=$1
    shift
    echo "== $name: $*" | tee -a "$OUT/log.txt"
    local tic=$SECONDS
    if "$@" > "$OUT/$name.txt" 2>> "$OUT/log.txt"; then
        echo "   done in $((SECONDS - tic)) s" | tee -a "$OUT/log.txt"
    else
        echo "   FAILED (exit $?) after $((SECONDS - tic)) s: see $OUT/log.txt" | tee -a "$OUT/log.txt"
        failed=1
    fi
}

for s in $STEPS; do
    case "$s" in
        full_size)
            step full_size "$PYTHON" benchmarks/full_size.py --dir "$WORK" --size "$SIZE" \
                --models bf16 q4 --clip-seconds "$CLIP" --json "$OUT/full_size.json" ;;
        batch)
            for model in bf16 q4; do
                # shellcheck disable=SC2086
                step "batch_$model" "$PYTHON" benchmarks/batch_scaling.py --model "$WORK/$model" \
                    --batches $BATCHES --rounds 3
            done ;;
        serve)
            # shellcheck disable=SC2086
            step serve_capacity "$PYTHON" benchmarks/serve_capacity.py --model "$WORK/q4" \
                --levels $LEVELS ;;
        *) echo "unknown step $s; $usage" >&2; exit 2 ;;
    esac
done
cat "$OUT"/full_size.txt "$OUT"/batch_*.txt "$OUT"/serve_capacity.txt 2>/dev/null
exit $failed
