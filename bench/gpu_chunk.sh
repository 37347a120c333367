#!/usr/bin/env bash
# One PROD pre-training chunk on a lent GPU machine, as one command (bench/chunks/README.md).
#
#   bash bench/gpu_chunk.sh OUTDIR NAME START_FILE PRETRAIN_ARGS...
#
# Continues START_FILE (a colora backbone .safetensors) with `colora backbone pretrain
# PRETRAIN_ARGS --init-from START --name NAME` in a throwaway store, then writes NAME's weights
# (no optimizer state) to OUTDIR in 8 MiB parts with their sha256, its details and the log.
# Wheels in .whl/ (packages the machine lacks) are installed first into /tmp/site. Back here:
#   cat OUTDIR/NAME.safetensors.part-* > NAME.safetensors && sha256sum -c OUTDIR/NAME.sha256
# Example, on a GPU with 16 cores:
#
#   bash bench/gpu_chunk.sh "$OUT" prod-medium-c5 core/weights/prod-medium.safetensors \
#       .gpudata/bsds500_pool/clean .gpudata/sun80/clean --minutes 5 --device cuda --workers 14 \
#       --batch-size 32 --patch-size 128 --lr 1e-3 --clean-fraction 0.05
set -euo pipefail
out=$1 name=$2 start=$3
shift 3
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site"
fi
# colora itself, without its dependencies (the machine has torch; .whl brings what it lacks): the
# checkout alone is not importable as `colora` (setuptools maps its folders into that name)
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir -e .
export PYTHONUNBUFFERED=1 COLORA_HOME="$(mktemp -d)"
work="$(mktemp -d)"
colora() { python3 -m colora "$@"; }
mkdir -p "$out"
{
    date -u
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
    colora init --random-init --config tiny
    colora backbone import "$start" --name chunk-start
    colora backbone pretrain "$@" --init-from chunk-start --name "$name"
    colora backbone export "$name" "$work/$name.safetensors"
    colora backbone show "$name" --json > "$out/$name.json"
    # the device tool brings back files of at most 16 MiB: the weights come in 8 MiB parts
    (cd "$work" && sha256sum "$name.safetensors") > "$out/$name.sha256"
    split -b 8M "$work/$name.safetensors" "$out/$name.safetensors.part-"
    date -u
} 2>&1 | tee "$out/log.txt"
