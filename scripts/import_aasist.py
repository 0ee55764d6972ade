"""Import an official AASIST checkpoint into a run folder that every script accepts.

    python scripts/import_aasist.py AASIST --run runs/aasist            # the official weights
    python scripts/import_aasist.py AASIST --run runs/aasist --calibrate-on data/features/dev64600
    python predict.py --run runs/aasist call.wav

SOURCE is a local ``.pth`` (its ``.conf`` beside it or ``--conf``) or one of the names AASIST,
AASIST-L, AASIST-ASVspoof5 (found in ``$AASIST_WEIGHTS`` or the cache, else downloaded from the
official repository at a pinned commit, sha256-checked). The ``.pth`` is read without PyTorch by
a reader that refuses anything but tensors (`deepfake_detector.weights.pth`).

The run folder gets ``best.keras`` (the Keras port with the weights and the feature parameters
inside: mono 16 kHz waveform, the first 64,600 samples, tiled when shorter, the official input),
``config.json`` (where the weights came from: source, sha256, licence; for the ASVspoof 2019
checkpoints the measured caveat every verdict then carries, `CAVEATS`) and ``threshold.json``:
P(spoof) >= 0.5, the official model's own decision (its softmax argmax), unless
``--calibrate-on`` chooses the EER threshold on a labelled preprocessed folder of yours
(``preprocess.py --features waveform --clip-samples 64600``), which the run then also reports
as its held-out part.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake_detector.weights import checkpoints, pth  # noqa: E402
from deepfake_detector import features, runs  # noqa: E402
from deepfake_detector.evaluation import report  # noqa: E402
from deepfake_detector import models as M  # noqa: E402
from deepfake_detector.atomic import write_json_atomic  # noqa: E402
from deepfake_detector.cli import HelpFormatter  # noqa: E402
from deepfake_detector.models import aasist  # noqa: E402

# -----------------------------------------------------------------------------
# what a user must read beside every verdict of a model trained on one corpus, as measured
# (README, docs/recipes.md): predict.py prints it, the page and /health show it
CAVEATS = {"ASVspoof 2019 LA train": (
    "trained on ASVspoof 2019 LA only (one studio's read English, 2019's synthesizers): on "
    "recordings from elsewhere it is often confidently wrong (41% EER on LJSpeech/WaveFake; "
    "71% of genuine recordings from other sources called spoof, with P(spoof) near 1; "
    "README), so its P(spoof) near 0 or 1 is no certainty outside ASVspoof")}
# -----------------------------------------------------------------------------


def import_run(source, run_dir, conf=None, calibrate_on=None, overwrite=False):
    """Write the run folder of an official checkpoint (module docstring).

    Returns
    -------
    run_dir : Path
    threshold : dict
        What ``threshold.json`` holds for ``best``.
    """
    run_dir = Path(run_dir)
    if (run_dir / "best.keras").exists() and not overwrite:
        raise FileExistsError(f"{run_dir} already holds a model; pass --overwrite")
    if calibrate_on is not None:  # checked before anything is written
        from deepfake_detector import datasets

        M.check_family_data("aasist", datasets.load_features_json(calibrate_on), calibrate_on)
        labels = set(datasets.load_manifest(calibrate_on)["label"])
        if len(labels) < 2:
            raise ValueError(f"--calibrate-on {calibrate_on} holds only {labels or 'no'} "
                             "utterances; a threshold needs both bonafide and spoof")
    model, config, info, _ = checkpoints.load_keras(source, conf)
    params = features.feature_params("window", "waveform", aasist.SAMPLES)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "threshold.json").unlink(missing_ok=True)  # never a stale one beside new weights
    weights = {**info, "imported": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    corpus = info.get("trained_on") or f"unknown (a checkpoint file: {Path(str(source)).name})"
    meta = {"features": params, "labels": runs.LABELS, "input": M.input_spec("aasist", params),
            "model": "aasist", "run": run_dir.name, "preset": config, "weights": weights,
            "trained_on": {"data": [{"folder": corpus, "utterances": None, "protocol": None,
                                     "synthetic_demo": False}], "synthetic_demo": False,
                           "caveat": CAVEATS.get(corpus)}}
    M.save_model_atomic(model, run_dir / "best.keras", meta)
    args = {"model": "aasist", "preset": config, "init": str(source), "data": None,
            "val_data": [str(Path(calibrate_on).resolve())] if calibrate_on else None}
    write_json_atomic(run_dir / "config.json", {
        "args": args, "features": params, "labels": runs.LABELS, "input": meta["input"],
        "weights": weights, "params": M.param_counts(model), "versions": runs.versions(),
        "command": " ".join(sys.argv), "created": weights["imported"]})
    if calibrate_on is not None:
        return run_dir, report.calibrate_run(run_dir, "eer")["best"]
    cal = {"method": "argmax", "threshold": 0.5, "score_threshold": 0.0, "model": "best.keras",
           "note": "the official model's own decision (softmax argmax); not calibrated on "
                   "your data: pass --calibrate-on FOLDER for that"}
    write_json_atomic(run_dir / "threshold.json", {"best": cal})
    return run_dir, cal


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("source", help="a .pth file, or AASIST, AASIST-L or AASIST-ASVspoof5 "
                                   "(found in $AASIST_WEIGHTS or the cache, else downloaded)")
    ap.add_argument("--run", required=True, help="run folder to write")
    ap.add_argument("--conf", help="the official .conf of a local .pth (default: the .conf "
                                   "beside it, else the AASIST configuration)")
    ap.add_argument("--calibrate-on", metavar="FOLDER",
                    help="choose the decision threshold at the EER point of this labelled "
                         "folder (preprocess.py --features waveform --clip-samples 64600); "
                         "default: 0.5, the official argmax")
    ap.add_argument("--overwrite", action="store_true", help="replace a model in --run")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        run_dir, cal = import_run(args.source, args.run, args.conf, args.calibrate_on,
                                  args.overwrite)
    except (pth.CheckpointError, checkpoints.ArchitectureMismatch,
            checkpoints.CheckpointUnavailable, features.FeatureMismatch, FileNotFoundError,
            FileExistsError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:  # --run under a file, no permission, a full disk
        raise SystemExit(f"error: {args.run}: cannot write the run ({e.strerror or e})") \
            from None
    how = ("calibrated at the EER point of " + args.calibrate_on if args.calibrate_on
           else "0.5, the official argmax")
    print(f"imported {args.source} into {run_dir}/ (threshold {cal['threshold']:.6g}: {how})")
    print(f"next: python predict.py --run {run_dir} RECORDING")
    return run_dir


if __name__ == "__main__":
    main()
