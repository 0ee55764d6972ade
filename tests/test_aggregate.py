"""The window rules that turn a recording's windows into one verdict (deepfake_detector.aggregate)."""

import numpy as np
import pytest
from scipy.special import expit, logit

from deepfake_detector import aggregate


def test_each_rule_gives_its_value_and_the_windows_that_decided():
    z = np.array([-3.0, 2.0, np.nan, 1.0, 4.0, -1.0])  # window 2 silent
    assert aggregate.combine(z, "max") == (4.0, [4])
    value, deciding = aggregate.combine(z, "mean")
    assert value == pytest.approx(logit(np.mean(expit(z[~np.isnan(z)]))))
    assert deciding == [0, 1, 3, 4, 5]
    # run:2: the pairs of consecutive scored windows (the silent one skipped) and their lows:
    # (0,1) -3, (1,3) 1, (3,4) 1, (4,5) -1: the first highest pair decides
    assert aggregate.combine(z, "run:2") == (1.0, [1, 3])
    assert aggregate.combine(z, "run:3") == (1.0, [1, 3, 4])
    # fewer scored windows than K: all of them must be spoof-like (the lowest decides)
    assert aggregate.combine(z, "run:9") == (-3.0, [0, 1, 3, 4, 5])
    assert aggregate.combine(np.array([0.5]), "run:4") == (0.5, [0])


def test_run_k_is_spoof_exactly_when_k_consecutive_windows_reach_the_threshold():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n, k, t = int(rng.integers(1, 12)), int(rng.integers(1, 6)), rng.normal()
        z = rng.normal(size=n)
        above = z >= t
        want = all(above) if n < k else any(above[i:i + k].all() for i in range(n - k + 1))
        value, deciding = aggregate.combine(z, f"run:{k}")
        assert (value >= t) == want
        assert len(deciding) == min(k, n) and np.diff(deciding).tolist() == [1] * (len(
            deciding) - 1)
        assert value == z[deciding].min()


def test_rules_are_checked_and_described():
    assert aggregate.check("run:04") == "run:4"
    for bad in ("median", "run:0", "run:x", "run:", f"run:{aggregate.MAX_RUN + 1}", None):
        with pytest.raises(ValueError, match="is not a window rule: max, mean or run:K"):
            aggregate.check(bad)
    with pytest.raises(ValueError, match="no scored window"):
        aggregate.combine(np.array([np.nan, np.nan]), "max")
    assert aggregate.describe("max") == "the most spoof-like window"
    assert aggregate.describe("run:4", 10.04) == (
        "4 consecutive windows (about 10 s) at or above the threshold (all of them in a "
        "shorter recording)")
    assert aggregate.DEFAULT == "run:4"
