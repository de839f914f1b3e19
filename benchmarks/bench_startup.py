"""Whole-process start-up: light commands against ``python -c "import click"``, and one image
through ``convfilter apply`` against ImageMagick doing the same job (skipped if not installed).

    pip install -e '.[bench]' && python benchmarks/bench_startup.py

Each figure is the median wall time of several runs after one untimed run
(which also fills the kernel cache); the commands compared take turns. Budget for the light commands: 1.5x the
bare click import.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHINA = ROOT / "sample_images" / "china.jpg"
BUDGET = 1.5


def convfilter_command() -> list[str]:
    """The installed console script next to this Python, else ``python -m convfilter``."""
    script = Path(sys.executable).with_name("convfilter")
    return [str(script)] if script.exists() else [sys.executable, "-m", "convfilter"]


def run_once(argv: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def median_runs(commands: list[list[str]], repeats: int, cwd: str) -> list[float]:
    """Median wall time of each command. The commands take turns, run after run, so that a busy
    moment on the machine hits all of them alike and their ratios stay fair."""
    for argv in commands:
        run_once(argv, cwd)  # untimed: fills caches (file system, kernel cache)
    times = [[] for _ in commands]
    for _ in range(repeats):
        for argv, samples in zip(commands, times):
            samples.append(run_once(argv, cwd))
    return [statistics.median(samples) for samples in times]


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
    args = parser.parse_args(argv)
    cf = convfilter_command()
    work = tempfile.mkdtemp(prefix="convfilter-startup-")
    try:
        light = [["--help"], ["kernels"], ["shape", "--size", "427x640x3", "-k", "vertical", "--pool", "max"]]
        baseline, *seconds = median_runs([[sys.executable, "-c", "import click"]] + [cf + e for e in light],
                                         args.repeats, work)
        print(f"# {os.cpu_count()} CPUs; medians of {args.repeats} interleaved runs after one untimed run")
        print("| command | median ms | / import click |")
        print("| --- | ---: | ---: |")
        print(f'| python -c "import click" | {baseline * 1e3:.0f} | 1.00 |')
        for extra, took in zip(light, seconds):
            print(f"| convfilter {' '.join(extra)} | {took * 1e3:.0f} | {took / baseline:.2f} |")
        worst = max(seconds) / baseline
        print(f"# light commands: worst {worst:.2f}x the click import (budget {BUDGET}x): "
              + ("within budget" if worst <= BUDGET else "OVER BUDGET"))
        print()
        print("| one 640x427 JPEG, 7x7 vertical line kernel, to a gray PNG | median ms | / convfilter |")
        print("| --- | ---: | ---: |")
        ours_job = cf + ["apply", "-k", "vertical", str(CHINA), "-o", "ours.png"]
        magick = imagemagick_command()
        if magick is None:
            (ours,) = median_runs([ours_job], args.repeats, work)
        else:
            kernel = "7x7: " + " ".join("1" if v == 3 else "0" for _ in range(7) for v in range(7))
            their_job = magick + [str(CHINA), "-colorspace", "gray", "-define", "convolve:scale=!",
                                  "-morphology", "Correlate", kernel, "magick.png"]
            ours, theirs = median_runs([ours_job, their_job], args.repeats, work)
        print(f"| convfilter apply -k vertical china.jpg | {ours * 1e3:.0f} | 1.00 |")
        if magick is None:
            print("# ImageMagick not installed: skipped (apt-get install imagemagick)")
        else:
            print(f"| ImageMagick {Path(magick[0]).name} -morphology Correlate | {theirs * 1e3:.0f} | "
                  f"{theirs / ours:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
