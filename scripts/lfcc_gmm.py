"""The ASVspoof LFCC-GMM baseline countermeasure, scoring into this project's score files and
reports, so every comparison has the field's reference beside the model.

Definition (ASVspoof 2019 evaluation plan, baseline B2; Sahidullah, Kinnunen & Hanilci, "A
comparison of features for synthetic speech detection", Interspeech 2015; Todisco et al.,
"ASVspoof 2019: future horizons...", Interspeech 2019):

- **LFCC**: 16 kHz audio, 20 ms Hamming frames every 10 ms, 512-point FFT power spectrum, 20
  triangular filters linearly spaced from 0 to 8 kHz, log, DCT-II -> 20 coefficients (c0
  included), with deltas and double deltas (+-2 frames) -> 60 per frame. The whole utterance is
  used (no fixed window).
- **GMM**: one diagonal-covariance GMM per class (bonafide, spoof) trained by EM on the frames of
  that class's training utterances; 512 components in the official recipe. With little data the
  default (``--components auto``) takes ``min(512, 2**floor(log2(frames / 100)))`` per class, so
  each component sees about 100 frames or more.
- **Score** of an utterance: mean over its frames of ``log p(x | bonafide) - log p(x | spoof)``
  (higher = more bonafide, the ASVspoof convention).

Commands::

    python scripts/lfcc_gmm.py train --data data/features/train --out runs/lfcc_gmm
    python scripts/lfcc_gmm.py score --model runs/lfcc_gmm --data data/features/eval

``train`` fits the two GMMs on the training part (an 80/20 split of ``--data``, or all of it with
``--val-data``), calibrates a decision threshold on the validation part and saves the model as
``gmm.npz`` (plain arrays, no pickle). ``score`` writes the same report files as evaluate.py
(``scores.txt``, ``metrics.json``, ...) to ``<model>/eval/<data folder name>/``. Audio is read
from the preprocessed folders' ``manifest.csv`` (column ``audio``).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake_detector import datasets  # noqa: E402
from deepfake_detector.cli import HelpFormatter  # noqa: E402
from deepfake_detector import features  # noqa: E402
from deepfake_detector.evaluation import breakdown, metrics  # noqa: E402
from deepfake_detector import protocols  # noqa: E402
from deepfake_detector.evaluation import report  # noqa: E402
from deepfake_detector import runs  # noqa: E402
from deepfake_detector.atomic import atomic_output, write_json_atomic  # noqa: E402

# -----------------------------------------------------------------------------
SR = 16000
WIN, HOP, N_FFT = 320, 160, 512  # 20 ms frames every 10 ms
N_FILTERS, N_COEFS, DELTA_WIDTH = 20, 20, 5  # deltas over +-2 frames
MAX_COMPONENTS, FRAMES_PER_COMPONENT = 512, 100
MAX_ITER = 100
# -----------------------------------------------------------------------------


def linear_filterbank(sr=SR, n_fft=N_FFT, n_filters=N_FILTERS):
    """Triangular filters with centres linearly spaced from 0 to sr/2, shape
    (n_filters, 1 + n_fft // 2)."""
    freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    edges = np.linspace(0, sr / 2, n_filters + 2)
    fb = np.zeros((n_filters, freqs.size))
    for i in range(n_filters):
        lo, mid, hi = edges[i:i + 3]
        fb[i] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    return fb


def lfcc(y, sr=SR):
    """LFCC with deltas and double deltas of a mono waveform.

    Parameters
    ----------
    y : np.ndarray, shape (n,)
        16 kHz audio.

    Returns
    -------
    x : np.ndarray, shape (n_frames, 60), float64
    """
    import librosa
    from scipy.fft import dct

    spec = np.abs(librosa.stft(np.asarray(y, np.float64), n_fft=N_FFT, hop_length=HOP,
                               win_length=WIN, window="hamming", center=True)) ** 2
    energies = linear_filterbank(sr) @ spec
    c = dct(np.log(energies + 1e-10), type=2, axis=0, norm="ortho")[:N_COEFS]
    d1 = librosa.feature.delta(c, width=DELTA_WIDTH, order=1, mode="nearest")
    d2 = librosa.feature.delta(c, width=DELTA_WIDTH, order=2, mode="nearest")
    return np.concatenate([c, d1, d2]).T


def utterance_features(df, progress=False):
    """LFCC of every utterance of a manifest (column ``audio``), in order."""
    from tqdm import tqdm

    if "audio" not in df.columns:
        raise ValueError("the manifest has no 'audio' column: run preprocess.py on it again")
    return [lfcc(features.load_audio(a, SR)) for a in tqdm(
        df["audio"], desc="LFCC", unit="file", disable=not progress)]


def n_components(n_frames, spec="auto"):
    """GMM size: ``spec`` as a number, or for ``auto`` min(512, 2**floor(log2(frames/100)))."""
    if spec != "auto":
        return int(spec)
    return int(min(MAX_COMPONENTS, 2 ** max(0, int(np.log2(max(n_frames, 1)
                                                           / FRAMES_PER_COMPONENT)))))


def fit_gmms(feats, targets, components="auto", seed=0):
    """One diagonal GMM per class.

    Returns
    -------
    gmms : dict {"bonafide": GaussianMixture, "spoof": GaussianMixture}
    """
    from sklearn.mixture import GaussianMixture

    gmms = {}
    for label, t in (("bonafide", 0), ("spoof", 1)):
        frames = [f for f, y in zip(feats, targets) if y == t]
        if not frames:
            raise ValueError(f"no {label} training utterance")
        x = np.concatenate(frames)
        k = n_components(len(x), components)
        gmms[label] = GaussianMixture(k, covariance_type="diag", max_iter=MAX_ITER,
                                      random_state=seed, reg_covar=1e-4).fit(x)
    return gmms


def score(gmms, feats):
    """Mean per-frame log-likelihood ratio, bonafide vs spoof, of each utterance, shape (n,)."""
    return np.array([float(np.mean(gmms["bonafide"].score_samples(f)
                                   - gmms["spoof"].score_samples(f))) for f in feats])


def save(gmms, path, meta):
    """The two GMMs as plain arrays (no pickle) in ``path``, with ``meta`` as JSON text."""
    arrays = {f"{label}_{k}": getattr(g, f"{k}_") for label, g in gmms.items()
              for k in ("weights", "means", "covariances", "precisions_cholesky")}
    with atomic_output(path, suffix=".npz") as tmp:
        np.savez(tmp, meta=json.dumps(meta), **arrays)


def load(path):
    """The GMMs and metadata saved by `save`."""
    from sklearn.mixture import GaussianMixture

    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        gmms = {}
        for label in ("bonafide", "spoof"):
            g = GaussianMixture(len(z[f"{label}_weights"]), covariance_type="diag")
            for k in ("weights", "means", "covariances", "precisions_cholesky"):
                setattr(g, f"{k}_", z[f"{label}_{k}"])
            gmms[label] = g
    return gmms, meta


def train(data, out, val_data=None, val_fraction=datasets.VAL_FRACTION,
          seed=datasets.SEED, gmm_seed=None, components="auto", calibrate="eer",
          progress=True):
    """Fit the baseline on the training part, calibrate on the validation part, save
    ``<out>/gmm.npz`` and ``<out>/threshold.json``.

    Parameters
    ----------
    data, val_data : str or list of str
        Preprocessed folder(s) (`datasets.load_splits`).
    seed : int
        Seed of the 80/20 split; ``gmm_seed`` (default ``seed``) that of the GMMs' EM.

    Returns
    -------
    out : Path
    """
    out = Path(out)
    gmm_seed = seed if gmm_seed is None else gmm_seed
    train_df, val_df, feats = datasets.load_splits(data, val_data, val_fraction, seed)
    gmms = fit_gmms(utterance_features(train_df, progress), train_df["target"], components,
                    gmm_seed)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model": "lfcc_gmm", "features": feats, "components": {
        k: int(g.n_components) for k, g in gmms.items()}, "seed": gmm_seed, "split_seed": seed,
        "data": datasets.as_folders(data)}
    save(gmms, out / "gmm.npz", meta)
    s = score(gmms, utterance_features(val_df, progress))
    y = val_df["target"].to_numpy()
    if calibrate != "none" and len(set(y)) == 2:
        cal = metrics.calibrate_threshold(y, s, calibrate)
        cal["validation"] = {"at_0.5": metrics.binary_metrics(y, metrics.sigmoid(-s), 0.5),
                             "calibrated": metrics.classification_metrics(
                                 y, s < cal["score_threshold"])}
        write_json_atomic(out / "threshold.json", {"best": cal, "final": cal})
    return out


def scores(model_dir, data, cache=None, progress=False):
    """Score a preprocessed folder.

    Parameters
    ----------
    cache : dict, optional
        LFCC of folders scored before (folder -> list of arrays), filled as it goes: several
        models scoring one folder extract its features once.

    Returns
    -------
    table, source :
        As `report.scores_from_model` returns them.
    """
    gmms, meta = load(Path(model_dir) / "gmm.npz")
    df = datasets.load_manifest(data)
    features.check_features(meta["features"], datasets.load_features_json(data),
                            Path(model_dir) / "gmm.npz", data)
    cache = {} if cache is None else cache
    key = str(Path(data).resolve())
    if key not in cache:
        cache[key] = utterance_features(df, progress)
    table = breakdown.score_table(df, -score(gmms, cache[key]))
    source = {"mode": "model", "run": str(model_dir), "model": "gmm.npz",
              "data": str(Path(data)), "heldout": False}
    return table, source


def evaluate(model_dir, data, out=None, asv_scores=None, threshold=None, progress=True):
    """Score a preprocessed folder and write the report (evaluate.py's files and metrics)."""
    table, source = scores(model_dir, data, progress=progress)
    name = Path(data).resolve().name
    asv = protocols.read_asv_scores(asv_scores) if asv_scores else None
    return report.write_report(table, source, out or Path(model_dir) / "eval" / name, name,
                               threshold, asv, runs.read_threshold(model_dir), plots=False)


def build_parser():
    """The command line of lfcc_gmm.py."""
    ap = argparse.ArgumentParser(description="LFCC-GMM baseline (ASVspoof 2019): train, or "
                                             "score a preprocessed folder into a report.",
                                 formatter_class=HelpFormatter)
    ap.add_argument("command", choices=("train", "score"), metavar="COMMAND",
                    help="'train' a model, or 'score' a preprocessed folder with one")
    ap.add_argument("--data", action="append", help="preprocessed folder(s): training data "
                                                    "(train, repeatable) or the folder to score")
    ap.add_argument("--val-data", action="append",
                    help="train: validation folder(s) instead of an 80/20 split")
    ap.add_argument("--out", help="train: model folder; score: report folder (default "
                                  "<model>/eval/<data name>)")
    ap.add_argument("--model", help="score: the model folder written by train")
    ap.add_argument("--components", default="auto",
                    help="GMM components per class: a number (official: 512) or 'auto'")
    ap.add_argument("--seed", type=int, default=datasets.SEED,
                    help="seed of the split and of the GMMs' initialization")
    ap.add_argument("--asv-scores", help="score: ASV score file, for the min t-DCF")
    return ap


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    if not args.data:
        ap.error("--data is required")
    try:
        if args.command == "train":
            if not args.out:
                ap.error("train needs --out")
            out = train(args.data, args.out, args.val_data, seed=args.seed,
                        components=args.components)
            print(f"written: {out / 'gmm.npz'}")
            return out
        if not args.model:
            ap.error("score needs --model")
        m = evaluate(args.model, args.data[0], args.out, args.asv_scores)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"EER {m['eer']:.2%} on {args.data[0]} ({m['n']['total']} utterances); written to "
          f"{m['out_dir']}")
    return m


if __name__ == "__main__":
    main()
