#!/bin/bash
# The GPU checks and tables of benchmarks/RESULTS.md, in one go (≈8 minutes on an H100).
#
#   bash benchmarks/gpu.sh [OUT_DIR]        # default benchmarks/out/gpu
#
# WHEELS=dir installs the wheels there first (a machine without a package index:
# tyro, tensorboardX, constriction, keras and their pure-Python needs).
# Each part has its own time limit, so a slow part costs its own rows only; every
# table is also written as JSON to OUT_DIR, and everything printed to OUT_DIR/log.txt.
set -u
OUT_DIR=${1:-benchmarks/out/gpu}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore TF_CPP_MIN_LOG_LEVEL=2
exec > >(tee -a "$OUT_DIR/log.txt") 2>&1
T0=$(date +%s)
part() { echo "## [$(( $(date +%s) - T0 )) s] $*"; }
PY=${PYTHON:-python3}
if [ -n "${WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/flaxae-site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/flaxae-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}

part "versions"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import jax, flax, optax; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__)"

TP="$PY -m benchmarks.throughput --samples 65536 --matmul-size 8192 --timeout 90 --budget 25"
part "batch 256, float32, every peer; lax convolutions; CUDA-graph torch.compile"
timeout 270 $TP --batch-sizes 256 --out "$OUT_DIR/b256.json" \
  --impls flaxae,flaxae-xla-conv,pytorch,torch.compile,torch.compile-graphs,keras-jax

part "compile time of the dense fused epoch: exact float32, TF32, autotuning off, the cache twice"
rm -rf /tmp/flaxae-jc
for run in "float32" "tf32" "--xla_gpu_autotune_level=0" "cache 1" "cache 2"; do
  flags=""; cache=""; precision=float32
  case $run in
    cache*) cache=/tmp/flaxae-jc ;;
    tf32) precision=tf32 ;;
    --*) flags=$run ;;
  esac
  XLA_FLAGS="$flags" JAX_COMPILATION_CACHE_DIR="$cache" timeout 60 $PY -m benchmarks.flaxae_bench \
    --model dense --batch-size 256 --samples 65536 --reps 5 --no-inference \
    --precision $precision | $PY -c "
import json, sys
r = json.loads(sys.stdin.read().split('BENCH_JSON ')[1])
print('$run:', 'compile_s', round(r['compile_s'], 2), 'samples/s', round(r['train']['samples_per_s']))"
done

part "conv AE at the other batch sizes"
timeout 120 $TP --models conv --batch-sizes 64,1024,4096 --impls flaxae,flaxae-xla-conv,pytorch \
  --out "$OUT_DIR/conv_sweep.json"

part "tests on the GPU (exact float32 products; devices(n) tests skipped)"
JAX_PLATFORMS=cuda XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 120 $PY -m pytest -q \
  -p no:cacheprovider -n 8 -rfs --tb=line tests/models tests/objectives tests/test_losses.py \
  tests/data/test_compact.py tests/train/test_precision.py tests/train/test_step.py
part "done"
