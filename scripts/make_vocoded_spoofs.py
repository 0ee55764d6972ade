"""Make spoofed training data from bonafide speech by vocoding it, offline, on a CPU.

Wang & Yamagishi ("Spoofed training data for speech spoofing countermeasure can be efficiently
created using neural vocoders", ICASSP 2023) showed that copies of bonafide utterances passed
through vocoders are effective spoof training data: the copy keeps the speaker and the words, so a
countermeasure can only tell it apart by the vocoder's traces. Neural vocoders need weights this
project cannot download; these signal-processing vocoders run anywhere:

- ``world``: WORLD analysis and resynthesis (pyworld: DIO + StoneMask F0, CheapTrick envelope,
  D4C aperiodicity), unmodified; ``world_f0``: the same with the F0 contour scaled by a random
  factor in [0.85, 1.15]; ``world_sp``: the same with the spectral envelope's frequency axis
  warped by a random factor in [0.9, 1.1] (a vocal-tract length change),
- ``gl_mel8``, ``gl_mel32``, ``gl_mel64``: Griffin-Lim phase reconstruction from an 80-band mel
  power spectrogram (pseudo-inverse of the mel filterbank) at 8, 32 and 64 iterations,
- ``mlsa``: mel-cepstral analysis (order 24, alpha 0.42, from the WORLD envelope) resynthesized
  by an MLSA filter driven by a pulse train at the F0 and noise where unvoiced (pysptk).

Every output has exactly the length of its 16 kHz source and the same RMS level (within
``LEVEL_TOL_DB``; peaks above ``KNEE`` are soft-limited below ``PEAK`` full scale); a copy that
breaks either check is an error row, never written. Outputs are FLAC (16-bit, 16 kHz) named ``<utt_id>__<attack>.flac`` with
a ``labels.csv`` (``file,label,attack,speaker``; the speaker of the source) that preprocess.py
reads as it is::

    python scripts/make_vocoded_spoofs.py --protocol LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.train.trn.txt \\
        --audio-dir LA/ASVspoof2019_LA_train/flac --out data/vocoded/train
    python preprocess.py --protocol data/vocoded/train/labels.csv --audio-dir data/vocoded/train \\
        --out data/features/vocoded_train

Sources: the bonafide utterances of a protocol (``--protocol`` + ``--audio-dir``), of a
preprocessed folder (``--manifest``, its ``audio`` column) or every audio file of a folder
(``--folder``, all taken as bonafide). Deterministic for a given ``--seed``; parallel
(``--workers``); re-running resumes (finished files are kept).
"""

import argparse
import multiprocessing
import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake_detector import features  # noqa: E402
from deepfake_detector.cli import HelpFormatter  # noqa: E402
from deepfake_detector import protocols  # noqa: E402
from deepfake_detector.atomic import atomic_output, write_text_atomic  # noqa: E402

# -----------------------------------------------------------------------------
SR = features.SAMPLE_RATE  # vocoding and output rate
FRAME_PERIOD = 5.0  # ms, WORLD analysis
F0_RANGE = (0.85, 1.15)  # world_f0: F0 scale factor
WARP_RANGE = (0.9, 1.1)  # world_sp: frequency warping factor of the envelope
N_FFT, HOP, N_MELS = 1024, 256, 80  # Griffin-Lim from a mel spectrogram
MCEP_ORDER, MCEP_ALPHA = 24, 0.42  # mlsa (alpha 0.42 approximates the mel scale at 16 kHz)
PEAK = 0.99  # output peaks stay below this (full scale 1.0) ...
KNEE = 0.8  # ... by a soft limiter above this level (`soft_limit`)
LEVEL_TOL_DB = 1.0  # |RMS(out) - RMS(source)| in dB, after level matching
VOCODERS = ("world", "world_f0", "world_sp", "gl_mel8", "gl_mel32", "gl_mel64", "mlsa")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
# -----------------------------------------------------------------------------


class VocoderError(ValueError):
    """A copy that cannot be made or fails the length or level check."""


def _world(y, rng, f0_scale=1.0, warp=1.0):
    import pyworld as pw

    x = y.astype(np.float64)
    f0, t = pw.dio(x, SR, frame_period=FRAME_PERIOD)
    f0 = pw.stonemask(x, f0, t, SR)
    sp = pw.cheaptrick(x, f0, t, SR)
    ap = pw.d4c(x, f0, t, SR)
    if warp != 1.0:  # envelope at f taken from f * warp: formants move by 1 / warp
        bins = np.arange(sp.shape[1])
        sp = np.stack([np.interp(bins * warp, bins, row) for row in sp])
    return pw.synthesize(f0 * f0_scale, sp, ap, SR, FRAME_PERIOD)


def _griffin_lim(y, rng, n_iter):
    import librosa

    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
    basis = features.mel_filterbank(SR, N_FFT, N_MELS, 0.0, SR / 2)
    mag = np.sqrt(np.maximum(np.linalg.pinv(basis) @ mel, 0.0))  # mel power -> STFT magnitude
    return librosa.griffinlim(mag, n_iter=n_iter, hop_length=HOP, n_fft=N_FFT, length=y.size,
                              init="random", random_state=int(rng.integers(2**31)))


def _mlsa(y, rng):
    import pysptk
    import pyworld as pw
    from pysptk.synthesis import MLSADF, Synthesizer

    x = y.astype(np.float64)
    f0, t = pw.dio(x, SR, frame_period=FRAME_PERIOD)
    f0 = pw.stonemask(x, f0, t, SR)
    mc = pysptk.sp2mc(pw.cheaptrick(x, f0, t, SR), order=MCEP_ORDER, alpha=MCEP_ALPHA)
    hop = int(SR * FRAME_PERIOD / 1000)
    pitch = np.where(f0 > 0, SR / np.maximum(f0, 1e-3), 0.0)
    excitation = pysptk.excite(pitch, hop, gaussian=True, seed=int(rng.integers(1, 2**31)))
    synth = Synthesizer(MLSADF(order=MCEP_ORDER, alpha=MCEP_ALPHA), hop)
    return synth.synthesis(excitation, pysptk.mc2b(mc, MCEP_ALPHA))


def vocode(y, attack, rng):
    """One vocoded copy of a 16 kHz waveform, of the same length and RMS level.

    Parameters
    ----------
    y : np.ndarray, shape (n,), float
        Bonafide speech at 16 kHz.
    attack : str
        One of `VOCODERS`.
    rng : np.random.Generator
        Draws the random modification factors and the Griffin-Lim initial phase.

    Returns
    -------
    out : np.ndarray, shape (n,), float32
        Level-matched to ``y`` (`match_level`).

    Raises
    ------
    VocoderError
        Unknown attack, or a copy that is not finite or fails the length or level check.
    """
    if attack == "world":
        out = _world(y, rng)
    elif attack == "world_f0":
        out = _world(y, rng, f0_scale=rng.uniform(*F0_RANGE))
    elif attack == "world_sp":
        out = _world(y, rng, warp=rng.uniform(*WARP_RANGE))
    elif attack.startswith("gl_mel") and attack in VOCODERS:
        out = _griffin_lim(y, rng, int(attack[len("gl_mel"):]))
    elif attack == "mlsa":
        out = _mlsa(y, rng)
    else:
        raise VocoderError(f"unknown vocoder {attack!r}; expected one of {', '.join(VOCODERS)}")
    return match_level(fit(out, y.size), y)


def fit(out, n):
    """``out`` cut or zero-padded to ``n`` samples (vocoders differ from the source by at most
    a frame)."""
    out = np.asarray(out, dtype=np.float64)
    return out[:n] if out.size >= n else np.pad(out, (0, n - out.size))


def rms_db(y):
    """RMS level in dB full scale."""
    return 10 * np.log10(max(float(np.mean(np.square(y, dtype=np.float64))), 1e-20))


def soft_limit(y, knee=KNEE, ceiling=PEAK):
    """Samples above ``knee`` (absolute) bent smoothly (tanh) below ``ceiling``; the rest
    untouched. Vocoded copies are peakier than their source at the same RMS: this keeps the
    level without hard clipping."""
    a = np.abs(y)
    over = a > knee
    if not over.any():
        return y
    room = ceiling - knee
    out = y.copy()
    out[over] = np.sign(y[over]) * (knee + room * np.tanh((a[over] - knee) / room))
    return out


def match_level(out, src):
    """``out`` scaled to the RMS of ``src``, peaks above `KNEE` soft-limited below `PEAK`;
    checked.

    Raises
    ------
    VocoderError
        Non-finite output, or a level more than `LEVEL_TOL_DB` from the source's.
    """
    if not np.isfinite(out).all():
        raise VocoderError("vocoded copy has NaN or inf samples")
    if rms_db(out) < -150:
        raise VocoderError("vocoded copy is silent")
    out = soft_limit(out * 10 ** ((rms_db(src) - rms_db(out)) / 20))
    diff = rms_db(out) - rms_db(src)
    if out.size != src.size or abs(diff) > LEVEL_TOL_DB:
        raise VocoderError(f"vocoded copy fails the checks: {out.size} samples for "
                           f"{src.size}, level {diff:+.2f} dB (tolerance {LEVEL_TOL_DB} dB)")
    return out.astype(np.float32)


def task_rng(seed, utt_id, attack):
    """The random stream of one copy: the same for a seed, utterance and vocoder, whatever the
    order or the number of workers."""
    return np.random.default_rng([seed, zlib.crc32(utt_id.encode()), VOCODERS.index(attack)])


def make_copy(task):
    """Worker: one vocoded copy, written atomically. Never raises for bad input.

    Parameters
    ----------
    task : tuple (utt_id, source_path, attack, out_path, seed)

    Returns
    -------
    (utt_id, attack, status, reason) : status ``"written"`` or ``"failed"``
    """
    import soundfile as sf

    from librosa.util.exceptions import ParameterError

    utt_id, src, attack, dst, seed = task
    try:
        y = features.load_audio(src, SR)
        peak = float(np.max(np.abs(y)))
        if peak > features.LOUD_PEAK:  # float audio far over full scale: scale it first, as
            y = y / peak  # the features do, or the vocoders' spectra overflow to NaN
        out = vocode(y, attack, task_rng(seed, utt_id, attack))
        with atomic_output(dst, suffix=".flac") as tmp:
            sf.write(tmp, out, SR, subtype="PCM_16", format="FLAC")
        return utt_id, attack, "written", ""
    except (features.AudioError, VocoderError, OSError, ValueError, ParameterError) as e:
        return utt_id, attack, "failed", str(e)


# ----------------------------------------------------------------------------- sources


def bonafide_sources(manifest=(), protocol=None, audio_dir=None, folder=()):
    """The bonafide utterances to vocode.

    Returns
    -------
    df : pandas.DataFrame
        ``utt_id, audio, speaker``, one row per distinct utterance id.
    """
    parts = []
    for m in manifest:
        df = pd.read_csv(Path(m) / "manifest.csv", dtype=str, keep_default_na=False)
        if "audio" not in df.columns:
            raise ValueError(f"{m}/manifest.csv has no 'audio' column; run preprocess.py again")
        df = df[df["label"] == "bonafide"]
        parts.append(df[["utt_id", "audio", "speaker"]])
    if protocol is not None:
        df = protocols.parse_protocol(protocol)
        df = df[df["label"] == "bonafide"]
        audio = [str(protocols.audio_path(r, audio_dir)) for r in df.to_dict("records")]
        parts.append(pd.DataFrame({"utt_id": df["utt_id"], "audio": audio,
                                   "speaker": df["speaker"]}))
    for f in folder:
        files = sorted(p for p in Path(f).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        parts.append(pd.DataFrame({"utt_id": [p.stem for p in files],
                                   "audio": [str(p) for p in files], "speaker": "-"}))
    if not parts:
        raise ValueError("no source: pass --manifest, --protocol with --audio-dir, or --folder")
    df = pd.concat(parts, ignore_index=True).drop_duplicates("utt_id")
    if df.empty:
        raise ValueError("the sources list no bonafide utterance")
    return df.reset_index(drop=True)


def run(sources, out, vocoders=VOCODERS, seed=0, workers=None, progress=True):
    """Vocode every source utterance with every vocoder into ``out``; resumable.

    Returns
    -------
    summary : dict
        ``written``, ``kept``, ``failed`` counts and the paths of ``labels.csv`` and
        ``errors.csv``.
    """
    from tqdm import tqdm

    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rows = [(u, a, s, v, out / "audio" / f"{u}__{v}.flac")
            for u, a, s in zip(sources["utt_id"], sources["audio"], sources["speaker"])
            for v in vocoders]
    todo = [(u, a, v, str(p), seed) for u, a, s, v, p in rows if not p.exists()]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    bar = tqdm(total=len(todo), desc="vocoding", unit="file", disable=not progress)
    results = []
    if workers == 1:
        for t in todo:
            results.append(make_copy(t))
            bar.update()
    else:
        ctx = multiprocessing.get_context("forkserver")
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            for r in pool.imap_unordered(make_copy, todo, chunksize=2):
                results.append(r)
                bar.update()
    bar.close()
    failed = [(u, v, reason) for u, v, status, reason in results if status == "failed"]
    done = [(u, s, v, p) for u, a, s, v, p in rows if p.exists()]
    labels = pd.DataFrame({"file": [str(p.relative_to(out)) for *_, p in done],
                           "label": "spoof", "attack": [v for _, _, v, _ in done],
                           "speaker": [s for _, s, _, _ in done]})
    write_text_atomic(out / "labels.csv", labels.to_csv(index=False))
    write_text_atomic(out / "errors.csv", pd.DataFrame(
        failed, columns=["utt_id", "attack", "reason"]).to_csv(index=False))
    return {"written": len(results) - len(failed), "kept": len(rows) - len(todo),
            "failed": len(failed), "labels": str(out / "labels.csv"),
            "errors": str(out / "errors.csv")}


def _init_worker():
    """One BLAS thread per worker process."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def build_parser():
    """The command line of make_vocoded_spoofs.py."""
    ap = argparse.ArgumentParser(
        description="Vocode bonafide speech into spoofed training data (WORLD, Griffin-Lim, "
                    "MLSA), with a labels.csv that preprocess.py reads.",
        formatter_class=HelpFormatter)
    ap.add_argument("--manifest", action="append", default=[],
                    help="a preprocessed folder whose bonafide utterances are vocoded (its "
                         "manifest's audio column); repeatable")
    ap.add_argument("--protocol", help="a protocol file (any format preprocess.py reads) whose "
                                       "bonafide utterances are vocoded; needs --audio-dir")
    ap.add_argument("--audio-dir", help="folder of the audio files listed in --protocol")
    ap.add_argument("--folder", action="append", default=[],
                    help="a folder of audio files, all taken as bonafide; repeatable")
    ap.add_argument("--out", required=True, help="output folder (audio/ and labels.csv)")
    ap.add_argument("--vocoders", default=",".join(VOCODERS),
                    help="comma-separated vocoders (attack names) to apply to every source")
    ap.add_argument("--seed", type=int, default=0, help="seed: same seed, same files")
    ap.add_argument("--workers", type=int, default=os.cpu_count(),
                    help="worker processes (1 = no subprocesses)")
    return ap


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    vocoders = tuple(v.strip() for v in args.vocoders.split(",") if v.strip())
    unknown = [v for v in vocoders if v not in VOCODERS]
    if unknown or not vocoders:
        ap.error(f"unknown vocoder(s) {unknown}; choose from {', '.join(VOCODERS)}")
    if args.protocol and not args.audio_dir:
        ap.error("--protocol needs --audio-dir")
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    try:
        sources = bonafide_sources(args.manifest, args.protocol, args.audio_dir, args.folder)
        summary = run(sources, args.out, vocoders, args.seed, args.workers)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"{len(sources)} bonafide sources x {len(vocoders)} vocoders: {summary['written']} "
          f"written, {summary['kept']} kept, {summary['failed']} failed "
          f"({summary['errors']})\nlabels: {summary['labels']}\nnext: python preprocess.py "
          f"--protocol {summary['labels']} --audio-dir {args.out} --out data/features/vocoded")
    return summary


if __name__ == "__main__":
    main()
