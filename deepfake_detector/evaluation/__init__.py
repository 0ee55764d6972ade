"""From scores to numbers people can trust: the ASVspoof metrics exactly as the field defines
them (``metrics``: EER, min t-DCF, the ASVspoof 5 minDCF/actDCF/Cllr, precision, recall and F1
with spoof as the positive class), score calibration to log-likelihood ratios
(``calibration``), the score table and its breakdown by attack and condition
(``breakdown``), the plots (``plots``), and, reading a run, the report evaluate.py and
train.py write (``report``).

Every module here but ``report`` builds on the core alone, so the run level and inference can
use the metrics and calibration; ``report`` sits on top (see the package docstring).
"""
