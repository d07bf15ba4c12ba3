#!/usr/bin/env bash
# Rebuilds tests/assets/tiny-voxtral exactly as it was made: five stages of
# training/train_tiny.py, each continuing from the last with fresh data; the last two add
# longer utterances and what real input paths do to audio (training/data.py, augment).
# About 2 hours on 2 CPU cores; needs espeak-ng (apt install espeak-ng).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's voxtral_mlx, installed or not
work=$(mktemp -d)
$py training/train_tiny.py --out "$work/stage1" --utterances 2500 --steps 2000 --batch 12 \
  --lr 2e-3 --seed 1234
$py training/train_tiny.py --init "$work/stage1" --out "$work/stage2" --utterances 3000 \
  --steps 3000 --batch 12 --lr 1e-3 --warmup 50 --seed 1235
$py training/train_tiny.py --init "$work/stage2" --out "$work/stage3" \
  --utterances 3000 --steps 2500 --batch 12 --lr 6e-4 --warmup 50 --seed 1236
$py training/train_tiny.py --init "$work/stage3" --out "$work/stage4" \
  --utterances 3500 --steps 4000 --batch 12 --lr 8e-4 --warmup 100 --seed 1237 \
  --augment 0.7 --max-words 8
$py training/train_tiny.py --init "$work/stage4" --out tests/assets/tiny-voxtral \
  --utterances 3500 --steps 2500 --batch 12 --lr 4e-4 --warmup 50 --seed 1238 \
  --augment 0.5 --max-words 8
rm -rf "$work"
