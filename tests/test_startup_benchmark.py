"""benchmarks/startup.py: the table of start-up times against the load floor (the timing
itself is a benchmark, run by hand; docs/speed.md states its command and result)."""

import importlib.util

from conftest import REPO

spec = importlib.util.spec_from_file_location("startup", REPO / "benchmarks" / "startup.py")
startup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(startup)


def test_the_table_gives_medians_ranges_and_ratios_to_the_floor():
    times = {"python -c pass": [0.1, 0.3, 0.2],
             "import + load the run (the floor)": [4.0, 5.0, 6.0],
             "predict.py, one file, to its verdict": [7.5, 7.0, 6.0]}
    lines = startup.table(times).splitlines()
    assert lines[2] == "| python -c pass | 0.20 | 0.10-0.30 | 0.04 |"
    assert lines[3] == "| import + load the run (the floor) | 5.00 | 4.00-6.00 | 1.00 |"
    assert lines[4] == "| predict.py, one file, to its verdict | 7.00 | 6.00-7.50 | 1.40 |"
