#!/usr/bin/env bash
# Quickstart: synthetic data -> train -> evaluate -> plot, on a laptop CPU in a few minutes.
#
#   bash examples/quickstart.sh [OUT_DIR]
#
# EPOCHS and MODEL_SIZE override the defaults (CI runs it with EPOCHS=1 MODEL_SIZE=t_2_1).
# Under `accelerate launch` the same train/evaluate commands run on any number of GPUs.
set -euo pipefail
OUT=${1:-quickstart}
EPOCHS=${EPOCHS:-12}
MODEL_SIZE=${MODEL_SIZE:-s_4_2}

# 1. A KArSL-shaped data set: 10 signs x 3 signers, 8 train + 2 test clips each.
accel-signs synth "$OUT/data" --classes 10 --signers 3 --reps 8

# 2. Train. The last line printed is the best checkpoint's folder.
BEST=$(accel-signs train --data "$OUT/data" --output-dir "$OUT/runs" --run-name demo \
         --num-epochs "$EPOCHS" --model-size "$MODEL_SIZE" --no-eval | tail -n 1)
echo "best checkpoint: $BEST"

# 3. Evaluate it on the held-out test split: metrics.json, per_class.csv, confusion.csv, figures.
accel-signs evaluate "$BEST" --split test

# 4. Draw the training curves (and redraw the evaluation's figures) from the run's files.
accel-signs plot "$OUT/runs/demo"
ls "$OUT/runs/demo" "$OUT/runs/demo/eval-test"
