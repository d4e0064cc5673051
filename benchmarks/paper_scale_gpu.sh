#!/usr/bin/env bash
# Time the TS-KD pipeline at --scale paper (SAM vit_b architecture, 256 px) on a GPU machine, on the HC18 sample
# (20 labels, 24 real + 16 synthetic transfer images): the same stages as `tskd pipeline --scale paper`.
#
# No SAM weights reach our machines: the checkpoint is segment-anything's own vit_b with *random* weights, saved
# with the official state-dict keys, so the official-checkpoint path runs (position-table adaptation, LoRA on the
# frozen encoder); the Dice it reaches says nothing about TS-KD. Scratch and the TS-KD chain share no stage, so
# they run as two processes on the one GPU (stage times are measured under that sharing).
#
# Each process loads data with WORKERS loader processes and THREADS torch threads (the first lease found the step
# host-bound with the bundles' in-process loading); --verbose streams every stage's log (per-epoch times) into
# <method>.log. Writes scratch.log, ts_kd.log and stages.json (device, settings, wall and per-stage seconds) to OUT.
#
# Usage: OUT=<folder> TIME_LIMIT=<seconds> [WORKERS=4] [THREADS=4] bash benchmarks/paper_scale_gpu.sh
set -uo pipefail
OUT=${OUT:-runs/paper_scale_gpu}
RUN=${RUN:-/tmp/paper_scale_run}
LIMIT=${TIME_LIMIT:-540}
WORKERS=${WORKERS:-4}
THREADS=${THREADS:-4}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 - <<'PY'
import torch
from segment_anything import sam_model_registry
torch.manual_seed(0)
torch.save(sam_model_registry["vit_b"]().state_dict(), "/tmp/sam_vit_b_random_official_keys.pth")
PY
common=(--datasets sample_data/hc18 --num-labeled 20 --seeds 0 --scale paper --run-dir "$RUN"
        --sam-checkpoint /tmp/sam_vit_b_random_official_keys.pth --num-workers "$WORKERS" --threads "$THREADS" --verbose)
start=$(date +%s)
timeout "$LIMIT" python3 -m tskd_components experiment "${common[@]}" --methods scratch > "$OUT/scratch.log" 2>&1 &
timeout "$LIMIT" python3 -m tskd_components experiment "${common[@]}" --methods ts_kd --transfer-size 40 > "$OUT/ts_kd.log" 2>&1
wait
python3 - "$RUN" "$OUT" "$(( $(date +%s) - start ))" "$WORKERS" "$THREADS" <<'PY'
import json, sys
from pathlib import Path
import torch
run, out = Path(sys.argv[1]), Path(sys.argv[2])
stages = [json.loads(p.read_text()) for p in sorted(run.rglob("stage.json"))]
rows = [{"stage": s["name"], "seconds": s["seconds"], "cpu_seconds": s.get("cpu_seconds")} for s in stages]
results = [json.loads(p.read_text()) for p in run.rglob("result.json")]
summary = {"device": f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}", "wall_seconds": int(sys.argv[3]),
           "num_workers": int(sys.argv[4]), "threads": int(sys.argv[5]), "stages": rows, "results": results}
json.dump(summary, open(out / "stages.json", "w"), indent=1)
print(f"{summary['device']}: wall {summary['wall_seconds']} s")
for r in rows:
    print(f"{r['stage']}: {r['seconds']} s")
PY
grep -h "^\[" "$OUT"/*.log
