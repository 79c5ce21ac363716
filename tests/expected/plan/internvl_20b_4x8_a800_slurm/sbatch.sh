#!/bin/bash

# Parameters
#SBATCH --cpus-per-task=80
#SBATCH --exclusive
#SBATCH --gres=gpu:8
#SBATCH --job-name=vlm-internvl_20b
#SBATCH --mem=800G
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=<TMP>/run/submitit/%j_0_log.out
#SBATCH --signal=USR2@90

# setup
cd <TMP>/run/code
export PYTHONPATH=<TMP>/run/code${PYTHONPATH:+:$PYTHONPATH}
if [ "${SLURM_RESTART_COUNT:-0}" != 0 ]; then '/opt/vlm env/bin/python' -u -m launcher.node <TMP>/run --before-srun || exit $?; fi

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output <TMP>/run/submitit/%j_%t_log.out --kill-on-bad-exit=1 '/opt/vlm env/bin/python' -u -m submitit.core._submit <TMP>/run/submitit


# teardown
'/opt/vlm env/bin/python' -u -m launcher.node <TMP>/run --after-srun=$?