#!/bin/bash
# FANet-tiny ImageNet-1K pretraining on 2 hosts x 8 GPUs = 16 GPUs (the paper's setup).
#
#   sbatch scripts/slurm_imagenet.sh                 # from the repository root
#   DATA_DIR=/data/tfds WORKDIR=/ckpt/fanet sbatch scripts/slurm_imagenet.sh
#
# One task (JAX process) per GPU; every task sees all GPUs of its node and JAX gives
# task SLURM_LOCALID its own GPU. The processes find each other from SLURM's
# environment (fanet_jax/distributed.py), form one mesh over the 16 GPUs and train
# at the recipe's global batch of 1280 (80 per GPU). Only process 0 writes logs;
# all write the Orbax checkpoints together.
# Pre-emption: SLURM sends SIGTERM 5 minutes before the time limit (--signal); every
# process stops after the same step, the checkpoint is saved, and each exits with 75
# (EX_TEMPFAIL, fanet_jax/stopping.py). This script then requeues the job with
# `scontrol requeue` (SLURM requeues by itself only after a node failure or a
# pre-emption by another job; --requeue permits both), and the requeued job's same
# command resumes from the checkpoint. Any other exit code (0: done, 1: a failure,
# 2: bad input) ends the job. srun returns the highest exit code of the tasks, or
# 128 + signal for a task killed by one, so --kill-on-bad-exit stays off: it would
# kill the tasks still exiting after the first 75 and turn 75 into 137. A task that
# dies is still not waited for forever: JAX's distributed runtime shuts the others
# down when one stops sending heartbeats (jax.distributed.initialize, 100 s). Data: TFDS imagenet2012 prepared once as
# array_record under DATA_DIR (python -m input_pipeline.imagenet prepare ...).
#SBATCH --job-name=fanet-imagenet
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --time=48:00:00
#SBATCH --signal=TERM@300
#SBATCH --requeue
#SBATCH --output=%x-%j.out
set -euo pipefail

DATA_DIR=${DATA_DIR:-data/tensorflow_datasets}
WORKDIR=${WORKDIR:-workdirs/imagenet_fanet_tiny}

# grain worker processes per task: leave a couple of the task's CPUs to JAX.
status=0
srun --kill-on-bad-exit=0 python launch.py --experiment imagenet_fanet_tiny \
  --workdir "$WORKDIR" --set data_dir="$DATA_DIR" worker_count=10 || status=$?
if [ "$status" -eq 75 ]; then
  echo "Stopped by SIGTERM with a checkpoint saved: requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
