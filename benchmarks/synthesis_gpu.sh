#!/usr/bin/env bash
# One GPU lease of issue 16 (about 8 minutes): the synthesis bundle's GPU configuration (128 px) trained on hc18's
# training images for TRAIN_SECONDS, then NUM_SAMPLES DDIM samples drawn and brought back as a split tar archive
# (a lease returns at most 8 files of 16 MiB), which a CPU machine unpacks and builds the 1k-3k transfer sets from:
#   cat samples.tar.part_* | tar x -C runs/synthesis_gpu/hc18
#   tskd study synthetic --values 1000 2000 3000 --synthesis-samples runs/synthesis_gpu/hc18/samples ...
#
# Usage (the device machine has torch and timm; monai, ignite, diffusers, segment-anything travel as wheels in .whl/,
# hc18 as .gpu/data/hc18, both ignored by git and named in the call's carry):
#   OUT=<out folder> bash benchmarks/synthesis_gpu.sh
set -uo pipefail
OUT=${OUT:?set OUT to the folder that comes back}
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/env.txt"
python3 -c "import torch, monai, diffusers; print('torch', torch.__version__, 'monai', monai.__version__, 'diffusers', diffusers.__version__)" | tee -a "$OUT/env.txt"
WORK=/tmp/synthesis_gpu
timeout "${LIMIT:-490}" python3 benchmarks/synthesis_gpu.py --dataset-dir "${DATASET:-.gpu/data/hc18}" --out "$WORK" \
    --train-seconds "${TRAIN_SECONDS:-280}" --samples "${NUM_SAMPLES:-2860}" --sample-batch-size 220 --num-workers 6 \
    > "$OUT/synthesis_gpu.log" 2>&1
echo "synthesis_gpu rc $?"
grep -v -E "INFO|DDIM sampling|Epoch \[" "$OUT/synthesis_gpu.log" | tail -40
cp "$WORK/synthesis_gpu.json" "$OUT/" 2>/dev/null
# whatever was drawn comes back, finished or not (samples.started.json then says how far it got)
(cd "$WORK" && tar cf - samples run/model/unet/config.json run/model/scheduler) | split -b 15000000 - "$OUT/samples.tar.part_"
ls -la "$OUT"
