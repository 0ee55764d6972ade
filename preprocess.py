"""Turn ASVspoof-style audio listed in a protocol file into normalized log-mel arrays.

Each utterance becomes one float32 array of shape (128, 128) -- (n_mels, n_frames) -- with values
in [0, 1], saved as ``<out>/<utterance_id>.npy``. With ``--features waveform`` (for ``train.py
--model whisper``, which computes its own log-mel) each array is instead the same ~4 s window of
16 kHz samples, int16, shape (64524,). Beside the arrays:

- ``features.json``: the feature parameters (features.py, the single source of truth; train.py
  copies them into every saved model and evaluate.py refuses data computed differently),
- ``manifest.csv``: utt_id, path, label, target, attack, speaker, split, audio (the source
  file, read again only by train.py's waveform augmentation), and the protocol's condition
  columns (codec, ...) when it has them,
- ``corpus.json``: the protocol and audio folder it was made from, and whether that is the
  synthetic demo corpus (every model trained on it records that and says so when it scores),
- ``errors.csv``: files that could not be turned into features and why,
- ``missing.txt``: protocol entries whose audio file is not on disk.

Examples
--------
ASVspoof 2019 LA as downloaded::

    python preprocess.py --dataset-root data/LA --split train --out data/features/train

Any protocol format (2019, 2021 LA/DF keys, ASVspoof 5 TSV, generic ``file,label`` CSV)::

    python preprocess.py --protocol keys/LA/CM/trial_metadata.txt \
        --audio-dir ASVspoof2021_LA_eval/flac --out data/features/la21_eval

Waveform windows for the Whisper family::

    python preprocess.py --split train --features waveform --out data/features/train_wave

Re-running resumes: finished arrays are kept. ``--overwrite`` recomputes everything.
"""

import argparse
import json
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from deepfake_detector import features as F
from deepfake_detector.cli import HelpFormatter
from deepfake_detector import protocols
from deepfake_detector.atomic import exclusive, save_npy_atomic, write_text_atomic

# -----------------------------------------------------------------------------
DEFAULT_DATASET_ROOT = "data/LA"
DEFAULT_FEATURES_DIR = "data/features"
MAX_SECONDS = 1800.0  # longest recording decoded (30 min), checked before decoding
# -----------------------------------------------------------------------------

class IncompleteOutput(OSError):
    """Arrays that could not be written for a reason of the machine's (a full disk, I/O)."""


_PARAMS = None  # (feature parameters, max seconds) of a pool worker, sent once by _init_worker


def _init_worker(params, max_seconds=MAX_SECONDS):
    """Pool initializer: the feature parameters and the decode budget, and one BLAS/OpenMP
    thread per worker process (no oversubscription)."""
    from threadpoolctl import threadpool_limits

    global _PARAMS
    _PARAMS = (params, max_seconds)
    threadpool_limits(1)


def process_file(task, params=None, max_seconds=MAX_SECONDS):
    """Worker: features of one file, written atomically. Never raises for bad audio, a file
    over the decode budget, or a failed allocation: those are the file's error.

    Parameters
    ----------
    task : tuple (utt_id, audio_path, out_path)
    params : dict, optional
        Feature parameters; default those given to `_init_worker` (with its ``max_seconds``).
    max_seconds : float
        Longest recording decoded (`features.load_audio`).

    Returns
    -------
    (utt_id, status, reason) : status is ``"written"``, ``"failed"`` (the file's fault: bad
        audio, too long, out of memory) or ``"io"`` (the machine's: a full disk, an I/O error)
    """
    utt_id, src, dst = task
    if params is None:
        params, max_seconds = _PARAMS
    try:
        y = F.load_audio(src, params["sample_rate"], max_seconds)
        # no fsync: an array cut short by a crash fails `features.array_ok` and is redone
        save_npy_atomic(dst, F.compute_features(y, params), fsync=False)
        return utt_id, "written", ""
    except (F.AudioError, ValueError, MemoryError) as e:
        return utt_id, "failed", str(e) or type(e).__name__
    except OSError as e:
        return utt_id, "io", str(e) or type(e).__name__


# ----------------------------------------------------------------------------- the run


def check_features_json(out_dir, params, overwrite):
    """Refuse to mix arrays computed with different parameters in one folder
    (`features.FeatureMismatch`)."""
    fj = Path(out_dir) / "features.json"
    if fj.exists() and not overwrite:
        diff = F.differing(json.loads(fj.read_text()), params)
        if diff:
            raise F.FeatureMismatch(
                f"{out_dir} holds arrays computed with other feature parameters "
                f"(differ in: {', '.join(diff)}); use --overwrite or another --out")


def pool_context():
    """How pool workers start: forked from this process (nothing to import again: about 0.5 s
    less than a new interpreter), unless TensorFlow is loaded here (a caller in the same
    process, e.g. a notebook), whose threads make fork unsafe: then from a clean forkserver."""
    if "tensorflow" not in sys.modules:
        return multiprocessing.get_context("fork")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["numpy", "soundfile", "deepfake_detector.features",
                                "preprocess"])
    return ctx


def run_tasks(tasks, params, workers, desc, progress, max_seconds=MAX_SECONDS):
    """Compute and write the arrays of ``tasks`` (`process_file`) with ``workers`` processes.

    Returns
    -------
    results : list of (utt_id, status, reason)
    """
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
    results = []
    bar = tqdm(total=len(tasks), desc=desc, unit="file", disable=not progress)
    if workers == 1:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # one worker = one core, as each pool worker below
            for t in tasks:
                results.append(process_file(t, params, max_seconds))
                bar.update()
    else:
        ctx = pool_context()
        # small chunks: the last one, which one worker finishes alone, is short (16 files ~ 35 ms)
        chunk = max(1, min(16, len(tasks) // (8 * workers)))
        with ctx.Pool(workers, initializer=_init_worker, initargs=(params, max_seconds)) as pool:
            for r in pool.imap_unordered(process_file, tasks, chunksize=chunk):
                results.append(r)
                bar.update()
    bar.close()
    return results


def write_tables(out_dir, df, missing, failed, split):
    """``manifest.csv`` (utterances with an array), ``errors.csv`` and ``missing.txt``.

    Returns
    -------
    manifest, errors : pandas.DataFrame
    """
    ok = df[~df["utt_id"].isin(failed)]
    # a file that failed earlier and has no array now is still a failure: keep it out
    ok = ok[ok["path"].map(lambda p: (out_dir / p).exists())]
    manifest = pd.DataFrame({
        "utt_id": ok["utt_id"], "path": ok["path"], "label": ok["label"],
        "target": protocols.targets(ok["label"]), "attack": ok["attack"],
        "speaker": ok["speaker"], "split": split,
        "audio": [str(Path(f).resolve()) for f in ok["src"]],  # for train.py's augmentation
        **{c: ok[c] for c in protocols.CONDITIONS if c in ok.columns},  # per-condition tables
    })
    write_text_atomic(out_dir / "manifest.csv", manifest.to_csv(index=False))
    err = df[df["utt_id"].isin(failed)]
    err_table = pd.DataFrame({"utt_id": err["utt_id"], "file": err["src"], "label": err["label"],
                              "reason": err["utt_id"].map(failed)})
    write_text_atomic(out_dir / "errors.csv", err_table.to_csv(index=False))
    write_text_atomic(out_dir / "missing.txt", "".join(f"{s}\n" for s in missing["src"]))
    return manifest, err


def listed_audio(protocol, audio_dir, fmt=None, limit=None, strict=False):
    """The utterances a protocol lists with their audio paths (column ``src``), which of them
    are on disk, and the missing ones (`preprocess`).

    Raises
    ------
    FileNotFoundError
        Missing audio with ``strict``, or none of the listed files on disk (a wrong
        ``--audio-dir``).
    """
    df = protocols.parse_protocol(protocol, fmt)
    if limit is not None:
        df = df.iloc[:limit]
    df = df.assign(src=[str(protocols.audio_path(r, audio_dir)) for r in df.to_dict("records")])
    exists = df["src"].map(os.path.exists)
    missing = df[~exists]
    if strict and len(missing):
        raise FileNotFoundError(f"{len(missing)} audio files listed in {protocol} are missing, "
                                f"e.g. {missing['src'].iloc[0]} (drop --strict to skip them)")
    if len(df) and len(missing) == len(df):
        raise FileNotFoundError(f"none of the {len(df)} audio files listed in {protocol} is "
                                f"on disk (e.g. {missing['src'].iloc[0]}): check --audio-dir")
    return df, exists, missing


def preprocess(protocol, audio_dir, out_dir, fmt=None, split="", workers=None, fit="window",
               overwrite=False, strict=False, limit=None, progress=True,
               max_seconds=MAX_SECONDS, kind="mel", clip_samples=None):
    """Compute features for every utterance of a protocol; resumable.

    Parameters
    ----------
    protocol, audio_dir, out_dir : str or Path
    fmt : str, optional
        Protocol format; detected when omitted.
    split : str
        Recorded in the manifest's ``split`` column (e.g. ``"train"``).
    workers : int, optional
        Processes to use; default all cores. 1 runs in this process.
    fit : {"window", "resize"}
    overwrite : bool
        Recompute arrays that already exist.
    strict : bool
        Stop (before any work) when the protocol lists audio files that are missing.
    limit : int, optional
        Only the first ``limit`` protocol entries (for quick trials); at least 1.
    max_seconds : float
        Longer recordings are an error of their file, found before decoding.
    kind, clip_samples : str, int, optional
        What the arrays hold, and the waveform window's length (`features.feature_params`).

    Returns
    -------
    summary : dict
        Counts ``written``, ``kept``, ``failed``, ``missing``, per label, and the output paths.

    Raises
    ------
    protocols.ProtocolError, features.FeatureMismatch, FileNotFoundError
        A protocol that cannot be read; an output folder holding arrays computed with other
        parameters; missing audio with ``strict``.
    """
    out_dir = Path(out_dir)
    params = F.feature_params(fit, kind, clip_samples)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    df, exists, missing = listed_audio(protocol, audio_dir, fmt, limit, strict)
    with exclusive(out_dir, "preprocessed arrays"):  # one writer; orphans of killed runs go
        check_features_json(out_dir, params, overwrite)
        write_text_atomic(out_dir / "features.json", json.dumps(params, indent=2) + "\n")
        write_text_atomic(out_dir / "corpus.json",
                          json.dumps(protocols.corpus_info(protocol, audio_dir), indent=2) + "\n")
        df = df[exists].copy()
        df["path"] = df["utt_id"] + ".npy"
        # an array cut short (a crash, a full disk) is not finished: it is computed again
        done = np.array([not overwrite and F.array_ok(out_dir / p, *F.array_spec(params))
                         for p in df["path"]], dtype=bool)
        todo = df[~done]
        tasks = [(u, s, str(out_dir / p)) for u, s, p in zip(todo["utt_id"], todo["src"],
                                                              todo["path"])]
        results = run_tasks(tasks, params, workers,
                            f"preprocess {split or Path(protocol).name}", progress, max_seconds)
        failed = {u: reason for u, status, reason in results if status != "written"}
        manifest, err = write_tables(out_dir, df, missing, failed, split)
    io = [(u, reason) for u, status, reason in results if status == "io"]
    if io:  # the tables are written: nothing finished is lost, and a rerun resumes
        raise IncompleteOutput(f"{len(io)} of {len(tasks)} arrays could not be written "
                               f"({io[0][0]}: {io[0][1]}); {out_dir} is incomplete: free space "
                               "or fix the folder, then run the same command again (finished "
                               "arrays are kept)")

    def per_label(frame):
        return {lab: int((frame["label"] == lab).sum()) for lab in protocols.LABELS}

    return {
        "out_dir": str(out_dir),
        "listed": int(len(df) + len(missing)),
        "written": sum(1 for _, s, _ in results if s == "written"),
        "kept": int(done.sum()),
        "failed": len(failed),
        "missing": int(len(missing)),
        "in_manifest": int(len(manifest)),
        "per_label": {"manifest": per_label(manifest), "failed": per_label(err),
                      "missing": per_label(missing)},
    }


def print_summary(s, file=sys.stdout):
    """Print a preprocessing summary (from `preprocess`)."""
    pl = s["per_label"]
    print(f"\n{s['out_dir']}: {s['listed']} listed -> {s['in_manifest']} arrays in manifest.csv "
          f"({s['written']} written now, {s['kept']} kept from an earlier run)", file=file)
    print(f"  {'':10s} {'bonafide':>9s} {'spoof':>9s}", file=file)
    for name in ("manifest", "failed", "missing"):
        print(f"  {name:10s} {pl[name]['bonafide']:9d} {pl[name]['spoof']:9d}", file=file)
    if s["failed"]:
        print(f"  {s['failed']} files failed: reasons in {s['out_dir']}/errors.csv", file=file)
    if s["missing"]:
        print(f"  {s['missing']} listed files are not on disk: list in {s['out_dir']}/missing.txt",
              file=file)


def build_parser():
    """The command line of preprocess.py."""
    ap = argparse.ArgumentParser(
        description="ASVspoof protocol + audio -> 128x128 normalized log-mel .npy arrays (or "
                    "int16 waveform windows), features.json and manifest.csv. Re-running "
                    "resumes.",
        formatter_class=HelpFormatter)
    ap.add_argument("--dataset-root", default=DEFAULT_DATASET_ROOT,
                    help="ASVspoof 2019 LA/PA folder (holding ASVspoof2019_LA_cm_protocols/ and "
                         "ASVspoof2019_LA_<split>/flac/); used unless --protocol is given")
    ap.add_argument("--split", choices=("train", "dev", "eval"),
                    help="which 2019 partition to process with --dataset-root (default train); "
                         "recorded in the manifest's split column")
    ap.add_argument("--protocol", help="protocol/key file of any supported format (overrides "
                                       "--dataset-root)")
    ap.add_argument("--audio-dir", help="folder of the audio files listed in --protocol "
                                        "(CSV paths are relative to it)")
    ap.add_argument("--format", choices=protocols.FORMATS,
                    help="protocol format (default: detected from the first line)")
    ap.add_argument("--out", help="output folder (default: data/features/<split>)")
    ap.add_argument("--workers", type=int, default=os.cpu_count(),
                    help="worker processes (1 = no subprocesses)")
    ap.add_argument("--fit", choices=F.FITS, default="window",
                    help="'window': fixed 4 s window, repeat-pad short, keep the start of long "
                         "utterances; 'resize': whole utterance resampled to 128 frames (mel "
                         "only)")
    ap.add_argument("--features", choices=F.KINDS, default="mel",
                    help="'mel': 128x128 log-mel arrays (efficientnetb0, lcnn); 'waveform': "
                         "the same window as int16 samples, shape (64524,) (train.py --model "
                         "whisper, which computes its own front end)")
    ap.add_argument("--clip-samples", type=int,
                    help="waveform window length in samples (with --features waveform; "
                         "default 64524): 64600 for train.py --model aasist, the official "
                         "AASIST input")
    ap.add_argument("--overwrite", action="store_true", help="recompute existing arrays")
    ap.add_argument("--strict", action="store_true",
                    help="stop if any listed audio file is missing (default: skip and list them)")
    ap.add_argument("--limit", type=int, help="only the first N protocol entries (N >= 1)")
    ap.add_argument("--max-seconds", type=float, default=MAX_SECONDS,
                    help="longest recording decoded; longer ones are errors of their file, "
                         "found from the header before decoding")
    return ap


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        ap.error("--workers must be at least 1")
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be at least 1")
    if args.max_seconds <= 0:
        ap.error("--max-seconds must be positive")
    try:
        if args.protocol:
            if not args.audio_dir:
                ap.error("--protocol needs --audio-dir")
            protocol, audio_dir = Path(args.protocol), Path(args.audio_dir)
            split = args.split or protocol.stem
        else:
            split = args.split or "train"
            protocol, audio_dir = protocols.resolve_2019_layout(args.dataset_root, split)
        if not audio_dir.is_dir():
            raise FileNotFoundError(f"audio folder {audio_dir} does not exist")
        out = Path(args.out or Path(DEFAULT_FEATURES_DIR) / split)
        summary = preprocess(protocol, audio_dir, out, fmt=args.format, split=split,
                             workers=args.workers, fit=args.fit, overwrite=args.overwrite,
                             strict=args.strict, limit=args.limit, max_seconds=args.max_seconds,
                             kind=args.features, clip_samples=args.clip_samples)
    except (protocols.ProtocolError, F.FeatureMismatch, FileNotFoundError, FileExistsError,
            ValueError, IncompleteOutput) as e:
        raise SystemExit(f"error: {e}") from None
    print_summary(summary)
    return summary


if __name__ == "__main__":
    main()
