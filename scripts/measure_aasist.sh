#!/usr/bin/env bash
# The imported AASIST checkpoints on the genuine audio this project can test with (docs/recipes.md,
# "AASIST: the official weights, imported"): mini ASVspoof 2019 LA dev, a channel-degraded copy of
# it, vocoded copies of its bonafide utterances (unseen vocoders) and WaveFake/LJSpeech.
# Usage: bash scripts/measure_aasist.sh [SHARED_DIR]   (default ../shared; needs its data/ and
# models/aasist/; writes data/aasist_eval/ and runs/aasist_*; prints one line per EER; a rerun
# reuses what exists)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${1:-../shared}"
MINI="$SHARED/data/asvspoof2019_la_mini/LA"
OUT=data/aasist_eval
WAVE=(--features waveform --clip-samples 64600)
export AASIST_WEIGHTS="$SHARED/models/aasist"
for c in AASIST AASIST-L AASIST-ASVspoof5; do
    [ -f "runs/aasist_$c/best.keras" ] || python scripts/import_aasist.py "$c" --run "runs/aasist_$c"
done
python preprocess.py --dataset-root "$MINI" --split dev "${WAVE[@]}" --out "$OUT/mini_dev"
python scripts/degrade_audio.py --dataset-root "$MINI" --split dev --out "$OUT/degraded_audio"
python preprocess.py --protocol "$OUT/degraded_audio/labels.csv" \
    --audio-dir "$OUT/degraded_audio/flac" "${WAVE[@]}" --out "$OUT/mini_dev_degraded"
python scripts/make_vocoded_spoofs.py --manifest "$OUT/mini_dev" --out "$OUT/vocoded_audio"
# the 350 vocoded copies with the 50 bonafide originals: only the vocoders tell them apart
python - "$OUT" <<'PY'
import sys, pandas as pd
out = sys.argv[1]
m = pd.read_csv(f"{out}/mini_dev/manifest.csv")
bona = m[m.label == "bonafide"].assign(file=lambda d: d.audio)[["file", "label", "attack", "speaker"]]
voc = pd.read_csv(f"{out}/vocoded_audio/labels.csv")
voc["file"] = [f"{out}/vocoded_audio/{f}" for f in voc.file]
pd.concat([bona, voc]).to_csv(f"{out}/vocoded.csv", index=False)
PY
python preprocess.py --protocol "$OUT/vocoded.csv" --audio-dir . "${WAVE[@]}" --out "$OUT/vocoded"
python preprocess.py --protocol "$SHARED/data/wavefake_ljspeech/labels.csv" \
    --audio-dir "$SHARED/data/wavefake_ljspeech" "${WAVE[@]}" --out "$OUT/wavefake"
for c in AASIST AASIST-L AASIST-ASVspoof5; do
    for d in wavefake vocoded mini_dev_degraded mini_dev; do
        m="runs/aasist_$c/eval/$d/metrics.json"
        [ -f "$m" ] || python evaluate.py --run "runs/aasist_$c" --data "$OUT/$d" --name "$d" \
            --no-plots > /dev/null
        python -c "import json, sys; m = json.load(open(sys.argv[1])); p = m['operating_points']['0.5']
print(f\"$c $d: n {m['n']['total']}, EER {m['eer']:.2%}; at P(spoof) 0.5: bonafide accepted \"
      f\"{p['bonafide_recall']:.0%}, spoofs caught {p['recall']:.0%}\")" "$m"
    done
done
