#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one prepared run on a lent GPU machine (fits in 8 minutes).
#
# That machine has PyTorch with CUDA, onnx, onnxruntime (CPU), click, rich, pyyaml, pillow,
# but no TensorRT, no network and no torch-pruning/onnxslim/polygraphy: prepare the missing wheels here first,
#   bash benchmarks/device_check.sh --prepare          # downloads them into .cache/device-wheels/
# then run it there, carrying that folder (the device tool's carry: [".cache/device-wheels"]):
#   bash benchmarks/device_check.sh                    # results under $OUT (default runs/device)
# and commit $OUT/cuda_runner.{json,md} as benchmarks/results/cuda_runner.{json,md}.
#
# It runs: the gpu-marked tests (PyTorch CUDA runner against CPU, CUDA graphs, peak memory, and Polygraphy's
# ctypes CUDA wrapper with edgeseg's device facts, free memory and events on the real libcudart),
# then benchmarks/cuda_runner.py (FP32 / FP16 / CUDA graphs at 360x480 and 1024x2048).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.cache/device-wheels
if [ "${1:-}" = "--prepare" ]; then
    mkdir -p "$WHEELS"
    # pure-Python wheels, so the device machine's Python (3.12 there) takes them whatever this one is
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS" torch-pruning onnxslim polygraphy
    ls -l "$WHEELS"
    exit 0
fi
OUT=${OUT:-runs/device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
started=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -m pip install --quiet --no-index --no-deps "$WHEELS"/*.whl
python3 -m pip install --quiet --no-deps --no-build-isolation -e .
python3 -c "from edgeseg.runtime.native import BACKEND; print('edgeseg C core:', BACKEND)"
# the gpu-marked tests: 4 minutes at most, so the timings below always get their turn
set +e
timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ 2>&1 | tee "$OUT/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
set -e
timeout 240 python3 benchmarks/cuda_runner.py --out "$OUT" --iters 50 --rounds 4
echo "gpu tests exit code ${tests_rc}; device check took $(( $(date +%s) - started )) s"
exit "${tests_rc}"
