#!/usr/bin/env bash
# The robust recipes (docs/recipes.md, "Robustness: more synthesizers, RawBoost, codecs"): spoofs
# from the Debian synthesizers (three engines to train on, two kept unseen), RawBoost + codec and
# channel views of every training utterance, and the Whisper recipes trained with them, 3 seeds,
# judged out of domain first (WaveFake, the channel-degraded copy of mini dev, unseen
# synthesizers) and on mini dev; the imported AASIST-L with a frozen encoder and its back end
# fine-tuned; the calibrated fusions. About 3.5 hours on 2 cores from nothing.
# Usage: bash scripts/measure_robust.sh [SHARED_DIR]   (default ../shared; needs espeak-ng,
# festival, festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts and flite; runs
# scripts/measure_whisper.sh first; writes data/tts/, data/augmented/, data/whisper_train/,
# data/aasist_eval/unseen_tts and runs/compare_whisper/; a rerun reuses what exists)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${1:-../shared}"
S="$SHARED/data"
MINI="$S/asvspoof2019_la_mini/LA"
TEST=data/aasist_eval
TRAIN=data/whisper_train
WAVE=(--features waveform --clip-samples 64600)
bash scripts/measure_whisper.sh "$SHARED"
# synthesizer spoofs: three engines to train on, two unseen (other texts: another seed)
python scripts/make_tts_spoofs.py --engines espeak-ng,festival-diphone,flite-diphone \
    --per-engine 60 --seed 0 --out data/tts/train
python scripts/make_tts_spoofs.py --engines festival-hts,flite-clustergen --per-engine 60 \
    --seed 1 --out data/tts/unseen
# the unseen-synthesizer test: the 50 bonafide utterances of mini dev and the 120 unseen spoofs
python - "$MINI" <<'PY'
import sys
from pathlib import Path
import pandas as pd
mini = Path(sys.argv[1])
p = pd.read_csv(mini / "ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.dev.trl.txt", sep=" ",
                header=None, names=["speaker", "utt", "x", "attack", "label"])
b = p[p.label == "bonafide"]
rows = pd.DataFrame({"file": [str(mini / "ASVspoof2019_LA_dev/flac" / f"{u}.flac") for u in b.utt],
                     "label": "bonafide", "attack": "-", "speaker": list(b.speaker)})
t = pd.read_csv("data/tts/unseen/labels.csv")
t["file"] = "data/tts/unseen/flac/" + t["file"]
pd.concat([rows, t]).to_csv("data/tts/unseen_test.csv", index=False)
PY
python preprocess.py --protocol data/tts/unseen_test.csv --audio-dir . "${WAVE[@]}" \
    --out "$TEST/unseen_tts"
python preprocess.py --protocol data/tts/train/labels.csv --audio-dir data/tts/train/flac \
    "${WAVE[@]}" --out "$TRAIN/tts_train"
# two RawBoost (LnL + ISD) + random codec/packet-loss/room views of every training utterance
V=(--chain rawboost,channel --views 2)
python scripts/degrade_audio.py --dataset-root "$MINI" --split train "${V[@]}" \
    --out data/augmented/mini_train
python scripts/degrade_audio.py --protocol "$S/asvspoof2019_la_bonafide_extra/labels.csv" \
    --audio-dir "$S/asvspoof2019_la_bonafide_extra" "${V[@]}" --out data/augmented/mini_extra
python scripts/degrade_audio.py --protocol data/vocoded/mini/labels.csv \
    --audio-dir data/vocoded/mini "${V[@]}" --out data/augmented/mini_vocoded
python scripts/degrade_audio.py --protocol data/tts/train/labels.csv \
    --audio-dir data/tts/train/flac "${V[@]}" --out data/augmented/tts_train
for d in mini_train mini_extra mini_vocoded tts_train; do
    python preprocess.py --protocol "data/augmented/$d/labels.csv" \
        --audio-dir "data/augmented/$d/flac" "${WAVE[@]}" --out "$TRAIN/aug_$d"
done
AUG=()
for d in mini_train mini_extra mini_vocoded tts_train; do AUG+=(--augmented-data "$TRAIN/aug_$d"); done
W=(--data "$TRAIN/mini_train" --data "$TRAIN/mini_extra" --vocoded-data "$TRAIN/mini_vocoded"
   --tts-data "$TRAIN/tts_train" "${AUG[@]}" --test "$TEST/wavefake"
   --test "$TEST/mini_dev_degraded" --test "$TEST/unseen_tts" --test "$TEST/vocoded"
   --test "$TEST/mini_dev" --preset models/whisper_tiny_en --out runs/compare_whisper)
# one seed of whisper_tts_ft (a probe), then the 3-seed table
python scripts/compare_recipes.py "${W[@]}" --recipes whisper_tts_ft --seeds 1
python scripts/compare_recipes.py "${W[@]}" --seeds 1,2,3 \
    --recipes whisper_vocoded,whisper_tts,whisper_robust,whisper_vocoded_ft,whisper_robust_ft
# the imported AASIST-L with its encoder frozen and cached, the graph back end fine-tuned
AASIST_WEIGHTS="$SHARED/models/aasist" python scripts/compare_recipes.py \
    --data "$TRAIN/mini_train" --data "$TRAIN/mini_extra" \
    --vocoded-data "$TRAIN/mini_vocoded" --tts-data "$TRAIN/tts_train" "${AUG[@]}" \
    --test "$TEST/wavefake" --test "$TEST/mini_dev_degraded" --test "$TEST/unseen_tts" \
    --test "$TEST/vocoded" --test "$TEST/mini_dev" \
    --recipes aasist_l_vocoded,aasist_l_robust --seeds 1,2,3 --out runs/compare_aasist
# the imported AASIST models, as published, on the unseen-synthesizer test
for c in AASIST AASIST-L; do
    [ -f "runs/aasist_$c/eval/unseen_tts/metrics.json" ] || \
        python evaluate.py --run "runs/aasist_$c" --data "$TEST/unseen_tts" --no-plots > /dev/null
    python -c "import json, sys; m = json.load(open(sys.argv[1]))
print(f\"$c, unseen_tts: n {m['n']['total']}, EER {m['eer']:.2%}\")" \
        "runs/aasist_$c/eval/unseen_tts/metrics.json"
done
# calibrated fusion of the two robust families: logistic-regression weights fitted on the
# channel-degraded copy of mini dev (both make errors there), applied to WaveFake (no utterance
# in common)
mkdir -p runs/fused_robust
for t in wavefake:wavefake mini_dev_degraded:degraded; do
    python -c "import sys, pandas as pd; m = pd.read_csv(sys.argv[1])
m.rename(columns={'path': 'file'})[['file', 'label', 'attack']].to_csv(sys.argv[2], index=False)" \
        "$TEST/${t%%:*}/manifest.csv" "runs/fused_robust/${t##*:}.labels.csv"
done
for pair in aasist_l_vocoded:whisper_vocoded_ft aasist_l_robust:whisper_robust_ft; do
    for seed in 1 2 3; do
        a="runs/compare_aasist/${pair%%:*}/seed$seed"
        w="runs/compare_whisper/${pair##*:}/seed$seed"
        out="runs/fused_robust/${pair%%:*}+${pair##*:}/seed$seed"
        [ -f "$out/wavefake/metrics.json" ] || {
            python scripts/fuse_scores.py --dev "$a/eval/mini_dev_degraded_calibrated" \
                "$w/eval/mini_dev_degraded_calibrated" \
                --dev-protocol runs/fused_robust/degraded.labels.csv \
                --apply "$a/eval/wavefake_calibrated" "$w/eval/wavefake_calibrated" \
                --out "$out/wavefake.txt" > /dev/null
            python evaluate.py --scores "$out/wavefake.txt" \
                --protocol runs/fused_robust/wavefake.labels.csv --out "$out/wavefake" \
                --no-plots > /dev/null
        }
        python -c "import json, sys; m = json.load(open(sys.argv[1]))
print(f\"fused $pair seed $seed, wavefake: EER {m['eer']:.2%}\")" "$out/wavefake/metrics.json"
    done
done
