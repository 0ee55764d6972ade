"""From scores to an evaluation report: score a run (or read a score file), compute every
metric, and write ``metrics.json``, ``scores.txt``, ``predictions.csv``, ``per_attack.csv``,
``thresholds.csv`` (and the plots, `plots.save_plots`).

evaluate.py is the command line of this module; train.py uses it for ``--seeds --test-data``
and to calibrate a run's decision threshold on its validation part.
"""

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd

from .. import datasets, familiarity, protocols, runs
from ..atomic import write_csv_atomic, write_json_atomic, write_text_atomic
from ..features import array_spec, check_features
from ..models import (head_hidden, logit_parts, logits_from_hidden, predict_batch_size,
                      predict_logits)
from . import calibration as C
from . import metrics as M
from .breakdown import per_attack_table, per_condition_table, score_table
from .plots import save_plots

# -----------------------------------------------------------------------------
OUTPUT_FILES = ("metrics.json", "scores.txt", "scores_2019.txt", "predictions.csv",
                "per_attack.csv", "thresholds.csv")
CONVENTIONS = {
    "score": "log-odds of bonafide: higher = more bonafide (ASVspoof)",
    "eer_tdcf_target": "bonafide; accepted as bonafide when score >= threshold",
    "positive_class": "spoof (label 1) for precision, recall, F1",
    "decision": "spoof when P(spoof) >= threshold"}
# -----------------------------------------------------------------------------


def scores_from_model(run_dir, data=None, which="best", batch_size=None, progress=False):
    """Score a preprocessed folder (default: the run's held-out part) with a run's model. The
    data are checked (manifest, feature parameters, every array) before the model loads.

    Parameters
    ----------
    run_dir : str or Path or runs.Run
        The run, or the run already open (`runs.Run`: its files are not read again).

    Returns
    -------
    table : pandas.DataFrame
        ``utt_id, speaker, attack, label, score, p_spoof`` (`breakdown.score_table`).
    source : dict
        What was scored with what (for metrics.json).
    """
    run = runs.Run.of(run_dir, which)
    if data is None:
        df, folders = run.heldout()
    else:
        df, folders = datasets.load_manifest(data), [str(Path(data))]
    features = datasets.load_features_json(folders[0])
    datasets.check_arrays(df, *array_spec(features))
    # before the model loads (a Whisper model takes seconds)
    check_features(run.features, features, run.model_path, folders[0])
    batch_size = batch_size or predict_batch_size(run.meta)
    shape, dtype = array_spec(run.features)
    ds = datasets.make_dataset(df, batch_size, shape=shape, with_labels=False,
                               kind=run.input_kind, dtype=dtype)
    fitted, _ = run.familiarity  # its unfamiliarity, when fitted
    z = predict_logits(run.model, ds, progress, -(-len(df) // batch_size),
                       with_hidden=fitted is not None)
    table = score_table(df, z if fitted is None else z[0])
    if fitted is not None:
        table["unfamiliarity"] = familiarity.distances(fitted, z[1]) / fitted["threshold"]
    source = {"mode": "model", "run": run.name, "model": run.model_path.name,
              "data": ", ".join(folders), "heldout": data is None,
              "coverage": coverage(len(df), len(df))}
    return table, source


def scores_from_cache(run_dir, data, which="best", batch_size=64):
    """`scores_from_model` for a run whose encoder is frozen (AASIST ``--freeze-encoder``):
    the encoder features of ``data`` are computed once (`feature_cache.cached_features`, kept
    in ``<data>/backbone_cache`` under the encoder's weights' fingerprint, so every run with
    that encoder, any seed, reuses them) and only the head runs per run. Same scores, up to
    float32 rounding. Returns (table, source) as `scores_from_model`."""
    from ..training.feature_cache import cached_features
    from ..models import encoder_frozen

    df, folder = datasets.load_manifest(data), str(Path(data))
    features = datasets.load_features_json(folder)
    datasets.check_arrays(df, *array_spec(features))
    run = runs.Run.of(run_dir, which)
    check_features(run.features, features, run.model_path, folder)
    model = run.model
    if not encoder_frozen(model):
        raise ValueError(f"{run.model_path}: its encoder trains; score it with scores_from_model")
    rows, array = cached_features(model, folder, df, features, progress=False,
                                  kind=run.input_kind)
    _, kernel, bias = logit_parts(model)
    x = array[rows.loc[df["utt_id"], "row"].to_numpy()]
    hidden = np.concatenate([head_hidden(model, x[i:i + batch_size])
                             for i in range(0, len(x), batch_size)] or [np.zeros((0, 1))])
    table = score_table(df, logits_from_hidden(hidden, kernel, bias))
    source = {"mode": "model (cached encoder features)", "run": run.name,
              "model": run.model_path.name, "data": folder, "heldout": False,
              "coverage": coverage(len(df), len(df))}
    return table, source


def scores_from_file(scores_path, protocol, fmt=None, partial=False):
    """Join a score file (any layout `protocols.read_score_file` reads) with a protocol (any
    format `protocols.parse_protocol` reads).

    Parameters
    ----------
    partial : bool
        Accept a score file that does not score every protocol trial (or scores utterances the
        protocol does not list): the report covers the trials with both, and says so beside
        every metric. By default that is refused, as the ASVspoof 2021 package refuses it.

    Returns
    -------
    table : pandas.DataFrame
        ``utt_id, speaker, attack, label, score, p_spoof``; ``p_spoof = sigmoid(-score)``, which
        is a probability only if the scores are log-odds (EER, AUC and t-DCF use the order
        alone).
    source : dict
        What was scored, the detected layout and the ``coverage``.
    """
    scores, layout, keys = protocols.read_score_file(scores_path)
    proto = protocols.parse_protocol(protocol, fmt).set_index("utt_id")
    unknown = scores.index.difference(proto.index)
    common = scores.index.intersection(proto.index, sort=False)
    cov = coverage(len(common), len(proto), len(proto) - len(common), len(unknown))
    if cov["partial"] and not partial:
        raise ValueError(
            f"{scores_path} scores {len(common)} of the {len(proto)} trials of {protocol} "
            f"({cov['unscored']} trials have no score, {cov['unknown']} scores are not in the "
            f"protocol, e.g. {(list(unknown) or list(proto.index.difference(common)))[0]!r}); "
            "pass --partial to evaluate the scored trials only")
    if keys is not None:  # a layout with its own labels: they must agree with the protocol
        wrong = [u for u in common if keys[u] != proto.at[u, "label"]]
        if wrong:
            raise ValueError(f"{scores_path}: the key of {wrong[0]!r} is {keys[wrong[0]]!r}, "
                             f"{protocol} says {proto.at[wrong[0], 'label']!r}")
    proto = proto.loc[common].reset_index()
    table = score_table(proto, -scores.loc[common].to_numpy())
    source = {"mode": "scores", "scores": str(scores_path), "layout": layout,
              "protocol": str(protocol), "protocol_entries_without_score": cov["unscored"],
              "coverage": cov}
    return table, source


def coverage(scored, listed, unscored=0, unknown=0):
    """What share of the trials a report covers: ``scored`` of ``listed``; ``partial`` when any
    listed trial has no score or any score has no trial, with the ``note`` every metric of the
    report then carries."""
    partial = bool(unscored or unknown)
    return {"scored": int(scored), "listed": int(listed), "unscored": int(unscored),
            "unknown": int(unknown), "partial": partial,
            "note": f"partial: {scored} of {listed} trials" if partial else None}


# ----------------------------------------------------------------------------- the numbers


def check_scores(table):
    """Refuse scores that cannot be evaluated: NaN/inf, or fewer than two classes."""
    bad = table.loc[~np.isfinite(table["score"].to_numpy(np.float64)), "utt_id"]
    if len(bad):
        raise ValueError(f"{len(bad)} scores are NaN or inf, e.g. for {bad.iloc[0]!r}")
    counts = table["label"].value_counts()
    if len(counts) < 2:
        raise ValueError(f"evaluation needs bonafide and spoof utterances; got only "
                         f"{counts.index[0]} ({counts.iloc[0]})")


def operating_points(y, score, p, sweep, eer_thr, threshold=None, calibrated=None):
    """Classification metrics at 0.5, at the run's calibrated threshold, at the two oracle
    points of the evaluated data (best F1, EER) and at the chosen threshold (`runs.
    decision_threshold`).

    Returns
    -------
    points : dict
        Name -> metrics (each with ``threshold`` on P(spoof) and ``score_threshold``).
    chosen : float
    source : str
        Where the chosen threshold came from.
    """
    points = {"0.5": M.binary_metrics(y, p, 0.5)}
    if calibrated is not None:  # decided on the score, exactly as calibrated
        t = calibrated["score_threshold"]
        points["calibrated"] = {"threshold": calibrated["threshold"], "score_threshold": t,
                                "method": calibrated["method"],
                                **M.classification_metrics(y, score < t)}
    # these two are chosen on the evaluated data itself: oracle points, not deployable
    points["best_f1"] = M.best_f1(sweep)
    points["eer"] = {"threshold": float(M.sigmoid(-eer_thr)), "score_threshold": eer_thr,
                     **M.classification_metrics(y, score < eer_thr)}  # the reachable point
    chosen, kind = runs.decision_threshold(threshold, calibrated)
    if kind == "explicit":
        points["chosen"] = M.binary_metrics(y, p, chosen)
        source = "--threshold"
    elif kind == "calibrated":
        points["chosen"] = dict(points["calibrated"])
        source = runs.saved_threshold_words(calibrated)
    else:
        points["chosen"] = dict(points["0.5"])
        source = "default 0.5 (no calibrated threshold saved with the run)"
    for point in points.values():
        if "score_threshold" not in point:
            t = point["threshold"]
            point["score_threshold"] = float(np.log((1 - t) / t))
    return points, chosen, source


def apply_calibration(table, cal):
    """The table with calibrated scores (`calibration.apply_llr`): ``score`` becomes the LLR,
    the raw score moves to ``score_raw``, ``p_spoof`` is the posterior at the calibration's
    ``prior_spoof``."""
    llr = C.apply_llr(cal, table["score"].to_numpy(np.float64))
    z = C.posterior_logit(llr, cal.get("prior_spoof", C.PRIOR_SPOOF))
    return table.assign(score_raw=table["score"], score=llr, p_spoof=M.sigmoid(z))


def asvspoof5_block(table, calibration=None):
    """The ASVspoof 5 Track 1 numbers of the report: minDCF (primary), actDCF, Cllr and EER of
    the raw scores and, when ``table`` is calibrated (`apply_calibration`), of the LLRs."""
    y = protocols.targets(table["label"])
    raw = (table["score_raw"] if "score_raw" in table.columns else table["score"]).to_numpy(
        np.float64)
    out = {"cost_model": {"name": "ASVspoof 5 Track 1", **M.COST_5},
           "raw": M.asvspoof5_metrics(raw[y == 0], raw[y == 1]), "calibrated": None,
           "scores": "raw scores, not calibrated log-likelihood ratios: actDCF and Cllr "
                     "measure how far they are from being LLRs"}
    if calibration is not None:
        llr = table["score"].to_numpy(np.float64)
        out.update(calibrated=M.asvspoof5_metrics(llr[y == 0], llr[y == 1]),
                   scores=f"calibrated LLRs (fitted on {calibration.get('data', '?')}); raw: "
                          "the scores before calibration",
                   calibration={k: calibration.get(k) for k in (
                       "weights", "bias", "prior", "prior_spoof", "data", "n_bonafide",
                       "n_spoof")})
    return out


def compute_report(table, threshold=None, asv=None, calibrated=None, calibration=None,
                   warnings=()):
    """Every number of the evaluation, from a table of scores.

    Parameters
    ----------
    table : pandas.DataFrame
        ``utt_id, speaker, attack, label, score, p_spoof``.
    threshold : float, optional
        User's P(spoof) operating point; default the calibrated one, else 0.5.
    calibrated : dict, optional
        The run's calibrated threshold (`metrics.calibrate_threshold` on its validation data).
    asv : pandas.DataFrame, optional
        ASV scores (`protocols.read_asv_scores`) for the min t-DCF.
    calibration : dict, optional
        The calibration ``table`` went through (`apply_calibration`), for the ASVspoof 5
        block: its actDCF and Cllr are then reported raw and calibrated.
    warnings : sequence of str
        The caller's warnings, reported first.

    Returns
    -------
    metrics : dict
        As written to metrics.json (without the file list).
    per_attack, sweep : pandas.DataFrame
        (The per-condition table is ``metrics["per_condition"]``.)
    """
    from sklearn.metrics import roc_auc_score

    check_scores(table)
    warnings = list(warnings)
    y = protocols.targets(table["label"])
    score, p = table["score"].to_numpy(np.float64), table["p_spoof"].to_numpy(np.float64)
    eer, official_thr = M.compute_eer(score[y == 0], score[y == 1])
    eer_thr = M.eer_point(score[y == 0], score[y == 1])[0]
    if eer > 0.5:
        warnings.append(f"EER {eer:.1%} is above 50%, worse than chance: labels or score "
                        "direction look swapped (scores must be higher for bonafide), or the "
                        "detector learned nothing")
    sweep = M.threshold_sweep(y, p)
    points, threshold, source = operating_points(y, score, p, sweep, eer_thr, threshold,
                                                 calibrated)
    if asv is not None:  # None with the reason when undefined; the report is written anyway
        tdcf = {**M.min_tdcf(score[y == 0], score[y == 1], asv), "cost_model": "ASVspoof 2019",
                **M.COST_2019}
        attacks = set(table.loc[table["label"] == "spoof", "attack"])
        sources = set(asv.loc[asv["key"] == "spoof", "source"])
        if attacks and not attacks & sources:  # e.g. the dev ASV file with eval scores
            warnings.append(f"the ASV score file's spoof trials are of attacks "
                            f"{', '.join(sorted(sources)[:6])}, none of which is scored here "
                            f"({', '.join(sorted(attacks)[:6])}): the pooled min t-DCF mixes "
                            "unrelated trials; check --asv-scores")
    else:
        tdcf = {"min_tdcf": None,
                "reason": "not computed: no ASV scores given (--asv-scores, e.g. "
                          "ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt)"}
    per_attack = per_attack_table(table, threshold, asv)
    per_condition = per_condition_table(table)
    report = {
        "threshold": {"value": float(threshold), "source": source},
        "n": {"total": int(len(y)), "bonafide": int((y == 0).sum()), "spoof": int((y == 1).sum())},
        "conventions": CONVENTIONS,
        "eer": eer, "eer_threshold": eer_thr, "eer_threshold_official": official_thr,
        "roc_auc": float(roc_auc_score(y, p)),
        "min_tdcf": tdcf,
        "asvspoof5": asvspoof5_block(table, calibration),
        "per_attack": per_attack.replace({np.nan: None}).to_dict("records"),
        "per_condition": per_condition.astype(object).replace({np.nan: None}).to_dict(
            "records"),
        "operating_points": points,
        "sweep": sweep.to_dict("records"),
        "warnings": warnings,
    }
    return report, per_attack, sweep


# ----------------------------------------------------------------------------- files


def write_outputs(table, report, per_attack, sweep, out_dir, threshold):
    """metrics.json, scores.txt, scores_2019.txt, predictions.csv, per_attack.csv,
    thresholds.csv and, when the scores carry conditions, per_condition.csv, each written
    atomically."""
    out_dir = Path(out_dir)
    # full precision: re-reading gives the same numbers
    write_text_atomic(out_dir / "scores.txt", "".join(
        f"{u} {s:.17g}\n" for u, s in zip(table["utt_id"], table["score"])))
    write_text_atomic(out_dir / "scores_2019.txt", "".join(
        f"{u} {a} {k} {s:.17g}\n" for u, a, k, s in zip(
            table["utt_id"], table["attack"], table["label"], table["score"])))
    pred = table.assign(predicted=np.where(table["p_spoof"] >= threshold, "spoof", "bonafide"))
    pred = pred.rename(columns={"label": "key"})  # the ASVspoof name of the column
    extra = [c for c in ("score_raw", *protocols.CONDITIONS) if c in pred.columns]
    write_csv_atomic(out_dir / "predictions.csv", pred[[
        "utt_id", "speaker", "attack", "key", "score", "p_spoof", "predicted", *extra]])
    write_csv_atomic(out_dir / "per_attack.csv", per_attack)
    if report["per_condition"]:
        write_csv_atomic(out_dir / "per_condition.csv", pd.DataFrame(report["per_condition"]))
    write_csv_atomic(out_dir / "thresholds.csv", sweep)
    write_json_atomic(out_dir / "metrics.json", report)


def write_report(table, source, out_dir, name, threshold=None, asv=None, calibrated=None,
                 plots=True, history=None, calibration=None, warnings=()):
    """Compute the report of a score table and write every output file to ``out_dir``.

    Parameters
    ----------
    table, source :
        From `scores_from_model` or `scores_from_file`.
    out_dir : str or Path
    name : str
        The name of what was evaluated (in metrics.json and the summary).
    threshold, asv, calibrated, calibration, warnings :
        See `compute_report`.
    plots : bool
        Also write the PNG plots (`plots.save_plots`).
    history : str or Path, optional
        A run's ``history.csv``, for the training curves.

    Returns
    -------
    report : dict
        As written to metrics.json, plus ``files`` and ``out_dir``.
    """
    report, per_attack, sweep = compute_report(table, threshold, asv, calibrated, calibration,
                                               warnings)
    threshold = report["threshold"]["value"]
    report = {"name": name, "source": source, **report}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = list(OUTPUT_FILES) + (["per_condition.csv"] if report["per_condition"] else [])
    if plots:
        files += save_plots(table, report, out_dir, history)
    report["files"] = files
    write_outputs(table, report, per_attack, sweep, out_dir, threshold)
    report["out_dir"] = str(out_dir)
    return report


# ----------------------------------------------------------------------------- calibration


@contextlib.contextmanager
def saved_model(run_dir, which, model=None):
    """The run's saved ``which`` model (`runs.MODEL_FILES`). With ``model``, the final model as
    train.py holds it (what it saved as ``model.keras``): that model itself for ``"final"``,
    and for another the same model with the saved weights read in (``load_weights``), its own
    put back on exit; without, loaded from the run folder."""
    if model is None:
        yield runs.Run(run_dir, which).model
    elif which == "final":
        yield model
    else:
        current = model.get_weights()
        model.load_weights(Path(run_dir) / runs.MODEL_FILES[which])
        try:
            yield model
        finally:
            model.set_weights(current)


def calibrate_run(run_dir, method="eer", batch_size=None, val_features=None,
                  val_targets=None, model=None):
    """Choose the decision threshold of each saved model of a run on its validation part and
    write ``threshold.json`` (read by evaluate.py and predict.py as their default).

    Parameters
    ----------
    run_dir : str or Path
    method : str
        See `metrics.calibrate_threshold`.
    val_features : np.ndarray, shape (n_val, *features), optional
        Cached backbone features of the validation part, valid for both models (frozen
        backbone): the head is applied to them instead of a full pass over the spectrograms.
    val_targets : array of {0, 1}, shape (n_val,)
        Targets of ``val_features`` (1 = spoof), required with it.
    model : keras.Model, optional
        With ``val_features``: the final model train.py holds (`saved_model`), so that neither
        saved model is loaded again (about 2 s each for EfficientNetB0 on 2 cores).

    Returns
    -------
    saved : dict
        ``{"best": calibration, "final": calibration}`` (as written), each with the metrics on
        the validation part at 0.5 and at the calibrated threshold (positive class = spoof).
    """
    run_dir = Path(run_dir)
    saved = {}
    for which, name in runs.MODEL_FILES.items():
        if not (run_dir / name).exists():
            continue
        if val_features is not None:
            with saved_model(run_dir, which, model) as m:
                _, kernel, bias = logit_parts(m)  # the last layer, before the sigmoid
                h = head_hidden(m, val_features)
            score = -logits_from_hidden(h, kernel, bias)
            y = np.asarray(val_targets).astype(int)
        else:
            table, _ = scores_from_model(run_dir, None, which, batch_size)
            score, y = table["score"].to_numpy(), protocols.targets(table["label"])
        cal = M.calibrate_threshold(y, score, method)
        p = M.sigmoid(-score)
        cal["validation"] = {
            "at_0.5": M.binary_metrics(y, p, 0.5),
            "calibrated": M.classification_metrics(y, score < cal["score_threshold"])}
        cal["model"] = name
        saved[which] = cal
    write_json_atomic(run_dir / "threshold.json", saved)
    return saved


# ----------------------------------------------------------------------------- several runs


def seed_summary(run_dirs, test_data=None, batch_size=None):
    """Mean and spread over runs that differ only in their seed.

    For each run: its validation EER, and F1 (positive class spoof) at 0.5 and at the
    calibrated threshold on the validation part (optimistic: the threshold was chosen there);
    with ``test_data``, also EER and F1 on that preprocessed folder at the run's calibrated
    threshold (the full report is written to ``<run>/eval/<test folder name>/``).

    Returns
    -------
    per_run : pandas.DataFrame
        One row per run.
    summary : pandas.DataFrame
        Rows mean, std (sample, ddof=1), min, max of every numeric column.
    """
    rows = []
    for run in map(Path, run_dirs):
        opened = runs.Run(run, "best")  # its model is read only to score
        row = {"run": str(run), "seed": opened.config["args"]["seed"]}
        cal = opened.saved_threshold
        if cal is not None:  # calibration scored the validation part already
            row.update({"val_eer": cal["eer"], "val_f1_0.5": cal["validation"]["at_0.5"]["f1"],
                        "val_f1_cal": cal["validation"]["calibrated"]["f1"]})
        else:
            table, _ = scores_from_model(opened, None, "best", batch_size)
            y, score = protocols.targets(table["label"]), table["score"].to_numpy()
            row.update({"val_eer": M.compute_eer(score[y == 0], score[y == 1])[0],
                        "val_f1_0.5": M.binary_metrics(y, table["p_spoof"], 0.5)["f1"]})
        if test_data is not None:
            table, source = scores_from_model(opened, test_data, "best", batch_size)
            name = Path(test_data).resolve().name
            m = write_report(table, source, run / "eval" / name, name, calibrated=cal,
                             plots=False)
            row.update({"test_eer": m["eer"], "test_f1": m["operating_points"]["chosen"]["f1"],
                        "test_recall": m["operating_points"]["chosen"]["recall"]})
        rows.append(row)
    per_run = pd.DataFrame(rows)
    summary = per_run.drop(columns=["run", "seed"]).agg(["mean", "std", "min", "max"])
    return per_run, summary
