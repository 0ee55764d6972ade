"""Fuse several countermeasures into one score: a weighted sum of their scores whose weights
and offset are fitted by prior-weighted logistic regression on a labelled development set (the
linear fusion of the BOSARIS toolkit, which the ASVspoof 5 organisers' fusion tool also does).
The fused score is a calibrated log-likelihood ratio (higher = more bonafide).

    P=data/LA/ASVspoof2019_LA_cm_protocols
    python scripts/fuse_scores.py --dev runs/aasist/eval/dev runs/lcnn/eval/dev \\
        --dev-protocol $P/ASVspoof2019.LA.cm.dev.trl.txt \\
        --apply runs/aasist/eval/eval runs/lcnn/eval/eval --out runs/fused/eval_scores.txt
    python evaluate.py --scores runs/fused/eval_scores.txt \\
        --protocol $P/ASVspoof2019.LA.cm.eval.trl.txt

Each system is a score file in any layout evaluate.py reads, or an evaluate.py output folder
(its ``scores.txt``), given in the same order for ``--dev`` and ``--apply``. Every system must
score the same utterances (refused otherwise: a fused score needs every system's). Writes the
fused scores (``utt_id score``, the ASVspoof 2021 layout) and, beside them, ``<out>.fusion.json``:
the weights, offset, systems and development data, with Cllr on the development set per system
and fused. Fitting and applying on the same utterances is refused unless ``--allow-same-data``.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepfake_detector.evaluation import calibration as C  # noqa: E402
from deepfake_detector.evaluation import metrics as M  # noqa: E402
from deepfake_detector import protocols  # noqa: E402
from deepfake_detector.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from deepfake_detector.cli import HelpFormatter  # noqa: E402


def score_path(system):
    """A system's score file: the path itself, or ``scores.txt`` in an evaluate.py folder."""
    path = Path(system)
    return path / "scores.txt" if path.is_dir() else path


def score_matrix(systems):
    """The scores of every system on their common utterances.

    Returns
    -------
    scores : pandas.DataFrame
        One column per system (in order), indexed by utterance id.

    Raises
    ------
    ValueError
        When the systems do not score the same utterances.
    """
    columns = []
    for i, system in enumerate(systems):
        s, _, _ = protocols.read_score_file(score_path(system))
        if not np.isfinite(s.to_numpy()).all():
            raise ValueError(f"{score_path(system)}: NaN or inf scores")
        columns.append(s.rename(f"system{i + 1}"))
    ids = columns[0].index
    for system, col in zip(systems[1:], columns[1:]):
        if set(col.index) != set(ids):
            extra = col.index.difference(ids)
            missing = ids.difference(col.index)
            raise ValueError(f"{score_path(system)} does not score the utterances of "
                             f"{score_path(systems[0])}: {len(missing)} missing, {len(extra)} "
                             f"extra (e.g. {(list(missing) or list(extra))[0][:60]!r})")
    return pd.concat(columns, axis=1).loc[ids]


def fit_fusion(dev, protocol, prior=C.PRIOR):
    """Fit the fusion on labelled development scores (`calibration.fit_llr` on one column per
    system). Returns the fusion (weights, bias, and Cllr of each system and of the fusion on the
    development set)."""
    x = score_matrix(dev)
    labels = protocols.parse_protocol(protocol).set_index("utt_id")["label"]
    unknown = x.index.difference(labels.index)
    if len(unknown):
        raise ValueError(f"{len(unknown)} development utterances are not in {protocol}, e.g. "
                         f"{unknown[0][:60]!r}")
    t = protocols.targets(labels.loc[x.index])
    fusion = C.fit_llr(x.to_numpy(), t, prior)
    fused = C.apply_llr(fusion, x.to_numpy())
    fusion["cllr_dev"] = {"systems": [M.cllr(x.iloc[t == 0, i], x.iloc[t == 1, i])
                                      for i in range(x.shape[1])],
                          "fused": M.cllr(fused[t == 0], fused[t == 1])}
    fusion["eer_dev"] = {"systems": [M.compute_eer(x.iloc[t == 0, i], x.iloc[t == 1, i])[0]
                                     for i in range(x.shape[1])],
                         "fused": M.compute_eer(fused[t == 0], fused[t == 1])[0]}
    fusion.update(dev=[str(score_path(s)) for s in dev], dev_protocol=str(protocol),
                  created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return fusion, set(x.index)


def fuse(dev, protocol, apply, out, prior=C.PRIOR, allow_same_data=False):
    """Fit on ``dev`` and write the fused scores of ``apply`` to ``out`` and the fusion to
    ``<out>.fusion.json``. Returns the fusion and the fused scores (pandas.Series)."""
    if len(dev) != len(apply):
        raise ValueError(f"{len(dev)} development systems but {len(apply)} to apply: give the "
                         "same systems in the same order")
    if len(dev) < 1:
        raise ValueError("no systems given")
    if Path(out).is_dir() or str(out).endswith(("/", os.sep)):
        raise ValueError(f"--out {out} is a folder; name the fused score file to write (e.g. "
                         f"{Path(out) / 'fused_scores.txt'})")
    fusion, dev_ids = fit_fusion(dev, protocol, prior)
    x = score_matrix(apply)
    shared = x.index[x.index.isin(dev_ids)]
    if len(shared) and not allow_same_data:
        raise ValueError(f"{len(shared)} of the {len(x)} utterances to fuse were used to fit "
                         f"the fusion (e.g. {shared[0][:60]!r}): fused scores of the "
                         "development data are optimistic; pass --allow-same-data to do it "
                         "anyway")
    fused = pd.Series(C.apply_llr(fusion, x.to_numpy()), index=x.index)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fusion["applied_to"] = [str(score_path(s)) for s in apply]
    write_json_atomic(Path(f"{out}.fusion.json"), fusion)
    write_text_atomic(out, "".join(f"{u} {s:.17g}\n" for u, s in fused.items()))
    return fusion, fused


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--dev", nargs="+", required=True, metavar="SYSTEM",
                    help="each system's scores of the labelled development set (score files or "
                         "evaluate.py output folders)")
    ap.add_argument("--dev-protocol", required=True,
                    help="protocol with the labels of the development utterances (any format "
                         "preprocess.py reads)")
    ap.add_argument("--apply", nargs="+", required=True, metavar="SYSTEM",
                    help="the same systems' scores of the data to fuse, in the same order")
    ap.add_argument("--out", required=True,
                    help="fused score file to write ('utt_id score'); the fusion goes to "
                         "<out>.fusion.json")
    ap.add_argument("--allow-same-data", action="store_true",
                    help="allow fusing utterances the fusion was fitted on (optimistic)")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        fusion, fused = fuse(args.dev, args.dev_protocol, args.apply, args.out,
                             allow_same_data=args.allow_same_data)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:  # --out under a file, no permission, a full disk
        raise SystemExit(f"error: {args.out}: cannot write ({e.strerror or e})") from None
    cllr, eer = fusion["cllr_dev"], fusion["eer_dev"]
    for i, s in enumerate(fusion["dev"]):
        print(f"system{i + 1} {s}: weight {fusion['weights'][i]:.4g}, dev EER "
              f"{eer['systems'][i]:.2%}, Cllr {cllr['systems'][i]:.4f} bits")
    print(f"fused (bias {fusion['bias']:.4g}): dev EER {eer['fused']:.2%}, Cllr "
          f"{cllr['fused']:.4f} bits (fitted on these data: optimistic)")
    print(f"written: {args.out} ({len(fused)} scores, calibrated LLRs), {args.out}.fusion.json")
    if fusion.get("warning"):
        print(f"warning: {fusion['warning']}", file=sys.stderr)
    return fusion


if __name__ == "__main__":
    main()
