#!/usr/bin/env bash
# KArSL-502 from MediaPipe keypoints: prepare -> train on all GPUs of a machine -> evaluate.
#
#   bash examples/karsl502_recipe.sh /data/karsl502_npz /data/karsl502_store runs/karsl502
#
# The source is the seed project's npz tree: {signer}-{split}/{sign:04}.npz, one array of
# shape (frames, 184, 4) per video (signers 01 02 03, splits train test).
# Set NUM_GPUS (default: all visible). Needs a GPU machine; see accelerate_configs/.
set -euo pipefail
SRC=${1:?usage: karsl502_recipe.sh NPZ_ROOT STORE_DIR OUTPUT_DIR}
STORE=${2:?usage: karsl502_recipe.sh NPZ_ROOT STORE_DIR OUTPUT_DIR}
OUT=${3:-runs/karsl502}
NUM_GPUS=${NUM_GPUS:-$(python -c "import torch; print(torch.cuda.device_count())")}

# 1. Convert once (streams in bounded memory; float16 halves the disk and page-cache footprint).
if [ ! -e "$STORE/meta.json" ]; then
  accel-signs prepare "$SRC" "$STORE" --from npz --splits train,test --dtype float16
fi
accel-signs info "$STORE"

# 2. Signer-dependent protocol: all 502 signs, all signers, 20% of train held out for validation.
#    Batch 64 per GPU, lr 1e-3 x sqrt(NUM_GPUS), bf16, SyncBatchNorm, exact cross-GPU validation.
accelerate launch --config_file accelerate_configs/multi_gpu_bf16.yaml --num_processes "$NUM_GPUS" \
  -m accel_signs train --data "$STORE" --output-dir "$OUT" --run-name signer-dependent \
  --num-epochs 50 --model-size s_4_2 --batch-size 64

# 3. The best checkpoint on the test split, with every process evaluating its share.
accelerate launch --config_file accelerate_configs/multi_gpu_bf16.yaml --num_processes "$NUM_GPUS" \
  -m accel_signs evaluate "$OUT/signer-dependent/best" --split test
