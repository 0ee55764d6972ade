"""Evaluate a detector the way ASVspoof papers do: EER, min t-DCF, per-attack breakdown, plus the
design card's accuracy, precision, recall and F1 with a threshold sweep.

Conventions (also in docs/metrics.md):

- **score** = log-odds of bonafide, ``log(P(bonafide) / P(spoof))``: higher = more bonafide, the
  ASVspoof convention. ``scores.txt`` is the two-column ``utt_id score`` file that the ASVspoof
  2021 evaluation package reads, ``scores_2019.txt`` the four-column ``utt_id attack key score``
  file of the ASVspoof 2019 tools and AASIST.
- **EER and min t-DCF** take bonafide as the target class (ASVspoof 2019 evaluation plan) and
  are computed exactly as the ASVspoof evaluation packages compute them (docs/metrics.md).
- **precision, recall, F1** take **spoof** as the positive class: recall = share of spoofs caught,
  precision = share of flagged utterances that are spoofs. Spoof when P(spoof) >= threshold.

Three sources of scores, one report:

    python evaluate.py --run runs/baseline                           # the run's held-out part
    python evaluate.py --run runs/baseline --data data/features/eval # any preprocessed folder
    python evaluate.py --scores other_system.txt --protocol ASVspoof2019.LA.cm.eval.trl.txt

Add ``--asv-scores LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt`` for
the min t-DCF. Writes to ``<run>/eval/<name>/`` (or ``--out``): ``metrics.json``, ``scores.txt``
(``utt_id score``), ``scores_2019.txt``, ``predictions.csv``, ``per_attack.csv``,
``thresholds.csv`` and the plots
``roc.png``, ``det.png``, ``score_hist.png``, ``confusion.png``, ``training_curves.png``.
"""

import argparse
import sys
import time
from pathlib import Path

from deepfake_detector import datasets, display, protocols, runs
from deepfake_detector.atomic import write_json_atomic
from deepfake_detector.cli import HelpFormatter, number
from deepfake_detector.evaluation import calibration as C
from deepfake_detector.evaluation import report


def calibration_ids(cal):
    """The utterance ids a saved calibration was fitted on (its ``data``: a preprocessed folder
    or a score file), or None when that is no longer on disk."""
    path = Path(cal.get("data") or "")
    if (path / "manifest.csv").is_file():
        return set(datasets.load_manifest(path)["utt_id"])
    if path.is_file():
        return set(protocols.read_score_file(path)[0].index)
    return None


def fit_calibration(run, which, calibrate_on, calibrate_protocol, prior_spoof,
                    batch_size=None, progress=False):
    """Fit the LLR calibration (`calibration.fit_llr`) on labelled data: a preprocessed folder
    scored by the run's model (``run``: a `runs.Run` or its folder), or a score file with its
    protocol (``run`` None). Returns the calibration (with ``prior_spoof``, ``data``,
    ``created``) and the ids it was fitted on."""
    if run is not None:
        table, _ = report.scores_from_model(run, calibrate_on, which, batch_size, progress)
    else:
        if calibrate_protocol is None:
            raise ValueError("--calibrate-on with a score file needs its labels: "
                             "--calibrate-protocol")
        table, _ = report.scores_from_file(calibrate_on, calibrate_protocol, partial=True)
    cal = C.fit_llr(table["score"], protocols.targets(table["label"]))
    cal.update(prior_spoof=float(prior_spoof), data=str(Path(calibrate_on).resolve()),
               created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    C.check_calibration(cal, f"the calibration fitted on {calibrate_on}")
    return cal, set(table["utt_id"])


def refuse_test_calibration(cal, ids, table, force, warnings):
    """Calibrating on the evaluated utterances themselves makes actDCF and Cllr optimistic:
    refused (``force``: a warning in the report instead)."""
    ids = calibration_ids(cal) if ids is None else ids
    if not ids:
        return
    shared = table["utt_id"][table["utt_id"].isin(ids)]
    if len(shared) == 0:
        return
    what = (f"the calibration ({cal.get('data')}) was fitted on {len(shared)} of the "
            f"{len(table)} evaluated utterances (e.g. {shared.iloc[0][:60]!r})")
    if not force:
        raise ValueError(f"{what}: calibrating on the test data makes actDCF and Cllr "
                         "optimistic. Calibrate on a separate labelled set (--calibrate-on), "
                         "use --no-calibration, or pass --force-calibration-on-test")
    warnings.append(f"{what} (--force-calibration-on-test): actDCF and Cllr are optimistic")


def calibrate_table(table, source, calibrated, run, which, out_dir, calibrate_on,
                    calibrate_protocol, calibration, prior_spoof, force, batch_size=None,
                    progress=False):
    """The evaluated table on the calibrated scale, when there is a calibration: fitted now
    (``calibrate_on``, then saved in the run or ``out_dir``), given (``calibration``), or the
    run's own (``run``: the open `runs.Run`, None in score-file mode; see `evaluate`). The
    run's calibrated threshold moves with it.

    Returns
    -------
    table, calibrated, calibration, warnings
        ``calibration`` None (and the first two unchanged) when there is none.
    """
    cal, ids, warnings = None, None, []
    if calibrate_on is not None:
        cal, ids = fit_calibration(run, which, calibrate_on, calibrate_protocol,
                                   prior_spoof, batch_size, progress)
    elif calibration:
        cal = C.read_calibration(calibration, which)
    elif calibration is not False and run is not None:
        cal = run.calibration
    if cal is None:
        return table, calibrated, None, warnings
    refuse_test_calibration(cal, ids, table, force, warnings)
    if cal.get("warning"):
        warnings.append(cal["warning"])
    if calibrate_on is not None:  # saved once it passed every check
        if run is not None:
            saved = C.write_run_calibration(run.path, which, cal)
        else:
            saved = Path(out_dir) / C.CALIBRATION_FILE
            saved.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(saved, cal)
        source["calibration_saved"] = str(saved)
    return (report.apply_calibration(table, cal), C.translate_threshold(calibrated, cal), cal,
            warnings)


def evaluate(run_dir=None, data=None, which="best", threshold=None,
             batch_size=None, name=None, scores=None, protocol=None, fmt=None,
             asv_scores=None, out=None, plots=True, scored=None, partial=False,
             progress=False, calibrate_on=None, calibrate_protocol=None, calibration=None,
             prior_spoof=C.PRIOR_SPOOF, force_calibration=False):
    """Score (a run's model, or a score file) and write the full report.

    Parameters
    ----------
    run_dir : str or Path or runs.Run, optional
        A run from train.py or an importer (model mode); or the run already open.
    data : str or Path, optional
        Preprocessed folder to score; default the run's held-out part.
    which : {"best", "final"}
    threshold : float, optional
        P(spoof) operating point used for predictions.csv, per-attack detection and the
        confusion matrix; default the run's calibrated threshold (``threshold.json``), else
        0.5. Metrics at 0.5 and at the calibrated threshold are always reported.
    batch_size : int, optional
        Prediction batch; default the model family's (`models.predict_batch_size`).
    name : str, optional
        Output subfolder under ``<run>/eval/``; default ``validation`` (the run's validation
        part) or the data folder's name.
    scores, protocol, fmt : optional
        Score-file mode: a ``utt_id score`` file, its protocol and the protocol's format.
    asv_scores : str or Path, optional
        ASVspoof 2019 ASV score file, for the min t-DCF.
    out : str or Path, optional
        Output folder (overrides the defaults).
    plots : bool
    scored : tuple, optional
        ``(table, source)`` that `report.scores_from_model` returned for this run and data:
        report the same scores again (e.g. at another threshold) without predicting again.
    partial : bool
        Score-file mode: accept a file that does not score every protocol trial (the report
        then says "partial: N of M trials" beside every metric); refused by default.
    progress : bool
        A progress bar while the model scores.
    calibrate_on : str or Path, optional
        Fit an LLR calibration (`fit_calibration`) on this labelled data (a preprocessed folder
        in model mode, a score file in score-file mode, labelled by ``calibrate_protocol``) and
        save it: in the run (``calibration.json``, used from then on by evaluate.py,
        predict.py and serve.py) or in the output folder.
    calibration : str or Path or False, optional
        A saved ``calibration.json`` to apply; default the run's own (model mode); False: none.
    prior_spoof : float
        Prior of spoof for the posterior P(spoof) of calibrated scores.
    force_calibration : bool
        Allow a calibration fitted on evaluated utterances (refused by default).

    Returns
    -------
    metrics : dict
        As written to metrics.json, plus ``files`` and ``out_dir``.
    """
    history = calibrated = run = None
    if scores is not None:
        if protocol is None:
            raise ValueError("--scores needs --protocol (the labels of the scored utterances)")
        table, source = report.scores_from_file(scores, protocol, fmt, partial)
        name = name or Path(scores).stem
        out_dir = Path(out) if out else Path(scores).parent / f"{Path(scores).stem}_eval"
    else:
        run = runs.Run.of(run_dir, which)  # each of its files read once from here on
        table, source = scored or report.scores_from_model(run, data, which, batch_size,
                                                           progress)
        name = name or ("validation" if data is None else Path(data).resolve().name)
        out_dir = Path(out) if out else run.path / "eval" / name
        history = run.path / "history.csv"
        calibrated = run.saved_threshold
    table, calibrated, cal, warnings = calibrate_table(
        table, source, calibrated, run, which, out_dir,
        calibrate_on, calibrate_protocol, calibration, prior_spoof, force_calibration,
        batch_size, progress)
    asv = protocols.read_asv_scores(asv_scores) if asv_scores else None
    return add_selective(report.write_report(table, source, out_dir, name, threshold, asv,
                                             calibrated, plots, history, cal, warnings), table)


def add_selective(metrics, table):
    """For a run with a familiarity fit (an ``unfamiliarity`` column): what abstaining buys
    (`familiarity.selective`), into ``metrics`` and ``selective.json``. Returns ``metrics``."""
    if "unfamiliarity" in table.columns:
        from deepfake_detector import familiarity
        from deepfake_detector.atomic import write_json_atomic

        metrics["selective"] = familiarity.selective(table, metrics["threshold"]["value"])
        write_json_atomic(Path(metrics["out_dir"]) / "selective.json", metrics["selective"])
        metrics["files"].append("selective.json")
    return metrics


def format_selective(selective):
    """The risk-coverage lines of the report (`familiarity.selective`), or none."""
    if not selective:
        return []
    lines = ["", "answered vs left uncertain (most familiar first; unfamiliarity: "
                 "scripts/fit_familiarity.py):",
             f"{'answered':>9s} {'n':>6s} {'EER':>8s} {'accuracy':>9s} {'unfamiliarity<=':>16s}"]
    for key, r in [(f"{r['coverage']:.0%}", r) for r in selective["levels"]] + [
            ("<= 1", selective["at_fit"])]:
        eer = f"{r['eer']:.2%}" if r["eer"] is not None else "-"
        acc = f"{r['accuracy']:.3f}" if r["accuracy"] is not None else "-"
        top = f"{r['max_unfamiliarity']:.3g}" if r["max_unfamiliarity"] is not None else "-"
        lines.append(f"{key:>9s} {r['n']:6d} {eer:>8s} {acc:>9s} {top:>16s}")
    return lines


def format_asvspoof5(block, mark=""):
    """The summary lines of the ASVspoof 5 metrics (`report.asvspoof5_block`)."""
    c, raw, cal = block["cost_model"], block["raw"], block["calibrated"]
    lines = [f"ASVspoof 5 (bonafide = target; P_spoof {c['p_spoof']:g}, C_miss {c['c_miss']:g}, "
             f"C_fa {c['c_fa']:g}): minDCF {raw['min_dcf']:.4f}{mark}"]
    if cal is None:
        lines.append(f"  raw scores (not calibrated LLRs): actDCF {raw['act_dcf']:.4f}, Cllr "
                     f"{raw['cllr']:.4f} bits{mark} (calibrate: --calibrate-on DEV_DATA)")
    else:
        lines.append(f"  actDCF {raw['act_dcf']:.4f} raw -> {cal['act_dcf']:.4f} calibrated, "
                     f"Cllr {raw['cllr']:.4f} -> {cal['cllr']:.4f} bits{mark} (calibration "
                     f"fitted on {block['calibration']['data']})")
    return lines


def format_conditions(rows, mark=""):
    """The per-condition table of the summary (`breakdown.per_condition_table`), or nothing."""
    if not rows:
        return []
    lines = ["", f"per condition (bonafide vs spoof within each){mark}:",
             f"{'factor':>20s} {'condition':>16s} {'bona':>6s} {'spoof':>6s} {'EER':>8s} "
             f"{'minDCF':>7s} {'Cllr':>7s}"]
    for r in rows:
        ok = r["eer"] is not None
        lines.append(f"{r['factor'][:20]:>20s} {r['condition'][:16]:>16s} {r['n_bonafide']:6d} "
                     f"{r['n_spoof']:6d} " + (f"{r['eer']:8.2%} {r['min_dcf']:7.4f} "
                                               f"{r['cllr']:7.3f}" if ok else
                                               f"{'-':>8s} {'-':>7s} {'-':>7s}"))
    return lines


def format_report(metrics):
    """A human-readable summary of `evaluate`'s result."""
    n, src = metrics["n"], metrics["source"]
    cov = src.get("coverage") or {}
    mark = f" [{cov['note']}]" if cov.get("partial") else ""
    what = (f"{src['run']} ({src['model']}) on {metrics['name']} [{src['data']}]"
            if src["mode"] == "model" else
            f"{src['scores']} ({src.get('layout', '2021')} layout) with {src['protocol']}")
    tdcf = metrics["min_tdcf"]
    lines = [f"{what}: {n['total']} utterances, {n['bonafide']} bonafide, {n['spoof']} spoof",
             *(["note: the run's validation part: it chose best.keras and the calibrated "
                "threshold, so its numbers are optimistic; for an estimate, evaluate data the "
                "run never saw (--data)"] if src.get("heldout") else []),
             f"coverage: {cov.get('scored', n['total'])} of {cov.get('listed', n['total'])} "
             f"trials scored; {cov.get('unscored', 0)} listed trials without a score, "
             f"{cov.get('unknown', 0)} scores of unlisted utterances",
             f"pooled EER: {metrics['eer']:.2%}{mark} (bonafide = target; accepted from score "
             f"{metrics['eer_threshold']:.4g})",
             f"min t-DCF: {tdcf['min_tdcf']:.4f}{mark} (ASVspoof 2019 cost model)"
             if tdcf["min_tdcf"] is not None else f"min t-DCF: n/a, {tdcf['reason']}",
             *format_asvspoof5(metrics["asvspoof5"], mark),
             f"ROC AUC: {metrics['roc_auc']:.4f}{mark}", "", "per attack (EER and minDCF vs all "
             f"bonafide; detected = share called spoof at the chosen threshold){mark}:",
             f"{'attack':>12s} {'n':>6s} {'EER':>8s} {'minDCF':>7s} {'detected':>9s} "
             f"{'min t-DCF':>10s}"]
    notes = []
    for r in metrics["per_attack"]:
        eer = f"{r['eer']:.2%}" if r["eer"] is not None else "-"
        mdcf = f"{r['min_dcf']:.4f}" if r.get("min_dcf") is not None else "-"
        td = f"{r['min_tdcf']:.4f}" if r["min_tdcf"] is not None else "-"
        if r["min_tdcf"] is None and r.get("min_tdcf_note") and r["attack"] != "bonafide":
            td = "n/a"
            notes.append(f"  {r['attack']}: min t-DCF {r['min_tdcf_note']}")
        lines.append(f"{r['attack']:>12s} {r['n']:6d} {eer:>8s} {mdcf:>7s} "
                     f"{r['detected']:9.3f} {td:>10s}")
    lines += [n for n in notes if "no ASV scores" not in n]
    lines += format_conditions(metrics.get("per_condition") or [], mark)
    hdr = (f"{'point':>10s} {'P(spoof)>=':>10s} {'score<=':>9s} {'acc':>6s} {'prec':>6s} "
           f"{'recall':>6s} {'F1':>6s}")
    thr = metrics["threshold"]
    lines += ["", f"operating points{mark} (positive class = spoof; chosen = "
                  f"{display.format_threshold(thr['value'])}, "
                  f"{thr['source']}; best_f1 and eer are picked on this data itself, "
                  "for reference only):", hdr]
    for key, m in metrics["operating_points"].items():
        lines.append(f"{key:>10s} {display.format_threshold(m['threshold']):>10s} "
                     f"{m['score_threshold']:9.4g} "
                     f"{m['accuracy']:6.3f} {m['precision']:6.3f} {m['recall']:6.3f} "
                     f"{m['f1']:6.3f}")
    lines += ["", f"threshold sweep{mark} (every 0.1; all 99 thresholds in thresholds.csv):",
              f"{'P(spoof)>=':>10s} {'acc':>6s} {'prec':>6s} {'recall':>6s} {'F1':>6s}"]
    for m in metrics["sweep"]:
        if round(m["threshold"] * 100) % 10 == 0:
            lines.append(f"{m['threshold']:10.2f} {m['accuracy']:6.3f} {m['precision']:6.3f} "
                         f"{m['recall']:6.3f} {m['f1']:6.3f}")
    return "\n".join(lines + format_selective(metrics.get("selective")))


def build_parser():
    """The command line of evaluate.py."""
    ap = argparse.ArgumentParser(
        description="Evaluate a run (or a score file): EER, min t-DCF, per-attack EER, ROC AUC, "
                    "and accuracy/precision/recall/F1 (positive class = spoof) over thresholds.",
        formatter_class=HelpFormatter)
    ap.add_argument("--run", help="run folder from train.py (default: the newest under runs/)")
    ap.add_argument("--data", help="preprocessed folder to evaluate (default: the run's "
                                   "validation part, which chose best.keras and the threshold: "
                                   "optimistic)")
    ap.add_argument("--model", choices=tuple(runs.MODEL_FILES), default="best",
                    help="best.keras (best validation --monitor of train.py, by default the "
                         "lowest loss) or model.keras (last epoch)")
    ap.add_argument("--scores", help="evaluate this score file instead of a model (higher = "
                                     "more bonafide; 'utt_id score', 'utt_id attack key score' "
                                     "or 'speaker utt_id - attack key score', detected); needs "
                                     "--protocol")
    ap.add_argument("--partial", action="store_true",
                    help="accept a score file that does not score every protocol trial (the "
                         "report says 'partial: N of M trials' beside every metric)")
    ap.add_argument("--protocol", help="protocol/key file giving the labels and attacks of "
                                       "--scores (any format preprocess.py reads)")
    ap.add_argument("--format", choices=protocols.FORMATS,
                    help="format of --protocol (default: detected)")
    ap.add_argument("--asv-scores", help="ASVspoof 2019 ASV score file "
                                         "(ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt) "
                                         "for the min t-DCF")
    ap.add_argument("--threshold", type=float,
                    help="operating point on P(spoof) for predictions.csv, per-attack detection "
                         "and the confusion matrix (default: the run's calibrated threshold, "
                         "else 0.5); metrics at 0.5 and at the calibrated threshold are always "
                         "reported")
    ap.add_argument("--batch-size", type=number(int, 1, 4096),
                    help="prediction batch size (default: the model family's: 32, 8 for "
                         "aasist, whose activations take about 0.25 GB per utterance)")
    ap.add_argument("--name", help="output subfolder under <run>/eval/ (default: 'validation' "
                                   "or the data folder's name)")
    ap.add_argument("--out", help="output folder (default: <run>/eval/<name>, or "
                                  "<scores>_eval/ beside a score file)")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    cal = ap.add_argument_group(
        "calibration to log-likelihood ratios (actDCF and Cllr need them; EER and minDCF do "
        "not change)")
    cal.add_argument("--calibrate-on", metavar="DATA",
                     help="fit llr = a * score + b (prior-weighted logistic regression) on this "
                          "labelled data: a preprocessed folder scored by the run's model "
                          "(saved in <run>/calibration.json and used from then on by "
                          "evaluate.py, predict.py and serve.py), or with --scores a score file "
                          "labelled by --calibrate-protocol (saved as calibration.json in the "
                          "output folder). Refused when it shares utterances with the "
                          "evaluated data")
    cal.add_argument("--calibrate-protocol", metavar="PROTOCOL",
                     help="protocol giving the labels of a --calibrate-on score file")
    cal.add_argument("--calibration", metavar="FILE",
                     help="apply this saved calibration.json (default: the run's own, if any)")
    cal.add_argument("--no-calibration", action="store_true",
                     help="report the raw scores even when the run has a calibration")
    cal.add_argument("--prior-spoof", type=number(float, 0, 1, above=True), default=C.PRIOR_SPOOF,
                     help="with --calibrate-on: prior of spoof at which calibrated scores become "
                          "the posterior P(spoof) (saved with the calibration)")
    cal.add_argument("--force-calibration-on-test", action="store_true",
                     help="allow a calibration fitted on utterances that are also evaluated "
                          "(actDCF and Cllr are then optimistic; the report says so)")
    return ap


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.threshold is not None and not 0 < args.threshold < 1:
        ap.error("--threshold must be in (0, 1)")
    if args.prior_spoof >= 1:
        ap.error("--prior-spoof must be below 1")
    if args.calibrate_on and (args.calibration or args.no_calibration):
        ap.error("--calibrate-on fits a calibration: it goes without --calibration and "
                 "--no-calibration")
    for flag, path, need in (("--data", args.data, "manifest.csv"), ("--run", args.run, ""),
                             ("--scores", args.scores, ""), ("--protocol", args.protocol, ""),
                             ("--calibration", args.calibration, ""),
                             ("--calibrate-protocol", args.calibrate_protocol, ""),
                             ("--calibrate-on", args.calibrate_on,
                              "" if args.scores else "manifest.csv")):
        if path and not (Path(path) / need).exists():  # before anything heavy is imported
            ap.error(f"{flag} {path}: no such {'preprocessed folder' if need else 'file'}"
                     + (" (no manifest.csv: run preprocess.py first)" if need else ""))
    try:
        run_dir = None
        if args.scores is None:
            run_dir = Path(args.run) if args.run else runs.find_latest_run()
        metrics = evaluate(run_dir, args.data, args.model, args.threshold, args.batch_size,
                           args.name, args.scores, args.protocol, args.format, args.asv_scores,
                           args.out, not args.no_plots, partial=args.partial,
                           progress=True, calibrate_on=args.calibrate_on,
                           calibrate_protocol=args.calibrate_protocol,
                           calibration=False if args.no_calibration else args.calibration,
                           prior_spoof=args.prior_spoof,
                           force_calibration=args.force_calibration_on_test)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:  # --out is a file or under one, a full disk, no permission
        raise SystemExit(f"error: cannot write the report: {e}") from None
    for w in metrics["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(format_report(metrics))
    print(f"\nwritten to {metrics['out_dir']}/: {', '.join(metrics['files'])}")
    return metrics


if __name__ == "__main__":
    main()
