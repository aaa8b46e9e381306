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
# Pre-emption: SLURM sends SIGTERM 5 minutes before the time limit; every process
# stops after the same step, the checkpoint is saved, and the requeued job resumes
# from it (the same command resumes). Data: TFDS imagenet2012 prepared once as
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
srun --kill-on-bad-exit=1 python launch.py --experiment imagenet_fanet_tiny \
  --workdir "$WORKDIR" --set data_dir="$DATA_DIR" worker_count=10
