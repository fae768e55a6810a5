#!/usr/bin/env bash
# Writes tests/golden/tiny_charlm.safetensors, the small charlm checkpoint the
# C interface's tests load (a 1-layer, 16-wide model trained for 100 steps on
# the bundled text). Run from the repository root after a build:
#   tests/golden/make_tiny_charlm.sh [BUILD_DIR]
# Regenerate it when the checkpoint format changes.
set -euo pipefail
build=${1:-build}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$build/examples/charlm" train --steps 100 --batch 16 --block 16 --layers 1 --heads 2 --embd 16 --dropout 0 \
  --warmup 10 --lr 1e-2 --eval-every 100 --threads 1 --sample-chars 0 --out "$out/run"
cp "$out/run/checkpoint.safetensors" tests/golden/tiny_charlm.safetensors
