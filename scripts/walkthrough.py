"""Walk through README as a new user would: every command of its code blocks, in order, in a
fresh copy of the repository, so that README cannot drift from what runs.

    python scripts/walkthrough.py --fast      # CI (tests/test_walkthrough.py): small data, 1 epoch
    python scripts/walkthrough.py             # the commands at README's own sizes (an hour or more)

The copy holds the repository's tracked files (as they are in the working tree) and, beside it,
a link to ``../shared`` when there is one. Before the first command the walkthrough makes what
README's commands name as the user's own files: ``my_labels.csv`` and ``my_audio/`` (labelled
recordings), ``other_corpus.csv``, ``recording.wav``, ``call.mp3``, ``interviews/``, and
``data/LA``: a generated corpus in the ASVspoof 2019 LA layout standing in for the download
(`scripts/make_demo_corpus.py`; real recordings from ``../shared`` where it has them).

Each README command is matched by the first rule of `PLAN` that fits it, and is then

- **run** in the copy by bash, with what no offline machine has replaced and said so (the
  ImageNet download by ``--weights none``, GitHub's AASIST by the same checkpoint from
  ``../shared/models/aasist``, ``/that/folder`` by that folder, the server's port); ``--fast``
  adds what shrinks it (one epoch, 4 Piper spoofs, small corpora). Each must exit 0 and leave
  what the rule expects (a file, or words in its output);
- or **skipped**, with the reason (it installs packages, needs the network, or is this check).

Any other command runs as written, so a command added to README is run from the day it is
written; one that cannot run offline needs a rule in `PLAN` that says why it is skipped. Prints
one line per command (ran, seconds and what was changed / skipped, why) and exits 1 at the first
failure with the tail of that command's output.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deepfake_detector.cli import HelpFormatter  # noqa: E402

# -----------------------------------------------------------------------------
SHARED = REPO.parent / "shared"
AASIST_DIR = SHARED / "models" / "aasist"
MINI_DEV = SHARED / "data" / "asvspoof2019_la_mini" / "LA" / "ASVspoof2019_LA_dev" / "flac"
DEMO_SIZES = ["--train", "24", "--dev", "12", "--eval", "12"]  # data/LA with --fast
TIMEOUT_S = 3600  # longest one command may run
START = re.compile(r"(?:[A-Z_]+=\S+ )*(?:python|bash|pip|curl)\b")
# -----------------------------------------------------------------------------


def readme_commands(text):
    """The shell commands of README's indented code blocks, in order: continuation lines joined,
    trailing comments dropped. Lines that are not commands (a label file's rows) are left out.

    Returns
    -------
    commands : list of str
    """
    out = []
    for line in re.sub(r"\s*\\\n\s*", " ", text).splitlines():
        if not line.startswith("    ") or not START.match(line.strip()):
            continue
        out.append(re.split(r"\s{2,}#|\s#\s", line.strip())[0].strip())
    return out


def skip(reason):
    return {"skip": reason}


# (pattern, rule): the first pattern found in a command decides. A rule either skips, or runs
# with ``fast`` / ``always`` (what to append, or a function of the command) and ``expect``.
PLAN = [
    (r"^python -m venv", skip("makes a virtual environment; the walkthrough runs in the one "
                              "installed from the same requirements files")),
    (r"^(python -m )?pip install", skip("installs packages; already installed from these files")),
    (r"^python -m pytest", skip("the test suite, of which this walkthrough is one test")),
    (r"quickstart\.sh imagenet", skip("downloads the ImageNet weights (network)")),
    (r"quickstart\.sh", {"fast": lambda c: f"DEMO_CORPUS_ARGS='{' '.join(DEMO_SIZES[:4])}' "
                                            + c + (" lcnn 1" if c.endswith("quickstart.sh")
                                                   else " 1"),
                         "expect": ["runs/demo/eval/demo_dev/metrics.json"]}),
    (r"import_aasist\.py AASIST --run", {
        "always": lambda c: f"AASIST_WEIGHTS={AASIST_DIR} {c}", "needs": AASIST_DIR,
        "note": "GitHub's checkpoint replaced by the same file from ../shared (sha256 checked)"}),
    (r"import_aasist\.py", {"always": lambda c: c.replace("/that/folder", str(AASIST_DIR)),
                            "needs": AASIST_DIR}),
    (r"predict\.py --run runs/aasist\b", {"needs": AASIST_DIR, "expect": ["recording.wav"]}),
    (r"evaluate\.py --run runs/aasist\b", {"needs": AASIST_DIR, "expect": ["written to"]}),
    (r"^python train\.py", {
        "always": lambda c: c if re.search(r"--(model|weights)\b", c) else c + " --weights none",
        "fast": " --epochs 1", "note": "--weights none where the design card would download "
                                       "the ImageNet weights"}),
    (r"train_offline\.py", {"fast": " --piper 4"}),
    (r"^python serve\.py", {"serve": True}),
    (r"^curl", {"always": lambda c: c.replace("127.0.0.1:8000", "127.0.0.1:{port}"),
                "expect": ['"results"']}),
    (r"^python evaluate\.py", {"expect": ["written to"]}),
    (r"^python predict\.py", {"expect": ["P(spoof)"]}),
    (r".", {}),  # anything else: as written
]


def rule_for(command):
    """The `PLAN` rule of a README command (ValueError when none matches)."""
    for pattern, rule in PLAN:
        if re.search(pattern, command):
            return rule
    raise ValueError(f"README command not in the walkthrough's PLAN: {command}")


def final_command(command, rule, fast, port=None):
    """The command as run: ``always``, then with ``fast`` ``fast`` applied (a suffix or a
    function), the server's port filled in."""
    for key in ("always",) + (("fast",) if fast else ()):
        change = rule.get(key)
        if change:
            command = change(command) if callable(change) else command + change
    return command.replace("{port}", str(port))


def copy_repository(dest):
    """The files of the repository as they are in the working tree (tracked, and new ones git
    does not ignore), into ``dest``, and a link to ``../shared`` beside it when there is one."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    if SHARED.is_dir():
        os.symlink(SHARED, dest.parent / "shared")


def make_user_files(copy, fast):
    """What README's commands take as the user's own: a labelled folder, another corpus, single
    recordings (real ones from ../shared when present), and data/LA (module docstring)."""
    import numpy as np
    import soundfile as sf

    run = [sys.executable, "scripts/make_demo_corpus.py", "--out", "data/LA_demo",
           "--no-next-step", *(DEMO_SIZES if fast else [])]
    subprocess.run(run, cwd=copy, check=True, capture_output=True)
    os.symlink("LA_demo/LA", copy / "data" / "LA")
    la = copy / "data" / "LA"
    protocol = la / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.train.trn.txt"
    rows = [line.split() for line in protocol.read_text().splitlines()]
    (copy / "my_audio").symlink_to(la / "ASVspoof2019_LA_train" / "flac")
    (copy / "my_labels.csv").write_text("file,label\n" + "".join(
        f"{r[1]}.flac,{r[4]}\n" for r in rows))
    dev = la / "ASVspoof2019_LA_dev" / "flac"
    dev_rows = [line.split() for line in (la / "ASVspoof2019_LA_cm_protocols" /
                                          "ASVspoof2019.LA.cm.dev.trl.txt").read_text()
                .splitlines()]
    (copy / "other_corpus.csv").write_text("file,label\n" + "".join(
        f"{dev / r[1]}.flac,{r[4]}\n" for r in dev_rows))
    real = sorted(MINI_DEV.glob("*.flac"))[:2] if MINI_DEV.is_dir() else []
    sources = real or sorted(dev.glob("*.flac"))[:2]
    y, sr = sf.read(str(sources[0]))
    sf.write(str(copy / "recording.wav"), y, sr)
    sf.write(str(copy / "call.mp3"), np.asarray(y, np.float64), sr, format="MP3")
    (copy / "interviews").mkdir()
    for f in sources:
        shutil.copy2(f, copy / "interviews" / f.name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command, copy, log):
    """A README ``serve.py`` command in the background on a free port; returns (process, port)
    once it answers /health (RuntimeError naming the log's tail otherwise)."""
    import urllib.request

    port = free_port()
    proc = subprocess.Popen(["bash", "-c", f"exec {command} --port {port}"], cwd=copy,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc, port
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{command}: the server did not answer /health:\n"
                       f"{Path(log).read_text()[-2000:]}")


def run_command(command, rule, copy):
    """Run one command by bash in ``copy``; RuntimeError with the output's tail when it fails
    or leaves less than ``rule['expect']`` (files, else words in its output)."""
    done = subprocess.run(["bash", "-c", command], cwd=copy, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"{command}\nexited {done.returncode}:\n{output[-3000:]}")
    for want in rule.get("expect", []):
        if not ((copy / want).exists() or want in output):
            raise RuntimeError(f"{command}\nleft neither the file nor the words {want!r}:\n"
                               f"{output[-3000:]}")


def say_now(line):
    print(line, flush=True)


def walk(commands, copy, fast, say=say_now):
    """Every command in order (module docstring); returns the lines said, one per command."""
    server, port, lines = None, None, []
    try:
        for command in commands:
            rule = rule_for(command)
            needs = rule.get("needs")
            if "skip" in rule or (needs and not Path(needs).exists()):
                why = rule.get("skip") or f"needs {needs}, absent here"
                lines.append(f"skipped  {command}  ({why})")
            elif rule.get("serve"):
                server, port = start_server(final_command(command, rule, fast), copy,
                                            copy / "serve.log")
                lines.append(f"serving  {command}  (port {port})")
            else:
                final = final_command(command, rule, fast, port)
                start = time.time()
                run_command(final, rule, copy)
                changed = final_command(command, rule, fast=False, port=port) != command
                note = f"; {rule['note']}" if rule.get("note") and changed else ""
                lines.append(f"ran      {command}  ({time.time() - start:.0f} s"
                             + (f"; as: {final}" if final != command else "") + f"{note})")
            say(lines[-1])
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    return lines


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--fast", action="store_true",
                    help="shrink what takes long: a corpus of 24/12/12 utterances for data/LA "
                         "(24/12 for the quickstart's), one epoch, 4 Piper spoofs (CI)")
    ap.add_argument("--keep", metavar="DIR",
                    help="walk in DIR (created; kept afterwards) instead of a temporary folder")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    commands = readme_commands((REPO / "README.md").read_text())
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="walkthrough-"))
    copy = base / "repo"
    copy.mkdir(parents=True)
    try:
        copy_repository(copy)
        make_user_files(copy, args.fast)
        lines = walk(commands, copy, args.fast)
    except (RuntimeError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        raise SystemExit(f"error: README walkthrough failed: {e}") from None
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    ran = sum(line.startswith(("ran", "serving")) for line in lines)
    print(f"README walkthrough: {ran} of {len(lines)} commands ran, "
          f"{len(lines) - ran} skipped with their reason")
    return lines


if __name__ == "__main__":
    main()
