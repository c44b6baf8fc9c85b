#!/usr/bin/env bash
# Train the landmark hypotheses side by side on one GPU host with Keras on JAX (no TensorFlow there).
#
#   bash tools/gpu_train.sh PACK OUT BUDGET_S DEADLINE_S [EXTRA ARGS for every run...]
#
# PACK: from tools/pack_landmarks.py. Each run trains for BUDGET_S seconds of wall clock after its
# compiling first epoch, shrunk so that it ends DEADLINE_S seconds after its start, and writes
# OUT/<name>.keras (files over 15 MB are split into .partNN pieces: the device tool brings back files of
# at most 16 MB); the logs and <name>.json files end up in OUT/results.tgz. Runs are independent: one
# failing leaves the others going. Set PYTHON to choose the interpreter (default python3).
set -u
PACK=$1
OUT=$2
BUDGET=$3
DEADLINE=$4
shift 4
PY=${PYTHON:-python3}
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_MEM_FRACTION=0.2 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
mkdir -p "$OUT/logs"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/logs/gpu.txt" 2>&1
"$PY" -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)" \
    >>"$OUT/logs/gpu.txt" 2>&1

run() {
    local name=$1
    shift
    # a hard stop past the deadline, so one hung run cannot eat the whole call
    timeout $((DEADLINE + 40)) "$PY" tools/train_packed.py --pack "$PACK" --out "$OUT" \
        --budget-s "$BUDGET" --deadline-s "$DEADLINE" --name "$name" "$@" >"$OUT/logs/$name.log" 2>&1
    echo "$name exit $?" >>"$OUT/logs/exit.txt"
}

run unet --arch unet "$@" &
run hrnet --arch hrnet "$@" &
run resnet --arch resnet "$@" &
run unet32 --arch unet --base-filters 32 "$@" &
wait

cat "$OUT/logs/gpu.txt" "$OUT/logs/exit.txt"
for f in "$OUT"/logs/*.log; do
    echo "== $f"
    grep -v -E "^(WARNING|I0000|W0000|E0000)" "$f" | tail -n 5
done
rm -f "$OUT"/.*.tmp.*
mv "$OUT"/*.json "$OUT/logs/" 2>/dev/null
tar -czf "$OUT/results.tgz" -C "$OUT" logs && rm -r "$OUT/logs"
for f in "$OUT"/*.keras; do
    if [ "$(stat -c %s "$f")" -gt 15000000 ]; then
        split -b 15000000 -d "$f" "$f.part" && rm "$f"
    fi
done
ls -la "$OUT"
