#!/usr/bin/env bash
# Multi-node training on SLURM with `accelerate launch` (torch.distributed underneath; no
# home-made launcher). One task per node; each task starts one process per GPU. Preemptible:
# 3 minutes before the time limit (or when SLURM preempts the job) every rank gets SIGUSR1,
# saves the state at the next step, inside the epoch, writes $RUN/stopped.json and exits with
# code 75; the job then requeues itself and the next start resumes from that step
# (docs/training.md, "Preemption"). The decision reads stopped.json, not the launcher's exit
# code: `accelerate launch` returns 1 after a clean stop up to Accelerate 1.15, 128 + the signal
# from 1.16.
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
#SBATCH --signal=USR1@180
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail
STORE=${1:?usage: sbatch slurm_multinode.sh STORE_DIR OUTPUT_DIR}
OUT=${2:?usage: sbatch slurm_multinode.sh STORE_DIR OUTPUT_DIR}
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}
MAIN_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PORT=${MAIN_PORT:-29500}
export OMP_NUM_THREADS=$(( SLURM_CPUS_PER_TASK / GPUS_PER_NODE ))
# A requeued job keeps its id: the run folder is found again, and continued.
RUN="$OUT/slurm-$SLURM_JOB_ID"
if [ -f "$RUN/state/trainer.json" ] || [ -f "$RUN/state.old/trainer.json" ]; then
  TRAIN="--resume $RUN"
else
  TRAIN="--data $STORE --output-dir $OUT --run-name slurm-$SLURM_JOB_ID --num-epochs 50"
fi

# Single quotes: $SLURM_NODEID must expand on each node, not here. SLURM's --signal reaches
# every process of the step: the ranks note SIGUSR1 and save; the launcher must not die of it
# (its default), so it ignores it (`trap ""` is inherited; the ranks set their own handler).
status=0
srun --kill-on-bad-exit=1 bash -c '
trap "" USR1
exec accelerate launch \
  --config_file accelerate_configs/multi_node.yaml \
  --num_machines "$SLURM_NNODES" \
  --machine_rank "$SLURM_NODEID" \
  --num_processes $(( SLURM_NNODES * '"$GPUS_PER_NODE"' )) \
  --main_process_ip '"$MAIN_HOST"' \
  --main_process_port '"$MAIN_PORT"' \
  -m accel_signs train '"$TRAIN"'
' || status=$?

# A run stopped by a signal with its state saved leaves stopped.json (why, where, the resume
# command): back into the queue. Anything else (a crash, a bad option) fails the job.
if [ "$status" -ne 0 ] && [ -f "$RUN/stopped.json" ]; then
  echo "stopped by a signal with its state saved: requeueing job $SLURM_JOB_ID"
  cat "$RUN/stopped.json"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
exit "$status"
