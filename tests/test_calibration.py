"""Per-condition tables (breakdown.py, protocols.py) and calibration to log-likelihood ratios
(calibration.py, evaluate.py --calibrate-on, predict.py on a calibrated run)."""

import json

import numpy as np
import pandas as pd
import pytest

import evaluate
from deepfake_detector.evaluation import calibration as C
from deepfake_detector.evaluation import metrics
from deepfake_detector import protocols
from deepfake_detector.evaluation import report


# ----------------------------------------------------------------------------- conditions

LA_2021 = """LA_0009 LA_E_0000001 alaw ita_tx A07 spoof notrim eval
LA_0009 LA_E_0000002 alaw ita_tx bonafide bonafide notrim eval
LA_0010 LA_E_0000003 none - A10 spoof notrim progress
LA_0010 LA_E_0000004 none - bonafide bonafide notrim eval
LA_0011 LA_E_0000005 pstn sin_tx A13 spoof notrim eval
LA_0011 LA_E_0000006 pstn sin_tx bonafide bonafide notrim eval
LA_0011 LA_E_0000007 alaw ita_tx A07 spoof notrim eval
LA_0011 LA_E_0000008 pstn sin_tx A07 spoof notrim eval
"""
DF_2021 = """LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress traditional_vocoder - - - -
LA_0023 DF_E_2000012 mp3m4a vcc2018 bonafide bonafide notrim eval - - - - -
LA_0024 DF_E_2000013 mp3m4a vcc2018 A17 spoof notrim eval waveform_concatenation - - - -
LA_0024 DF_E_2000014 nocodec asvspoof bonafide bonafide notrim eval - - - - -
"""
ASV5 = """E_0001 E_0000000001 F - - - - bonafide bonafide -
E_0001 E_0000000002 F C05 2 - AC2 A17 spoof -
E_0002 E_0000000003 M C05 2 - - bonafide bonafide -
E_0002 E_0000000004 M - - - AC1 A18 spoof -
"""


@pytest.mark.parametrize("text, columns, first", [
    (LA_2021, ["codec", "transmission"], ("alaw", "ita_tx")),
    (DF_2021, ["codec", "corpus"], ("nocodec", "asvspoof")),
    (ASV5, ["codec", "codec_q"], ("-", "-"))], ids=["2021LA", "2021DF", "asvspoof5"])
def test_protocols_keep_their_condition_columns(tmp_path, text, columns, first):
    (tmp_path / "p.txt").write_text(text)
    df = protocols.parse_protocol(tmp_path / "p.txt")
    assert [c for c in df.columns if c in protocols.CONDITIONS] == columns
    assert tuple(df.loc[0, columns]) == first


def scored(text, tmp_path, seed=0):
    (tmp_path / "p.txt").write_text(text)
    df = protocols.parse_protocol(tmp_path / "p.txt")
    rng = np.random.default_rng(seed)
    score = np.where(df["label"] == "bonafide", 1.0, -1.0) + rng.normal(0, 0.8, len(df))
    (tmp_path / "s.txt").write_text("".join(f"{u} {s}\n" for u, s in zip(df["utt_id"], score)))
    return df.assign(score=score)


def test_a_2021_la_protocol_gives_per_codec_per_transmission_and_per_pair_tables(tmp_path):
    df = scored(LA_2021, tmp_path)
    m = evaluate.evaluate(scores=tmp_path / "s.txt", protocol=tmp_path / "p.txt",
                          out=tmp_path / "out", plots=False)
    rows = pd.read_csv(tmp_path / "out" / "per_condition.csv", keep_default_na=False)
    assert set(rows["factor"]) == {"codec", "transmission", "codec+transmission"}
    alaw = rows[(rows["factor"] == "codec") & (rows["condition"] == "alaw")].iloc[0]
    assert (alaw["n_bonafide"], alaw["n_spoof"]) == (1, 2)
    sub = df[df["codec"] == "alaw"]
    bona, spoof = sub.loc[sub["label"] == "bonafide", "score"], sub.loc[
        sub["label"] == "spoof", "score"]
    assert alaw["eer"] == pytest.approx(metrics.compute_eer(bona, spoof)[0], abs=1e-12)
    assert alaw["min_dcf"] == pytest.approx(metrics.min_dcf(bona, spoof)[0], abs=1e-12)
    pair = rows[rows["factor"] == "codec+transmission"].set_index("condition")
    assert set(pair.index) == {"alaw+ita_tx", "none+-", "pstn+sin_tx"}
    assert "per condition" in evaluate.format_report(m)
    assert "per_condition.csv" in m["files"]


def test_a_df_and_an_asvspoof5_protocol_give_their_factors(tmp_path):
    for text, factors in ((DF_2021, {"codec", "corpus", "codec+corpus"}),
                          (ASV5, {"codec", "codec_q", "codec+codec_q"})):
        scored(text, tmp_path)
        m = evaluate.evaluate(scores=tmp_path / "s.txt", protocol=tmp_path / "p.txt",
                              out=tmp_path / "out", plots=False)
        assert {r["factor"] for r in m["per_condition"]} == factors
        one_class = [r for r in m["per_condition"] if r["n_bonafide"] == 0 or r["n_spoof"] == 0]
        assert all(r["eer"] is None and r["note"] for r in one_class)


def test_a_2019_protocol_has_no_conditions_and_no_table(tmp_path):
    text = "LA_0079 LA_T_1 - A01 spoof\nLA_0079 LA_T_2 - - bonafide\n"
    scored(text, tmp_path)
    m = evaluate.evaluate(scores=tmp_path / "s.txt", protocol=tmp_path / "p.txt",
                          out=tmp_path / "out", plots=False)
    assert m["per_condition"] == [] and not (tmp_path / "out" / "per_condition.csv").exists()


# ----------------------------------------------------------------------------- calibration


def gaussian_llr_system(rng, n, scale=5.0, shift=3.0):
    """Scores whose true LLR is known: bonafide ~ N(1, 1), spoof ~ N(-1, 1) give llr = 2x;
    the system reports ``scale * x + shift`` (mis-scaled and shifted)."""
    t = (rng.random(n) < 0.5).astype(int)  # 1 = spoof
    x = rng.normal(np.where(t == 1, -1.0, 1.0), 1.0)
    return scale * x + shift, t


def test_the_fit_recovers_a_known_affine_map():
    rng = np.random.default_rng(0)
    s, t = gaussian_llr_system(rng, 40_000)
    cal = C.fit_llr(s, t)
    # llr = 2x = 2 (s - 3) / 5 = 0.4 s - 1.2
    assert cal["weights"][0] == pytest.approx(0.4, rel=0.03)
    assert cal["bias"] == pytest.approx(-1.2, abs=0.05)
    assert cal["cllr_after"] < cal["cllr_before"]


def test_calibration_lowers_cllr_and_actdcf_on_held_out_data_and_keeps_the_ranking():
    rng = np.random.default_rng(1)
    s_dev, t_dev = gaussian_llr_system(rng, 2_000)
    s_eval, t_eval = gaussian_llr_system(rng, 2_000)
    cal = C.fit_llr(s_dev, t_dev)
    llr = C.apply_llr(cal, s_eval)
    before = metrics.asvspoof5_metrics(s_eval[t_eval == 0], s_eval[t_eval == 1])
    after = metrics.asvspoof5_metrics(llr[t_eval == 0], llr[t_eval == 1])
    assert after["cllr"] < before["cllr"] - 0.2 and after["act_dcf"] < before["act_dcf"]
    assert after["eer"] == before["eer"] and after["min_dcf"] == before["min_dcf"]


def test_perfectly_separated_calibration_data_are_warned_about():
    cal = C.fit_llr(np.r_[np.ones(20) * 3, -np.ones(20) * 3] + np.arange(40) * 1e-3,
                    np.r_[np.zeros(20), np.ones(20)])
    assert "perfectly separated" in cal["warning"]
    rng = np.random.default_rng(4)
    assert "warning" not in C.fit_llr(*gaussian_llr_system(rng, 500))


def test_fit_refuses_what_cannot_be_calibrated():
    with pytest.raises(ValueError, match="needs bonafide and spoof"):
        C.fit_llr([1.0, 2.0], [0, 0])
    with pytest.raises(ValueError, match="finite"):
        C.fit_llr([1.0, np.nan], [0, 1])
    with pytest.raises(ValueError, match="slope is -"):  # labels swapped: ranking reversed
        C.check_calibration(C.fit_llr(np.r_[np.zeros(20), np.ones(20)] + np.arange(40) * 1e-3,
                                      np.r_[np.zeros(20), np.ones(20)]), "x")


def write_system(folder, name, scores, ids):
    (folder / name).write_text("".join(f"{u} {float(s)!r}\n" for u, s in zip(ids, scores)))
    return folder / name


def protocol_of(folder, ids, t):
    (folder / "protocol.txt").write_text("".join(
        f"LA_0001 {u} - {'A01 spoof' if y else '- bonafide'}\n" for u, y in zip(ids, t)))
    return folder / "protocol.txt"


def test_evaluate_calibrates_a_score_file_on_dev_and_reports_raw_and_calibrated(tmp_path):
    rng = np.random.default_rng(2)
    s, t = gaussian_llr_system(rng, 1_200)
    ids = [f"LA_E_{i:07d}" for i in range(len(s))]
    proto = protocol_of(tmp_path, ids, t)
    dev = write_system(tmp_path, "dev.txt", s[:600], ids[:600])
    ev = write_system(tmp_path, "eval.txt", s[600:], ids[600:])
    m = evaluate.evaluate(scores=ev, protocol=proto, partial=True, out=tmp_path / "out",
                          plots=False, calibrate_on=dev, calibrate_protocol=proto)
    a5 = m["asvspoof5"]
    assert a5["calibrated"]["cllr"] < a5["raw"]["cllr"] - 0.2
    assert a5["calibrated"]["min_dcf"] == a5["raw"]["min_dcf"]
    saved = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert saved["data"] == str(dev.resolve()) and saved["n_bonafide"] + saved["n_spoof"] == 600
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert np.allclose(pred["score"], C.apply_llr(saved, pred["score_raw"]))
    # P(spoof) is the posterior at prior 0.5: sigmoid(-llr)
    assert np.allclose(pred["p_spoof"], 1 / (1 + np.exp(pred["score"])))
    scores_txt = pd.read_csv(tmp_path / "out" / "scores.txt", sep=" ", header=None)
    assert np.allclose(scores_txt[1], pred["score"])  # the file leaving the program: LLRs
    # the saved calibration, applied again to the same scores: the same report
    again = evaluate.evaluate(scores=ev, protocol=proto, partial=True, out=tmp_path / "again",
                              plots=False, calibration=tmp_path / "out" / "calibration.json")
    assert again["asvspoof5"]["calibrated"] == a5["calibrated"]


def test_calibrating_on_the_evaluated_utterances_is_refused_unless_forced(tmp_path):
    rng = np.random.default_rng(3)
    s, t = gaussian_llr_system(rng, 400)
    ids = [f"LA_E_{i:07d}" for i in range(len(s))]
    proto = protocol_of(tmp_path, ids, t)
    ev = write_system(tmp_path, "eval.txt", s, ids)
    with pytest.raises(ValueError, match="fitted on 400 of the 400 evaluated utterances"):
        evaluate.evaluate(scores=ev, protocol=proto, out=tmp_path / "out", plots=False,
                          calibrate_on=ev, calibrate_protocol=proto)
    assert not (tmp_path / "out" / "calibration.json").exists()  # nothing saved
    m = evaluate.evaluate(scores=ev, protocol=proto, out=tmp_path / "out", plots=False,
                          calibrate_on=ev, calibrate_protocol=proto, force_calibration=True)
    assert any("optimistic" in w for w in m["warnings"])
    metrics_json = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert any("optimistic" in w for w in metrics_json["warnings"])


def test_the_command_line_checks_calibration_flags(tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--scores", "x", "--calibrate-on", "y", "--no-calibration"])
    assert "goes without --calibration" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--scores", "x", "--prior-spoof", "1"])
    assert "--prior-spoof must be below 1" in capsys.readouterr().err


def test_a_calibrated_threshold_keeps_its_decisions():
    cal = {"weights": [0.5], "bias": -1.0, "prior_spoof": 0.2}
    saved = {"threshold": 0.7, "score_threshold": float(np.log(0.3 / 0.7)), "method": "eer"}
    moved = C.translate_threshold(saved, cal)
    raw = np.linspace(-5, 5, 101)
    p = report.apply_calibration(pd.DataFrame({"score": raw}), cal)["p_spoof"]
    before = 1 / (1 + np.exp(raw)) >= saved["threshold"]
    np.testing.assert_array_equal(p >= moved["threshold"], before)
    assert moved["raw"]["threshold"] == 0.7


# ----------------------------------------------------------------------------- a run


def test_a_run_calibrated_by_evaluate_serves_llrs_in_predict(trained_run, demo_features,
                                                              demo_corpus, tmp_path):
    """``--calibrate-on`` saves the calibration in the run; the next evaluate.py and
    predict.py use it: the score becomes the LLR, the same decisions are made."""
    import shutil

    from deepfake_detector import inference

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    raw = inference.Detector(run)
    m = evaluate.evaluate(run, demo_features["dev"], plots=False,
                          calibrate_on=demo_features["train"], force_calibration=False)
    cal = C.read_calibration(run, "best")
    assert cal is not None and cal["data"] == str(demo_features["train"].resolve())
    assert m["asvspoof5"]["calibrated"] is not None
    det = inference.Detector(run)
    wav = sorted((demo_corpus / "ASVspoof2019_LA_dev" / "flac").glob("*.flac"))[0]
    a = next(inference.score_files([wav], raw))
    b = next(inference.score_files([wav], det))
    assert b["score"] == pytest.approx(C.apply_llr(cal, [a["score"]])[0], rel=1e-6)
    assert b["label"] == a["label"]  # the threshold moved with the scale
    assert "calibrated log-likelihood ratio" in det.identity()["score"]
    # evaluate.py on the same data again: refused, the calibration's data are the train part
    with pytest.raises(ValueError, match="calibrating on the test data"):
        evaluate.evaluate(run, demo_features["train"], plots=False)
    plain = evaluate.evaluate(run, demo_features["train"], plots=False, calibration=False,
                              name="train_raw")
    assert plain["asvspoof5"]["calibrated"] is None
