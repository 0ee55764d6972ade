"""scripts/lfcc_gmm.py: the LFCC definition, GMM sizes, a separable toy set scored perfectly,
the model file without pickle, and its score file read by evaluate.py's score-file mode."""

import numpy as np
import pandas as pd
import pytest

import evaluate
import lfcc_gmm
import preprocess
from conftest import tone, write_wav


def test_lfcc_frames_and_dimensions():
    x = lfcc_gmm.lfcc(tone(1.0))
    assert x.shape == (101, 60) and np.isfinite(x).all()  # 10 ms hop, centred frames
    fb = lfcc_gmm.linear_filterbank()
    assert fb.shape == (20, 257) and np.allclose(fb.max(axis=1), 1.0, atol=0.05)
    centres = fb.argmax(axis=1)
    assert np.all(np.diff(centres) > 0) and np.ptp(np.diff(centres)) <= 1  # linearly spaced


def test_gmm_size_follows_the_data():
    assert lfcc_gmm.n_components(10**7) == 512  # the official size when data allow
    assert lfcc_gmm.n_components(20_000) == 128 and lfcc_gmm.n_components(50) == 1
    assert lfcc_gmm.n_components(10**7, "64") == 64


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Bonafide = low harmonic tones, spoof = the same plus loud high-band noise: separable."""
    root = tmp_path_factory.mktemp("lfcc")
    (root / "audio").mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for i in range(24):
        y = tone(1.5, freq=110 + 7 * i, seed=i)
        label = "bonafide" if i % 2 == 0 else "spoof"
        if label == "spoof":
            noise = rng.standard_normal(y.size)
            noise = np.diff(np.diff(noise, prepend=0), prepend=0)  # high-pass
            y = y + 0.05 * noise / np.abs(noise).max()
        write_wav(root / "audio" / f"U{i:02d}.wav", y)
        rows.append((f"audio/U{i:02d}.wav", label, "-" if label == "bonafide" else "T01"))
    csv = root / "labels.csv"
    pd.DataFrame(rows, columns=["file", "label", "attack"]).to_csv(csv, index=False)
    for name, part in (("train", slice(0, 16)), ("test", slice(16, 24))):
        sub = root / f"{name}.csv"
        pd.read_csv(csv).iloc[part].to_csv(sub, index=False)
        preprocess.preprocess(sub, root, root / name, workers=1, progress=False)
    return root


def test_separable_toy_set_is_scored_perfectly(toy, tmp_path):
    out = lfcc_gmm.train(toy / "train", tmp_path / "gmm", val_fraction=0.25, components="4",
                         progress=False)
    gmms, meta = lfcc_gmm.load(out / "gmm.npz")
    assert meta["components"] == {"bonafide": 4, "spoof": 4} and meta["model"] == "lfcc_gmm"
    with np.load(out / "gmm.npz", allow_pickle=False) as z:  # plain arrays only
        assert z["bonafide_means"].shape == (4, 60)
    m = lfcc_gmm.evaluate(out, toy / "test", progress=False)
    assert m["eer"] == 0.0 and m["n"] == {"total": 8, "bonafide": 4, "spoof": 4}
    scores = pd.read_csv(out / "eval" / "test" / "predictions.csv")
    assert (scores.loc[scores["key"] == "bonafide", "score"].min()
            > scores.loc[scores["key"] == "spoof", "score"].max())  # higher = more bonafide
    # the score file, with a protocol, through evaluate.py's score-file mode: same numbers
    s = evaluate.main(["--scores", str(out / "eval" / "test" / "scores.txt"), "--protocol",
                       str(toy / "test.csv"), "--no-plots", "--out", str(tmp_path / "s"),
                       "--threshold", str(m["threshold"]["value"])])
    assert s["eer"] == m["eer"] and s["roc_auc"] == m["roc_auc"] == 1.0
    assert s["per_attack"] == m["per_attack"]
