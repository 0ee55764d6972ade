"""predict.py and inference.py: any rate, channels, format and length; per-file errors;
windows; batching."""

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from deepfake_detector import inference, runs
import predict
from conftest import MINI_LA, REPO, SHARED, needs_mini, tone, write_wav


@pytest.fixture(scope="module")
def detector(trained_run):
    return inference.Detector(trained_run)


def test_window_starts_cover_the_whole_signal():
    assert inference.window_starts(100, 200, 50) == [0]
    assert inference.window_starts(200, 200, 50) == [0]
    assert inference.window_starts(450, 200, 100) == [0, 100, 200, 250]
    assert inference.window_starts(400, 200, 100) == [0, 100, 200]


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    import soundfile as sf

    d = tmp_path_factory.mktemp("audio")
    files = {}
    for sr in (8000, 22050, 44100, 48000):
        files[f"{sr}"] = write_wav(d / f"tone_{sr}.wav", tone(3.0, sr=sr, seed=sr), sr)
    stereo = np.stack([tone(3.0, sr=44100), tone(3.0, sr=44100, freq=330)], axis=1)
    files["stereo"] = write_wav(d / "stereo.wav", stereo, 44100)
    y = tone(3.0, sr=22050, seed=5)
    sf.write(d / "clip.mp3", y, 22050, format="MP3")
    sf.write(d / "clip.ogg", y, 22050, format="OGG", subtype="VORBIS")
    files["mp3"], files["ogg"] = d / "clip.mp3", d / "clip.ogg"
    files["silence"] = write_wav(d / "silence.wav", np.zeros(48000), 16000)
    (d / "empty.wav").write_bytes(b"")
    files["empty"] = d / "empty.wav"
    (d / "random.wav").write_bytes(np.random.default_rng(0).bytes(20000))
    files["random"] = d / "random.wav"
    write_wav(d / "whole.flac", tone(3.0, seed=9), 16000)
    good = (d / "whole.flac").read_bytes()
    (d / "truncated.flac").write_bytes(good[: len(good) // 2])
    files["truncated"] = d / "truncated.flac"
    files["short"] = write_wav(d / "short.wav", tone(0.05), 16000)
    return files


GOOD = ["8000", "22050", "44100", "48000", "stereo", "mp3", "ogg"]
BAD = {"silence": "silent", "empty": "cannot decode", "random": "cannot decode",
       "truncated": "cannot decode", "short": "too short"}


def test_every_input_gets_a_score_or_the_promised_error(detector, audio_files):
    names = GOOD + list(BAD)
    rows = list(inference.score_files([audio_files[n] for n in names], detector, batch_size=3))
    assert [r["file"] for r in rows] == [str(audio_files[n]) for n in names]
    for name, r in zip(names, rows):
        if name in BAD:
            assert r["status"] == "error" and r["error"].startswith(BAD[name]), (name, r)
        else:
            assert r["status"] == "ok", (name, r)
            assert 0 <= r["p_spoof"] <= 1 and np.isfinite(r["score"])
            assert r["label"] in ("bonafide", "spoof")
            assert abs(r["duration_s"] - 3.0) < 0.06, name
            assert r["windows_scored"] == 1
    by = dict(zip(names, rows))
    assert (by["8000"]["sample_rate"], by["stereo"]["channels"]) == (8000, 2)
    assert by["44100"]["threshold_source"] == \
        "calibrated on the run's validation data (eer), threshold.json"


def test_same_scores_as_the_training_features(detector, demo_corpus, demo_features):
    """A file shorter than one window is scored exactly as preprocess + evaluate score it."""
    import data_loader

    df = data_loader.load_manifest(demo_features["dev"]).iloc[:4]
    files = [demo_corpus / "ASVspoof2019_LA_dev" / "flac" / f"{u}.flac" for u in df["utt_id"]]
    rows = list(inference.score_files(files, detector))
    z = detector.logits(np.stack([np.load(p) for p in df["path"]]))
    np.testing.assert_allclose([r["score"] for r in rows], -z, rtol=1e-6)


def test_long_recording_is_windowed_with_bounded_memory(detector, tmp_path):
    sr, minutes = 16000, 10
    y = np.concatenate([tone(60.0, seed=i, freq=150 + 10 * i) for i in range(minutes)])
    y[sr * 100:sr * 130] = 0  # 30 s of digital silence: its windows are not scored
    path = write_wav(tmp_path / "ten_minutes.flac", y, sr)
    tracemalloc.start()
    (r,) = list(inference.score_files([path], detector, hop_seconds=2.0, batch_size=32))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert r["status"] == "ok" and r["duration_s"] == 600.0
    starts = [w["start_s"] for w in r["windows"]]
    assert starts[:3] == [0.0, 2.0, 4.0] and r["windows"][-1]["end_s"] == 600.0
    # starts every 2 s up to 9,535,476 samples (298 windows) plus one ending at 600 s
    assert r["windows_scored"] + r["windows_silent"] == len(r["windows"]) == 299
    assert r["windows_silent"] == 13  # windows starting at 100, 102, ..., 124 s
    assert r["p_spoof_max"] >= r["p_spoof_mean"]
    decoded = y.size * 4  # float32 at 16 kHz: 38 MB
    # decoded audio plus one batch of windows; holding every window would add 300 x 64 KB
    assert peak < 1.5 * decoded, peak / 2**20


def test_cli_table_json_csv_and_exit_status(trained_run, audio_files, capsys):
    ok = [str(audio_files["22050"]), str(audio_files["mp3"])]
    assert predict.main(["--run", str(trained_run), *ok]) == 0
    table = capsys.readouterr().out
    saved = json.loads((trained_run / "threshold.json").read_text())["best"]["threshold"]
    assert f"threshold {saved:g} (calibrated on the run's validation data (eer), " \
        "threshold.json)" in table
    assert "tone_22050.wav" in table
    # issue 23: what the model was trained on, and the demo warning (the fixture's run was
    # trained on the synthetic demo corpus), said beside the results; the columns explained
    assert "trained on train (" in table and "margin: P(spoof) - threshold" in table
    assert predict.main(["--run", str(trained_run), "--json", *ok,
                         str(audio_files["random"])]) == 1
    out = capsys.readouterr()
    assert "warning: this model was trained on the SYNTHETIC demo corpus" in out.err
    data = json.loads(out.out)
    assert data["model"]["warning"].startswith("trained on the SYNTHETIC demo corpus")
    assert data["model"]["features"]["sample_rate"] == 16000
    assert [r["status"] for r in data["results"]] == ["ok", "ok", "error"]
    assert "1 of 3 files failed" in out.err
    assert predict.main(["--run", str(trained_run), "--csv", "--threshold", "0.01", *ok]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("file,status,error,label,p_spoof") and len(lines) == 3
    assert all(",spoof," in line and ",--threshold," in line for line in lines[1:])


def test_file_names_are_shown_relative_to_their_common_folder_and_cut_in_the_middle():
    names, common = predict.short_names(
        ["/data/calls/2024/a.wav", "/data/calls/2024/sub/" + "x" * 60 + ".flac"], width=40)
    assert common == "/data/calls/2024" and names[0] == "a.wav"
    assert len(names[1]) == 40 and names[1].startswith("sub/xxx") and names[1].endswith(".flac")
    assert "..." in names[1]
    assert predict.short_names(["a.wav", "b.wav"])[1] is None  # no common folder to name


def test_folders_are_searched(trained_run, audio_files, capsys):
    folder = audio_files["mp3"].parent
    assert predict.main(["--run", str(trained_run), "--json", str(folder)]) == 1
    names = {r["file"].rsplit("/", 1)[1] for r in json.loads(capsys.readouterr().out)["results"]}
    assert {"clip.mp3", "clip.ogg", "stereo.wav", "whole.flac"} <= names


@needs_mini
@pytest.mark.skipif(not (SHARED / "wavefake_ljspeech").is_dir(), reason="shared WaveFake absent")
def test_genuine_corpora(detector):
    files = sorted((SHARED / "wavefake_ljspeech" / "audio").glob("*.wav"))
    files += sorted(MINI_LA.glob("ASVspoof2019_LA_*/flac/*.flac"))
    rows = list(inference.score_files(files, detector))
    assert len(rows) == 117 + 202
    assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"][:2]
    assert {r["sample_rate"] for r in rows} == {22050, 16000}


def test_threshold_falls_back_to_0_5_without_calibration(trained_run, tmp_path):
    import shutil

    run = tmp_path / "uncalibrated"
    shutil.copytree(trained_run, run)
    (run / "threshold.json").unlink()
    d = inference.Detector(run)
    assert (d.threshold, d.threshold_source) == (0.5, "default 0.5 (no threshold saved)")
    assert inference.Detector(run, threshold=0.2).threshold_source == "--threshold"


# ----------------------------------------------------------------------------- hostile input


def test_a_model_with_nan_weights_is_refused_in_one_line(trained_run, audio_files, tmp_path):
    """Issue 32, item 8: NaN weights gave NaN logits, taken for silent windows, and predict.py
    died with 'zero-size array to reduction operation maximum'."""
    import shutil

    from deepfake_detector import models, runs

    run = tmp_path / "nan_run"
    shutil.copytree(trained_run, run)
    for name in ("best.keras", "model.keras"):
        path = run / name
        if not path.exists():
            continue
        model, meta, _ = runs.load_run(run, "best" if name == "best.keras" else "final")
        weight = model.get_layer("head_dense").kernel if any(
            layer.name == "head_dense" for layer in model.layers) else model.trainable_weights[0]
        value = np.array(weight)
        value.flat[0] = np.nan
        weight.assign(value)
        models.save_model_atomic(model, path, meta)
    with pytest.raises(SystemExit, match=r"holds NaN or infinite values .*not used") as e:
        predict.main(["--run", str(run), str(audio_files["8000"])])
    assert "\n" not in str(e.value) and "best.keras" in str(e.value)


def test_nan_samples_are_a_file_error_never_a_skipped_window(detector, tmp_path):
    y = tone(9.0, seed=3)
    y[5 * 16000:5 * 16000 + 8] = np.nan  # 8 NaN samples inside the third window
    nan = write_wav(tmp_path / "nan.wav", y, 16000, subtype="FLOAT")
    y[:] = np.inf
    inf = write_wav(tmp_path / "inf.wav", y, 16000, subtype="FLOAT")
    rows = list(inference.score_files([nan, inf], detector))
    for r in rows:
        assert r["status"] == "error" and r["error_kind"] == "nonfinite", r
        assert "NaN or inf" in r["error"] and "label" not in r  # never scored, not bonafide


def test_one_hostile_file_among_good_ones(trained_run, tmp_path, capsys):
    import soundfile as sf

    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(3):
        write_wav(folder / f"good{i}.wav", tone(2.0, seed=i), 16000)
    sf.write(folder / "onehz.wav", np.zeros(60_000, np.float32), 1)  # 16 h at 1 Hz
    (folder / "dangling.wav").symlink_to(tmp_path / "nowhere.wav")
    os.mkfifo(folder / "fifo.wav")  # would block forever if opened
    code = predict.main(["--run", str(trained_run), "--json", str(folder)])
    rows = {Path(r["file"]).name: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert code == 1 and len(rows) == 6
    assert all(rows[f"good{i}.wav"]["status"] == "ok" for i in range(3))
    assert rows["onehz.wav"]["error"].startswith("too long")
    assert rows["dangling.wav"]["error_kind"] == "missing"
    assert rows["fifo.wav"]["error_kind"] == "invalid"


def test_unreadable_model_files_give_one_line_naming_the_file(trained_run, tmp_path):
    import shutil
    import subprocess
    import sys

    from conftest import REPO

    run = tmp_path / "broken"
    shutil.copytree(trained_run, run)
    (run / "best.keras").write_bytes(b"PK\x03\x04 truncated archive")
    (run / "model.keras").write_bytes(np.random.default_rng(0).bytes(2000))
    audio = write_wav(tmp_path / "a.wav", tone(1.0), 16000)
    for script, args in (("predict.py", [str(audio)]), ("evaluate.py", ["--no-plots"]),
                         ("serve.py", ["--port", "0"])):
        proc = subprocess.run([sys.executable, script, "--run", str(run), *args], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, (script, proc.stderr)
        error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and f"{run / 'best.keras'} is not a readable model" in error[0]


# ----------------------------------------------------------------------------- hostile round 2

@pytest.mark.parametrize("change, message", [
    (lambda m: m["features"].update(n_fft=2**30), "n_fft = '1073741824'"),
    (lambda m: m["features"].update(hop_length=0), "hop_length = '0'"),
    (lambda m: m["features"].update(top_db=0), "top_db"),
    (lambda m: m["features"].update(sample_rate="16000"), "sample_rate = '16000'"),
    (lambda m: m.update(input={"kind": "telepathy"}), "input kind 'telepathy'"),
    (lambda m: m.pop("features"), "no 'features' entry"),
    (lambda m: m["features"].update(kind="waveform"), "clip_samples|shape"),
    (lambda m: m.update(model="lcnn", input={"kind": "waveform"}), "cannot read mel"),
])
def test_model_metadata_is_checked_before_it_is_used(trained_run, tmp_path, change, message):
    """A model file's embedded metadata used to be trusted: n_fft = 2**30 grew predict.py to
    20.9 GB, hop_length 0 and the others were tracebacks."""
    import json
    import shutil
    import zipfile

    from deepfake_detector import models, runs

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    meta = models.read_model_meta(run / "best.keras")
    change(meta)
    src = run / "best.keras"
    tmp = run / "edited.keras"
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(tmp, "w") as b:
        for item in a.infolist():
            data = a.read(item.filename)
            b.writestr(item, json.dumps(meta) if item.filename == models.META_NAME else data)
    tmp.replace(src)
    with pytest.raises(runs.ModelFileError, match=message) as e:
        runs.load_run(run)
    assert "\n" not in str(e.value) and "best.keras" in str(e.value)
    wav = write_wav(tmp_path / "a.wav", tone(2.0))
    proc = subprocess.run([sys.executable, "predict.py", "--run", str(run), str(wav)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "invalid metadata" in proc.stderr


def test_names_that_are_not_utf8_or_hold_control_characters(trained_run, tmp_path):
    """A name that is not UTF-8 used to get no score ('surrogates not allowed') and, with a
    strict UTF-8 stdout, killed the table and --csv output; newlines and escape sequences
    printed raw."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_wav(folder / "plain.wav", tone(2.0))
    for i, raw in enumerate((b"bad\xff\xfe.wav", b"evil\n\x1b[31mred.wav")):
        tmp = write_wav(folder / f"tmp{i}.wav", tone(2.0, seed=1))
        os.rename(os.fsencode(tmp), os.path.join(os.fsencode(folder), raw))
    env = dict(os.environ, PYTHONIOENCODING="utf-8:strict")
    for mode in ([], ["--csv"]):
        proc = subprocess.run([sys.executable, "predict.py", "--run", str(trained_run), *mode,
                               str(folder)], cwd=REPO, capture_output=True, env=env,
                              timeout=300)
        out = proc.stdout.decode("utf-8")
        assert proc.returncode == 0, proc.stderr.decode()
        assert "ERROR" not in out and "\x1b" not in out
        if not mode:
            rows = [r for r in out.strip().splitlines() if ".wav" in r]
            assert len(rows) == 3  # one line per file: the newline in a name is escaped
            assert any("bad\\xff\\xfe.wav" in r for r in rows)
            assert any("evil\\n\\x1b[31mred.wav" in r for r in rows)


def test_an_empty_folder_is_an_error_not_an_empty_table(trained_run, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    with pytest.raises(SystemExit, match=r"no audio files in .*empty"):
        predict.main(["--run", str(trained_run), str(tmp_path / "empty")])


def test_only_a_threshold_fitted_on_labelled_data_is_called_calibrated():
    """Issue 34 point 3: the imported AASIST's threshold (its argmax) and a fused run's gated
    decision are worded as what they are; EER/F1/FAR thresholds chosen on labelled validation
    data are "calibrated"."""
    words = runs.saved_threshold_words
    assert words({"method": "eer"}) == "calibrated on the run's validation data (eer)"
    assert words({"method": "far:0.01"}).startswith("calibrated on the run's validation data")
    assert not words({"method": "argmax"}).startswith("calibrated")
    assert "not calibrated on your data" in words({"method": "argmax"})
    assert words({"method": "gated"}).startswith("the fused decision")
    assert runs.is_calibrated({"method": "f1"}) and not runs.is_calibrated({"method": "argmax"})
    assert not runs.is_calibrated(None)


def test_a_file_that_is_not_audio_gets_a_readable_reason(tmp_path):
    """Issue 34 point 13: a text file read as audio said "Error opening b'upload': Format not
    recognised.; fallback decoder: " (an internal name, an empty clause)."""
    from deepfake_detector import features

    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not audio")
    with pytest.raises(features.AudioError) as e:
        features.load_audio(path)
    msg = str(e.value)
    assert msg.startswith("cannot decode: not an audio format this program reads (libsndfile: ")
    assert "Format not recognised" in msg and "ffmpeg/audioread: " in msg
    assert "b'" not in msg and "Error opening" not in msg and not msg.endswith(": )")
