#!/usr/bin/env bash
# All GPU checks in one run, for a GPU machine lent for a few minutes (README, Performance).
#
#   benchmarks/gpu_check.sh [OUT_DIR]
#
# OUT_DIR receives the logs and JSON tables (bench/results by default). The seed loop peer is
# benchmarks/seed_loop.py. Uses the python3 that holds a CUDA PyTorch and Accelerate.
# Sized for one 10-minute call (about 9 minutes at most): on an H200 (2026-11-30) the training
# run took 16 s, the eager table about 4 min at 50 steps (the seed loop's batches of 1024 are
# most of it), the epoch pairs about 80 s. A step cut by its timeout gets SIGABRT, so with
# PYTHONFAULTHANDLER its log shows where it was.
set -uo pipefail
OUT=${1:-bench/results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 ACCEL_SIGNS_CACHE=/tmp/accel_signs_cache PYTHONFAULTHANDLER=1
launch=(python3 -m accelerate.commands.launch --num_processes 1 --num_machines 1 --dynamo_backend no)
status=0
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, accelerate; print('torch', torch.__version__, 'accelerate', accelerate.__version__)"
} 2>&1 | tee "$OUT/gpu-env.txt"

# 1. The main job on the embedded set: bf16, clips on the device (auto), final evaluation.
timeout -s ABRT 60 "${launch[@]}" --mixed_precision bf16 -m accel_signs train --num-epochs 4 \
  --output-dir /tmp/gpu-runs 2>&1 | tee "$OUT/gpu-train.log" || status=1

# 2. Throughput beside the seed loop: eager, then compiled with CUDA graphs.
timeout -s ABRT 200 "${launch[@]}" --mixed_precision bf16 benchmarks/throughput.py \
  --sizes s_4_2,s_4_6 --batches 64,256,1024 --steps 30 --out "$OUT" 2>&1 | tee "$OUT/gpu-throughput.log" || status=1
# The compiled run printed nothing on the H200 (2026-11-30): batches 64 and 1024 not in 160 s,
# 1024 alone not in 250 s (cut while timing the streamed path). One batch size now, so that
# what it reaches is printed.
timeout -s ABRT 170 "${launch[@]}" --mixed_precision bf16 benchmarks/throughput.py \
  --sizes s_4_2 --batches 256 --steps 30 --compile --compile-mode reduce-overhead --out "$OUT" 2>&1 \
  | tee "$OUT/gpu-throughput-compiled.log" || status=1

# 3. Whole epochs: `accel-signs train` beside the seed loop, alternating (the ratio of one run).
timeout -s ABRT 100 "${launch[@]}" --mixed_precision bf16 benchmarks/throughput.py --epoch --repeats 2 --out "$OUT" 2>&1 \
  | tee "$OUT/gpu-throughput-epoch.log" || status=1
exit $status
