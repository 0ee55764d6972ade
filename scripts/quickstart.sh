#!/usr/bin/env bash
# The whole pipeline on the synthetic demo corpus, offline:
#   make demo corpus -> preprocess train/dev -> train (80/20 of train) -> evaluate.
# Usage: bash scripts/quickstart.sh [WEIGHTS] [EPOCHS]
#   WEIGHTS: none (default, works offline), imagenet, or a path to efficientnetb0_notop.h5
set -euo pipefail
cd "$(dirname "$0")/.."
WEIGHTS="${1:-none}"
EPOCHS="${2:-10}"
python scripts/make_demo_corpus.py --out data/demo
python preprocess.py --dataset-root data/demo/LA --split train --out data/features/demo_train
python preprocess.py --dataset-root data/demo/LA --split dev --out data/features/demo_dev
python train.py --data data/features/demo_train --run runs/demo --overwrite \
    --weights "$WEIGHTS" --epochs "$EPOCHS"
python evaluate.py --run runs/demo                                  # held-out 20% of train
python evaluate.py --run runs/demo --data data/features/demo_dev    # unseen speakers
