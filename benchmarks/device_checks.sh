#!/usr/bin/env bash
# The checks one GPU lease runs (about 9 minutes), each under its own time limit so one failure leaves the others:
#   env.txt         GPU, CPU model and its int8 instructions (VNNI / AMX), package versions
#   int8_ops.txt    benchmarks/int8_ops.py on 2 pinned cores with 2 threads (issue 14: int8 vs fp32 ONNX on a VNNI CPU)
#   train_step.txt  benchmarks/train_step.py on the GPU: the compute floor of a teacher and a student step
#   synthesis_gpu.txt  benchmarks/synthesis.py --preset gpu: a step of `tskd synthesis --preset gpu` (issue 16) at 128 px
#   paper/          benchmarks/paper_scale_gpu.sh: `--scale paper` stages timed (scratch.log, ts_kd.log, stages.json)
#
# Usage (the device machine has torch, timm, peft, onnxruntime; the rest travels as wheels in .whl/):
#   bash benchmarks/device_checks.sh <out folder>
set -uo pipefail
OUT_DIR=${1:?usage: bash benchmarks/device_checks.sh <out folder>}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core"
    echo "int8 instructions: $(grep -o -w -E 'avx512_vnni|avx_vnni|amx_int8|avx512f' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    python3 -c "import torch, onnxruntime, monai, timm; print('torch', torch.__version__, 'onnxruntime', onnxruntime.__version__, 'monai', monai.__version__, 'timm', timm.__version__)"
} > "$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"
timeout 150 taskset -c 0,1 python3 benchmarks/int8_ops.py --threads 2 > "$OUT_DIR/int8_ops.txt" 2>&1; echo "int8_ops rc $?"
timeout 90 python3 benchmarks/train_step.py --device cuda > "$OUT_DIR/train_step.txt" 2>&1; echo "train_step rc $?"
timeout 90 python3 benchmarks/synthesis.py --preset gpu --device cuda --sizes 128 --batch-size 32 --ddim-steps 50 > "$OUT_DIR/synthesis_gpu.txt" 2>&1
echo "synthesis_gpu rc $?"
cat "$OUT_DIR/int8_ops.txt" "$OUT_DIR/train_step.txt" "$OUT_DIR/synthesis_gpu.txt" | grep -v -E "INFO|DDIM sampling"
OUT="$OUT_DIR/paper" TIME_LIMIT=${PAPER_LIMIT:-300} bash benchmarks/paper_scale_gpu.sh
