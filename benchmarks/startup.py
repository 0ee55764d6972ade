"""Start-up: how long a user waits for the first verdict, against the floor of that wait.

    python benchmarks/startup.py --run runs/aasist_l --file recording.flac --json benchmarks/startup.json

Each measurement is a fresh process, repeated ``--repeat`` times (the median is reported, with
the smallest and largest):

- ``python -c pass``: the interpreter alone;
- ``import tensorflow``: the floor of every command that scores;
- ``import + load the run``: TensorFlow and the run's model loaded (`runs.load_run`), the floor
  of a first verdict: no command can answer before it;
- ``predict.py --run RUN FILE``: the whole command, to its printed verdict;
- ``serve.py --run RUN``: from launch until ``/health`` answers, and then the first upload of
  ``FILE`` (its own latency).

Prints a Markdown table (seconds, and each command over the load floor) and writes ``--json``.
Timings on a shared 2-core VM vary by 20-30%: compare ratios of one run.
"""

import argparse
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deepfake_detector.atomic import write_json_atomic  # noqa: E402
from deepfake_detector.cli import HelpFormatter, number  # noqa: E402

# -----------------------------------------------------------------------------
REPEAT = 3
SERVE_TIMEOUT_S = 300
# -----------------------------------------------------------------------------


def timed(argv):
    """Seconds one command takes to exit (it must exit 0)."""
    start = time.perf_counter()
    subprocess.run(argv, cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def upload(url, path):
    """POST ``path`` to ``url`` as the multipart field ``file``; the response's JSON."""
    boundary = "startupbenchmark"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\""
            f"{Path(path).name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode() \
        + Path(path).read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, body, {"Content-Type":
                                                 f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=SERVE_TIMEOUT_S) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def server(run, *extra):
    """A fresh ``serve.py --run RUN`` on a free port: yields (its URL, seconds until /health
    answered); stopped on exit."""
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "serve.py", "--run", str(run), "--port", str(port),
                             *extra], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None or time.perf_counter() - start > SERVE_TIMEOUT_S:
                raise RuntimeError(f"serve.py --run {run} did not answer /health")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def scored_upload(url, path):
    """Seconds one upload of ``path`` to ``url``/predict takes; it must be scored."""
    t = time.perf_counter()
    result = upload(f"{url}/predict", path)
    if result["results"][0]["status"] != "ok":
        raise RuntimeError(f"the upload of {path} was not scored: {result}")
    return time.perf_counter() - t


def serve_times(run, path):
    """(seconds until /health answers, seconds of the first upload) of one fresh server."""
    with server(run) as (url, ready):
        return ready, scored_upload(url, path)


def measure(run, path, repeat=REPEAT):
    """Every measurement of the module docstring, ``repeat`` times: name -> list of seconds."""
    py = sys.executable
    load = ("from deepfake_detector import runs; runs.load_run(" + repr(str(run)) + ")")
    commands = {"python -c pass": [py, "-c", "pass"],
                "import tensorflow": [py, "-c", "import tensorflow"],
                "import + load the run (the floor)": [py, "-c", load],
                "predict.py, one file, to its verdict": [py, "predict.py", "--run", str(run),
                                                         str(path)]}
    out = {name: [] for name in [*commands, "serve.py, until /health answers",
                                 "serve.py, first upload"]}
    for _ in range(repeat):
        for name, argv in commands.items():
            out[name].append(timed(argv))
        ready, first = serve_times(run, path)
        out["serve.py, until /health answers"].append(ready)
        out["serve.py, first upload"].append(first)
    return out


def table(times):
    """Markdown: median, range, and the median over the load floor's."""
    floor = statistics.median(times["import + load the run (the floor)"])
    lines = ["| measurement | median s | range s | / floor |", "|---|---|---|---|"]
    for name, values in times.items():
        m = statistics.median(values)
        lines.append(f"| {name} | {m:.2f} | {min(values):.2f}-{max(values):.2f} | "
                     f"{m / floor:.2f} |")
    return "\n".join(lines)


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--run", required=True, help="the run folder every command loads")
    ap.add_argument("--file", required=True, help="one recording to score")
    ap.add_argument("--repeat", type=number(int, 1, 100), default=REPEAT,
                    help="fresh processes per measurement (the median is reported)")
    ap.add_argument("--json", help="also write every time to this JSON file")
    return ap


def publish(text, results, json_path=None):
    """Print a benchmark's report ``text`` and, with ``json_path``, write ``results`` there
    (atomically, strict JSON); returns ``results``."""
    print(text)
    if json_path:
        write_json_atomic(json_path, results)
    return results


def existing(*paths):
    """``paths`` as absolute Paths; one clear error line for the first that does not exist."""
    for path in map(Path, paths):
        if not path.exists():
            raise SystemExit(f"error: {path} does not exist")
    return [Path(p).resolve() for p in paths]


def main(argv=None):
    args = build_parser().parse_args(argv)
    times = measure(*existing(args.run, args.file), args.repeat)
    publish(table(times), {"run": str(args.run), "file": str(args.file), "seconds": times},
            args.json)
    return times


if __name__ == "__main__":
    main()
