#!/usr/bin/env bash
# The accelerator measurements of issue 21 as one prepared command, for a lent GPU (the `device`
# tool) or any machine with one: each benchmark under its own time limit, its output in
# $OUT/<name>.txt (OUT defaults to ./accelerator-out), the device described in $OUT/device.txt.
#
#   bash benchmarks/accelerator_wheels.sh          # here, once: the wheels the GPU image lacks, into .wheels/
#   bash benchmarks/accelerator.sh [NAME ...]      # there (carry .wheels): all, or some of the names below
#
# Names: precision (the seed example in float32 and bfloat16, 3 seeds), float16 (the same in float16
# with a dynamic loss scale), resnet (the same on the ResNet trunk), seeds (S vmapped seeds vs S runs), aggregation and
# aggregation_bf16 (every aggregator at both levels, float32 and bfloat16). Together they take
# about 8 minutes on an H100 (estimated; within one 600 s call split them over two). Compare
# with the CPU figures in benchmarks/README.md as ratios.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-accelerator-out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MTL_JAX_DATA_DIR="${MTL_JAX_DATA_DIR:-$PWD/.accelerator-data}"

if ! "$PYTHON" -c "import tensorflow_datasets, grain, ml_collections, tensorboardX" 2>/dev/null; then
  if ! ls .wheels/*.whl >/dev/null 2>&1; then
    echo "missing packages and no .wheels/: run benchmarks/accelerator_wheels.sh here and carry .wheels" >&2
    exit 2
  fi
  # --no-deps: the image has everything else (jax, flax, optax, orbax, chex, numpy, protobuf, ...)
  "$PYTHON" -m pip install -q --no-index --no-deps .wheels/*.whl > "$OUT/install.txt" 2>&1 || {
    cat "$OUT/install.txt" >&2; exit 2; }
fi
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  "$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())"; } > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

# name, seconds allowed, command
run() {
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  echo "$name: exit $rc after $((SECONDS - start)) s (limit $limit s)"
  tail -n 25 "$OUT/$name.txt"
}

names=("$@")
[ ${#names[@]} -eq 0 ] && names=(precision float16 resnet seeds aggregation aggregation_bf16)
for name in "${names[@]}"; do
  case $name in
    precision) run precision 150 "$PYTHON" benchmarks/precision.py --seeds 0 1 2 --precisions float32 bfloat16 ;;
    float16) run float16 100 "$PYTHON" benchmarks/precision.py --seeds 0 1 2 --precisions float16 --loss-scale dynamic ;;
    resnet) run resnet 120 "$PYTHON" benchmarks/precision.py --seeds 0 --set model=resnet --precisions float32 bfloat16 ;;
    seeds) run seeds 120 "$PYTHON" benchmarks/seeds_speed.py --seeds 4 8 ;;
    aggregation) run aggregation 150 "$PYTHON" benchmarks/aggregation_speed.py --samples 7 --tasks 2,8,32 ;;
    aggregation_bf16) run aggregation_bf16 150 "$PYTHON" benchmarks/aggregation_speed.py --samples 7 --tasks 8 \
                        --precision bfloat16 ;;
    *) echo "unknown benchmark $name (precision float16 resnet seeds aggregation aggregation_bf16)" >&2; exit 2 ;;
  esac
done
