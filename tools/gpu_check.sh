#!/usr/bin/env bash
# The GPU check (`make test-gpu`): nbval on CUDA against the stored CPU outputs, then the
# benchmarks on the GPU (the 8B with LLAMA3_STREAM=1 among them, in benchmarks/scale.py),
# decoding speed, and the decode step under torch.compile. Logs go to $OUT (default build/gpu-check).
#
# Runs with whatever python3 holds a CUDA build of torch. Missing pure-Python test
# packages can come as wheels in .whl/ (installed with --no-deps into /tmp/site).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/device.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/device.txt"
status=0

nbval() {  # $1: log name; environment decides device and dtype
    # nbval's options: pyproject.toml's addopts, the one place they are written
    $PY -m pytest llama3-from-scratch.ipynb 2>&1 | tee "$OUT/$1" | tail -3
}

echo "== nbval on CUDA, float32: every stored CPU output must match"
LLAMA3_DEVICE=cuda LLAMA3_DTYPE=float32 nbval nbval-cuda-float32.log || status=1
echo "== nbval on CUDA, default dtype (bfloat16): every stored CPU output must match too"
LLAMA3_DEVICE=cuda nbval nbval-cuda-bfloat16.log || status=1

echo "== LLAMA3_QUANTIZE=int8 and int4 on CUDA: the whole notebook to '42' (dequantize, then multiply)"
for scheme in int8 int4; do
    LLAMA3_DEVICE=cuda LLAMA3_QUANTIZE=$scheme $PY -m plumbing.run_notebook 2>&1 | tee "$OUT/quantize-$scheme.log" | tail -2
    grep -q "decoded: '42'" "$OUT/quantize-$scheme.log" || status=1
done

echo "== full notebook run time, embedded checkpoint"
LLAMA3_DEVICE=cuda $PY -m benchmarks.notebook_runtime --repeat 3 2>&1 | tee "$OUT/runtime.log"
echo "== scale: embedded, 3.2-1B and 8B shapes (random checkpoints are created on this machine)"
$PY -m benchmarks.scale --device cuda --skip-eager --models "${MODELS:-embedded,3.2-1b,8b}" 2>&1 | tee "$OUT/scale.log"
echo "== generation speed: decode step against its floor, and with/without the cache (embedded)"
$PY -m benchmarks.generation --device cuda --models "${GEN_MODELS:-embedded,8b}" --decode 16 2>&1 | tee "$OUT/generation.log"
echo "== the notebook's decode step, eager and under torch.compile (default, reduce-overhead)"
$PY -m benchmarks.compiled_decode --device cuda --models "${GEN_MODELS:-embedded,8b}" 2>&1 | tee "$OUT/compiled.log"
exit $status
