#!/usr/bin/env bash
# One PROD pre-training chunk on a lent GPU machine, as one command (bench/chunks/README.md).
#
#   bash bench/gpu_chunk.sh OUTDIR NAME START_FILE PRETRAIN_ARGS...
#
# Continues START_FILE (a colora backbone .safetensors) with `colora backbone pretrain
# PRETRAIN_ARGS --init-from START --name NAME` in a throwaway store, then exports NAME's weights
# (no optimizer state) and its details to OUTDIR. Wheels in .whl/ (packages the machine lacks)
# are installed first into /tmp/site. Example, on a GPU with 16 cores:
#
#   bash bench/gpu_chunk.sh "$OUT" prod-medium-c3 core/weights/prod-medium.safetensors \
#       .gpudata/clean --minutes 6 --device cuda --workers 14 --batch-size 32 --patch-size 128 --lr 1e-3
set -euo pipefail
out=$1 name=$2 start=$3
shift 3
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 COLORA_HOME="$(mktemp -d)"
colora() { python3 -m colora_cli "$@"; }
mkdir -p "$out"
{
    date -u
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
    colora init --random-init --config tiny
    colora backbone import "$start" --name chunk-start
    colora backbone pretrain "$@" --init-from chunk-start --name "$name"
    colora backbone export "$name" "$out/$name.safetensors"
    colora backbone show "$name" --json > "$out/$name.json"
    date -u
} 2>&1 | tee "$out/log.txt"
