#!/bin/bash
# The whole pipeline on Slurm: the seed (one small CPU job), an array of NUM_SHARDS shard tasks, then the push, which
# merges every shard and publishes nothing unless all of them are done. Extra arguments are config overrides.
#
#   bash configs/slurm/submit.sh configs/pipeline.example.yaml 64 [KEY=VALUE ...]
set -euo pipefail

CONFIG=${1:?usage: submit.sh CONFIG NUM_SHARDS [KEY=VALUE ...]}
NUM_SHARDS=${2:?give the shard count}
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
OVERRIDES=$(printf '%q ' "$@")
mkdir -p logs

seed=$(sbatch --parsable --job-name=mathgenie-seed --gpus=0 --cpus-per-task=4 --time=1:00:00 \
    --output=logs/%x-%j.out --wrap "mathgenie run $CONFIG $OVERRIDES --stages seed")
shards=$(sbatch --parsable --dependency=afterok:"$seed" --array=0-$((NUM_SHARDS - 1)) \
    "$HERE/mathgenie-array.sbatch" "$CONFIG" "$NUM_SHARDS" "$@")
push=$(sbatch --parsable --dependency=afterok:"$shards" --job-name=mathgenie-push --gpus=0 --cpus-per-task=4 \
    --time=2:00:00 --output=logs/%x-%j.out --wrap "mathgenie run $CONFIG $OVERRIDES --stages push")
echo "seed job $seed -> shard array $shards (0-$((NUM_SHARDS - 1))) -> push job $push"
