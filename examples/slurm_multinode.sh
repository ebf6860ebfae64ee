#!/usr/bin/env bash
# Multi-node training on SLURM with `accelerate launch` (torch.distributed underneath; no
# home-made launcher). One task per node; each task starts one process per GPU.
#
#   sbatch examples/slurm_multinode.sh /shared/karsl502_store /shared/runs
#
# The store and the output folder must be on a file system every node sees.
#SBATCH --job-name=accel_signs
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=04:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail
STORE=${1:?usage: sbatch slurm_multinode.sh STORE_DIR OUTPUT_DIR}
OUT=${2:?usage: sbatch slurm_multinode.sh STORE_DIR OUTPUT_DIR}
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}
MAIN_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PORT=${MAIN_PORT:-29500}
export OMP_NUM_THREADS=$(( SLURM_CPUS_PER_TASK / GPUS_PER_NODE ))

# Single quotes: $SLURM_NODEID must expand on each node, not here.
srun --kill-on-bad-exit=1 bash -c '
accelerate launch \
  --config_file accelerate_configs/multi_node.yaml \
  --num_machines "$SLURM_NNODES" \
  --machine_rank "$SLURM_NODEID" \
  --num_processes $(( SLURM_NNODES * '"$GPUS_PER_NODE"' )) \
  --main_process_ip '"$MAIN_HOST"' \
  --main_process_port '"$MAIN_PORT"' \
  -m accel_signs train --data '"$STORE"' --output-dir '"$OUT"' --run-name "slurm-$SLURM_JOB_ID" --num-epochs 50
'
