"""Generate a small, deterministic demo corpus in the ASVspoof 2019 LA layout.

THE DEMO CORPUS IS SYNTHETIC. It exists so that the whole pipeline (preprocess -> train ->
evaluate) runs offline; results on it say nothing about real deepfake detection.

- **bonafide**: formant-synthesized "speech": a glottal-like harmonic source whose pitch follows a
  prosodic contour (declination, accents, jitter), shaped by moving vowel formants, with
  syllable envelopes, fricative noise bursts, pauses and a low noise floor.
- **spoof**: another utterance of the same kind and speaker passed through a vocoder that
  discards phase, as many TTS/VC systems' vocoders do:
  ``D01`` Griffin-Lim from the STFT magnitude, ``D02`` Griffin-Lim from an 80-band mel
  spectrogram (mel inversion).

Layout written under ``--out`` (same as the real corpus, so preprocess.py reads it with
``--dataset-root <out>/LA``)::

    LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt
    LA/ASVspoof2019_LA_{train,dev,eval}/flac/DEMO_{T,D,E}_<n>.flac

Protocol lines follow the official format: ``SPEAKER UTTERANCE - ATTACK KEY``.

Example::

    python scripts/make_demo_corpus.py --out data/demo
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake_detector.cli import HelpFormatter  # noqa: E402
from deepfake_detector.protocols import DEMO_MARKER  # noqa: E402

SR = 16000
N_FFT = 1024
HOP = 256
SPLITS = {"train": ("T", "trn"), "dev": ("D", "trl"), "eval": ("E", "trl")}
ATTACKS = ("D01", "D02")
# (F1, F2, F3) in Hz for a few vowels of an adult male vocal tract
VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480],
                   [660, 1720, 2410], [570, 840, 2410], [440, 1020, 2240], [490, 1350, 1690]])
# per speaker: (base F0 in Hz, formant scale ~ vocal-tract length)
SPEAKERS = {"train": [(110, 1.0), (210, 1.17), (130, 0.95), (190, 1.12)],
            "dev": [(120, 1.02), (200, 1.15)],
            "eval": [(100, 0.97), (220, 1.2)]}


def synth_utterance(rng, f0_base, formant_scale, duration):
    """One formant-synthesized utterance.

    Parameters
    ----------
    rng : np.random.Generator
    f0_base : float
        Speaker's mean pitch in Hz.
    formant_scale : float
        Scales all formant frequencies (vocal-tract length).
    duration : float
        Seconds.

    Returns
    -------
    y : np.ndarray, shape (round(duration * SR),), float32, peak 0.5
    """
    import librosa

    n = int(round(duration * SR))
    t = np.arange(n) / SR
    # syllable plan: onset times, vowel per syllable, accents, pauses
    onsets, vowels, accents = [], [], []
    pos = rng.uniform(0.1, 0.35)
    while pos < duration - 0.25:
        onsets.append(pos)
        vowels.append(rng.integers(len(VOWELS)))
        accents.append(rng.uniform(0.0, 0.25) if rng.random() < 0.35 else 0.0)
        pos += rng.uniform(0.14, 0.3) + (rng.uniform(0.15, 0.35) if rng.random() < 0.12 else 0)
    onsets, accents = np.array(onsets), np.array(accents)
    # pitch: declination + accent bumps + slow wander + jitter
    f0 = f0_base * (1.12 - 0.25 * t / duration)
    for on, acc in zip(onsets, accents):
        f0 *= 1 + acc * np.exp(-0.5 * ((t - on - 0.08) / 0.07) ** 2)
    f0 *= 1 + 0.03 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 6.3))
    f0 *= 1 + 0.004 * rng.standard_normal(n)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    # glottal-like source: harmonics with -12 dB/octave roll-off, up to Nyquist
    source = np.zeros(n)
    for k in range(1, int(SR / 2 / f0.min())):
        amp = 1.0 / k ** 2 * (k * f0 < SR / 2 - 200)
        source += amp * np.sin(k * phase)
    # loudness: syllable envelopes (voiced), plus fricative noise between some syllables
    voiced = np.zeros(n)
    noise_env = np.zeros(n)
    for i, on in enumerate(onsets):
        length = rng.uniform(0.12, 0.22)
        seg = (t >= on) & (t < on + length)
        voiced[seg] = np.sin(np.pi * (t[seg] - on) / length) ** 0.7
        if rng.random() < 0.3:
            fr = (t >= on - 0.06) & (t < on)
            noise_env[fr] = np.hanning(fr.sum()) * 0.25
    # spectral shaping in the STFT domain: moving formants (Lorentzian peaks)
    frames = 1 + n // HOP
    ft = np.arange(frames) * HOP / SR
    idx = np.clip(np.searchsorted(onsets, ft) - 1, 0, len(onsets) - 1)
    targets = VOWELS[np.array(vowels)[idx]] * formant_scale
    kernel = np.hanning(9) / np.hanning(9).sum()  # smooth formant transitions (~70 ms)
    formants = np.stack([np.convolve(np.pad(targets[:, j], 4, mode="edge"), kernel, "valid")
                         for j in range(3)], axis=1)
    freqs = np.fft.rfftfreq(N_FFT, 1 / SR)[:, None]
    env = sum(a / (1 + ((freqs - formants[None, :, j]) / (bw / 2)) ** 2)
              for j, (a, bw) in enumerate([(1.0, 90), (0.6, 110), (0.25, 170)]))
    spec = librosa.stft(source * voiced, n_fft=N_FFT, hop_length=HOP)
    y = librosa.istft(spec * env, hop_length=HOP, length=n)
    hiss = rng.standard_normal(n)
    hiss = librosa.istft(librosa.stft(hiss, n_fft=N_FFT, hop_length=HOP)
                         * (freqs > 3000), hop_length=HOP, length=n)
    y = y / (np.abs(y).max() + 1e-9) + 0.4 * hiss * noise_env / (np.abs(hiss).max() + 1e-9)
    y += 10 ** (-55 / 20) * rng.standard_normal(n)  # recording noise floor
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def vocode(y, attack, rng):
    """Phase-discarding vocoder resynthesis of ``y`` (the spoofing attack)."""
    import librosa

    if attack == "D01":
        mag = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP))
        out = librosa.griffinlim(mag, n_iter=32, hop_length=HOP, n_fft=N_FFT, length=len(y),
                                 init="random", random_state=int(rng.integers(2**31)))
    elif attack == "D02":
        mel = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=80)
        mag = librosa.feature.inverse.mel_to_stft(mel, sr=SR, n_fft=N_FFT, power=2.0)
        out = librosa.griffinlim(mag, n_iter=32, hop_length=HOP, n_fft=N_FFT, length=len(y),
                                 init="random", random_state=int(rng.integers(2**31)))
    else:
        raise ValueError(f"unknown attack {attack!r}; expected one of {ATTACKS}")
    out = out + 10 ** (-55 / 20) * rng.standard_normal(len(out))
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def is_spoof(i, spoof_fraction=0.5):
    """Whether utterance ``i`` of a split is a spoof: spoofs spread evenly, ``spoof_fraction``
    of every split (0.5: the odd utterances)."""
    return int((i + 1) * spoof_fraction) > int(i * spoof_fraction)


def make_corpus(out, counts, seed=0, min_dur=2.0, max_dur=5.0, spoof_fraction=0.5,
                progress=False):
    """Write the demo corpus.

    Parameters
    ----------
    out : str or Path
        Folder that will hold ``LA/``.
    counts : dict
        Utterances per split, e.g. ``{"train": 80, "dev": 40, "eval": 40}``.
    seed : int
        Same seed and counts -> byte-identical files.
    spoof_fraction : float in (0, 1)
        Share of spoofs in every split (0.5 by default; ASVspoof 2019 LA is about 0.9).
        Spoofs alternate between the attacks.
    progress : bool
        A progress bar per split on stderr.

    Returns
    -------
    protocols : dict
        Split -> protocol path.
    """
    import soundfile as sf

    la = Path(out) / "LA"
    if progress:  # the first call compiles librosa's numba code: not in the bar's estimate
        print("demo corpus: warming up (the first vocoder call compiles its code) ...",
              file=sys.stderr, flush=True)
        warm = np.random.default_rng(0)
        for attack in ATTACKS:
            vocode(synth_utterance(warm, 120.0, 1.0, 1.5), attack, warm)
    proto_dir = la / "ASVspoof2019_LA_cm_protocols"
    proto_dir.mkdir(parents=True, exist_ok=True)
    protocols = {}
    for s_idx, (split, n_utts) in enumerate(counts.items()):
        if n_utts <= 0:
            continue
        letter, kind = SPLITS[split]
        flac_dir = la / f"ASVspoof2019_LA_{split}" / "flac"
        flac_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in tqdm(range(n_utts), desc=f"demo corpus {split}", unit="file",
                      disable=not progress):
            rng = np.random.default_rng([seed, s_idx, i])
            spk_idx = (i // 2) % len(SPEAKERS[split])  # each speaker: bonafide and spoof
            f0, scale = SPEAKERS[split][spk_idx]
            speaker = f"DEMO_{letter}{spk_idx + 1:02d}"
            utt = f"DEMO_{letter}_{i + 1:07d}"
            y = synth_utterance(rng, f0 * rng.uniform(0.93, 1.07), scale,
                                rng.uniform(min_dur, max_dur))
            if is_spoof(i, spoof_fraction):
                attack = ATTACKS[(i // 2) % len(ATTACKS)]
                y, key = vocode(y, attack, rng), "spoof"
            else:
                attack, key = "-", "bonafide"
            sf.write(flac_dir / f"{utt}.flac", y, SR, subtype="PCM_16")
            lines.append(f"{speaker} {utt} - {attack} {key}\n")
        protocols[split] = proto_dir / f"ASVspoof2019.LA.cm.{split}.{kind}.txt"
        protocols[split].write_text("".join(lines))
    note = ("SYNTHETIC demo corpus made by scripts/make_demo_corpus.py: formant-synthesized "
            "'bonafide' speech and Griffin-Lim vocoded 'spoofs'. It proves only that the "
            "pipeline runs; it is not ASVspoof data.\n")
    (Path(out) / "README.txt").write_text(note)
    # the marker preprocess.py looks for: runs trained on it say so when they score audio
    (la / DEMO_MARKER).write_text(note)
    return protocols


def build_parser():
    """The command line of make_demo_corpus.py."""
    ap = argparse.ArgumentParser(
        description="Generate a small synthetic corpus in the ASVspoof 2019 LA layout "
                    "(proves the pipeline runs; not real data).",
        formatter_class=HelpFormatter)
    ap.add_argument("--out", default="data/demo", help="output folder (LA/ is created in it)")
    ap.add_argument("--train", type=int, default=120, help="training utterances")
    ap.add_argument("--dev", type=int, default=60, help="development utterances")
    ap.add_argument("--eval", type=int, default=60, help="evaluation utterances")
    ap.add_argument("--spoof-fraction", type=float, default=0.5,
                    help="share of spoofs in every split (ASVspoof 2019 LA: about 0.9)")
    ap.add_argument("--seed", type=int, default=0, help="seed; same seed, same files")
    ap.add_argument("--min-dur", type=float, default=2.0, help="shortest utterance, seconds")
    ap.add_argument("--max-dur", type=float, default=5.0, help="longest utterance, seconds")
    ap.add_argument("--no-next-step", action="store_true",
                    help="do not print the next command (scripts/quickstart.sh runs it)")
    return ap


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    if not 0.5 <= args.min_dur <= args.max_dur:
        ap.error("need 0.5 <= --min-dur <= --max-dur")
    if not 0 < args.spoof_fraction < 1:
        ap.error("--spoof-fraction must be in (0, 1)")
    protocols = make_corpus(args.out, {"train": args.train, "dev": args.dev, "eval": args.eval},
                            args.seed, args.min_dur, args.max_dur, args.spoof_fraction,
                            progress=True)
    for split, p in protocols.items():
        print(f"{split}: {p}")
    if not args.no_next_step:
        print(f"next: python preprocess.py --dataset-root {Path(args.out) / 'LA'} --split "
              "train --out data/features/demo_train")
    return protocols


if __name__ == "__main__":
    main()
