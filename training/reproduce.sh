#!/usr/bin/env bash
# Rebuilds tests/assets/tiny-voxtral exactly as it was made: three stages of
# training/train_tiny.py, each continuing from the last with fresh data and a lower rate.
# About an hour on 2 CPU cores; needs espeak-ng (apt install espeak-ng).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
$py training/train_tiny.py --out "$work/stage1" --utterances 2500 --steps 2000 --batch 12 \
  --lr 2e-3 --seed 1234
$py training/train_tiny.py --init "$work/stage1" --out "$work/stage2" --utterances 3000 \
  --steps 3000 --batch 12 --lr 1e-3 --warmup 50 --seed 1235
$py training/train_tiny.py --init "$work/stage2" --out tests/assets/tiny-voxtral \
  --utterances 3000 --steps 2500 --batch 12 --lr 6e-4 --warmup 50 --seed 1236
rm -rf "$work"
