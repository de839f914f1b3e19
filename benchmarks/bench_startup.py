"""Whole-process start-up: light commands against ``python -c "import click"``, and convfilter
with its warm server, and without it, against ImageMagick doing the same jobs (skipped if not
installed): one image, a shell loop over 20 images (one process each), and the two-stage pipeline
``apply ... -f npy -o - | pool --type max -`` against ImageMagick's single stage.

    pip install -e '.[bench]' && python benchmarks/bench_startup.py
    python benchmarks/bench_startup.py --convfilter /some/venv/bin/convfilter   # another install

Each figure is the median wall time of several runs after one untimed run
(which also fills the kernel cache); the commands compared take turns. Budget for the light commands: 1.5x the
bare click import. Targets with the server: one image at most 0.5x ImageMagick's time, the loop at
least 2x its throughput, the pipeline no slower than its single stage.

The server runs in a temporary runtime folder of this benchmark (never the user's) and is stopped
at the end. The commands run with Python's bytecode cache on (``PYTHONDONTWRITEBYTECODE`` is
dropped), as an installed package has it: without it every run would compile convfilter's modules
from source, and the figures would measure that.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHINA = ROOT / "sample_images" / "china.jpg"
BUDGET = 1.5


def convfilter_command(script: str | None = None) -> list[str]:
    """``script``, else the installed console script next to this Python, else ``python -m convfilter``."""
    if script:
        return [script]
    script = Path(sys.executable).with_name("convfilter")
    return [str(script)] if script.exists() else [sys.executable, "-m", "convfilter"]


def interpreter_of(cf: list[str]) -> str:
    """The Python that runs ``cf`` (a console script's ``#!`` line), for the bare click import."""
    if len(cf) > 1:
        return cf[0]
    with open(cf[0], "rb") as handle:
        line = handle.readline()
    return line[2:].split()[0].decode() if line.startswith(b"#!") else sys.executable


def run_once(argv: list[str] | str, cwd: str, env=None) -> tuple[float, float]:
    """Wall time and CPU time (of the process and everything it waited for) of one command (a
    list, or a shell line given as a string)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                   shell=isinstance(argv, str))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def median_runs(commands: list, repeats: int, cwd: str, with_cpu: bool = False) -> list:
    """Median wall time of each command (``argv``, or ``(argv, env)``); ``(wall, CPU)`` medians
    ``with_cpu``. The commands take turns, run after run, so that a busy moment on the machine hits
    all of them alike and their ratios stay fair."""
    commands = [c if isinstance(c, tuple) else (c, None) for c in commands]
    for argv, env in commands:
        run_once(argv, cwd, env)  # untimed: fills caches (file system, kernel cache)
    times = [[] for _ in commands]
    for _ in range(repeats):
        for (argv, env), samples in zip(commands, times):
            samples.append(run_once(argv, cwd, env))
    medians = [tuple(statistics.median(values) for values in zip(*samples)) for samples in times]
    return medians if with_cpu else [wall for wall, _ in medians]


def imagemagick_command() -> list[str] | None:
    """ImageMagick 7 (``magick``) or 6 (``convert``), or None."""
    for name in ("magick", "convert"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per command (default 9)")
    parser.add_argument("--loop", type=int, default=20, help="images in the shell loop (default 20)")
    parser.add_argument("--convfilter", metavar="PATH",
                        help="the convfilter command to time (default: the one installed next to this Python)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # still stop the server (finally)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # (the commands below inherit it)
    cf = convfilter_command(args.convfilter)
    work = tempfile.mkdtemp(prefix="convfilter-startup-")
    try:
        light = [["--help"], ["kernels"], ["shape", "--size", "427x640x3", "-k", "vertical", "--pool", "max"]]
        baseline, *seconds = median_runs([[interpreter_of(cf), "-c", "import click"]] + [cf + e for e in light],
                                         args.repeats, work)
        print(f"# {' '.join(cf)}")
        print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start; medians of "
              f"{args.repeats} interleaved runs after one untimed run")
        print("| command | median ms | / import click |")
        print("| --- | ---: | ---: |")
        print(f'| python -c "import click" | {baseline * 1e3:.0f} | 1.00 |')
        for extra, took in zip(light, seconds):
            print(f"| convfilter {' '.join(extra)} | {took * 1e3:.0f} | {took / baseline:.2f} |")
        worst = max(seconds) / baseline
        print(f"# light commands: worst {worst:.2f}x the click import (budget {BUDGET}x): "
              + ("within budget" if worst <= BUDGET else "OVER BUDGET"))
        print()
        compare_with_imagemagick(cf, work, args.repeats, args.loop)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def compare_with_imagemagick(cf: list[str], work: str, repeats: int, loop: int) -> None:
    """The three jobs of the start-up targets: convfilter with its server, without it, and ImageMagick."""
    runtime = tempfile.mkdtemp(prefix="convfilter-bench-run-")
    served = {**os.environ, "XDG_RUNTIME_DIR": runtime}
    served.pop("CONVFILTER_SERVER", None)
    alone = {**served, "CONVFILTER_SERVER": "off"}
    subprocess.run(cf + ["server", "start"], env=served, check=True, stdout=subprocess.DEVNULL)
    try:
        names = []
        for index in range(loop):
            names.append(f"in{index:02d}.jpg")
            shutil.copyfile(CHINA, os.path.join(work, names[-1]))
        os.makedirs(os.path.join(work, "out"), exist_ok=True)
        files = " ".join(names)
        quoted = " ".join(shlex.quote(part) for part in cf)
        magick = imagemagick_command()
        jobs = {
            "one 640x427 JPEG, 7x7 vertical line kernel, to a gray PNG": (
                cf + ["apply", "-k", "vertical", str(CHINA), "-o", "ours.png"],
                None if magick is None else magick + [str(CHINA), *MAGICK_CORRELATE, "magick.png"]),
            f"a shell loop over {loop} JPEGs, one process each": (
                f'for f in {files}; do {quoted} apply -k vertical "$f" -o out/; done',
                None if magick is None else
                f'for f in {files}; do {shlex.join(magick)} "$f" {shlex.join(MAGICK_CORRELATE)} "out/m-$f.png"; done'),
            "apply -k vertical -f npy -o - | pool --type max - (ImageMagick: the one-image job)": (
                f"{quoted} apply -k vertical {shlex.quote(str(CHINA))} -f npy -o - | "
                f"{quoted} pool --type max --size 2 - -o pooled.png",
                None if magick is None else magick + [str(CHINA), *MAGICK_CORRELATE, "magick.png"]),
        }
        print("Wall time, ms (CPU time, ms: the client and everything it waited for, plus for the server "
              "what its commands used):")
        print("| job | server | no server | ImageMagick | server / ImageMagick | target |")
        print("| --- | ---: | ---: | ---: | ---: | --- |")
        targets = ["<= 0.50", "<= 0.50 (2x the throughput)", "<= 1.00"]
        for (label, (ours, theirs)), target in zip(jobs.items(), targets):
            commands = [(ours, served), (ours, alone)] + ([(theirs, None)] if theirs else [])
            cpu_before = server_cpu(cf, served)
            (with_server, client_cpu), without, *magick = median_runs(commands, repeats, work, with_cpu=True)
            server_side = (server_cpu(cf, served) - cpu_before) / (repeats + 1)  # the untimed run too
            cells = [f"{with_server * 1e3:.0f} ({(client_cpu + server_side) * 1e3:.0f})",
                     f"{without[0] * 1e3:.0f} ({without[1] * 1e3:.0f})"]
            if magick:
                ratio = with_server / magick[0][0]
                verdict = "met" if ratio <= float(target.split()[1]) else "MISSED"
                cells += [f"{magick[0][0] * 1e3:.0f} ({magick[0][1] * 1e3:.0f})",
                          f"{ratio:.2f} (CPU {(client_cpu + server_side) / magick[0][1]:.2f})", f"{target} {verdict}"]
            else:
                cells += ["-", "-", target]
            print(f"| {label} | " + " | ".join(cells) + " |")
        if magick is None:
            print("# ImageMagick not installed: skipped (apt-get install imagemagick)")
        print(f"# load average {os.getloadavg()[0]:.2f} at the end")
    finally:
        subprocess.run(cf + ["server", "stop"], env=served, stdout=subprocess.DEVNULL)
        shutil.rmtree(runtime, ignore_errors=True)


def server_cpu(cf: list[str], env) -> float:
    """The CPU seconds the server and its finished commands have used (``server status``)."""
    done = subprocess.run(cf + ["server", "status"], env=env, capture_output=True, text=True, check=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith("cpu "))
    return float(line.split()[1])


KERNEL_7X7 = "7x7: " + " ".join("1" if v == 3 else "0" for _ in range(7) for v in range(7))
MAGICK_CORRELATE = ["-colorspace", "gray", "-define", "convolve:scale=!", "-morphology", "Correlate", KERNEL_7X7]


if __name__ == "__main__":
    sys.exit(main())
