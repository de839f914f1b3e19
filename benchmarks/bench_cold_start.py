"""Cold start: the README's book command on a first run ever (empty home and cache folders) against
warm runs, each kernel on numpy and on Numba in one process, and what compiling each path costs.

    python benchmarks/bench_cold_start.py [--repeats 5] [--no-compile]

Whole-process figures are medians of interleaved runs (each cold run gets fresh, empty temporary
HOME, XDG_CACHE_HOME and XDG_RUNTIME_DIR). The per-kernel table gives the speeds that
``convfilter._backend.COSTS`` uses to choose between the two kernels; the compile table runs
each path once in a fresh process with an empty cache and Numba forced.
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
BOOK = ["apply", "--kernel", "vertical", "--kernel", "horizontal", "sample_images/china.jpg",
        "sample_images/flower.jpg"]


def user_env(folder: str, server: bool = False, **extra) -> dict:
    """An environment whose home, cache and runtime folders are under ``folder``.

    Commands run in their own process (``CONVFILTER_SERVER=off``) unless ``server``: then the
    first one starts a server in the background, as a user's first run does.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "CONVFILTER_BACKEND", "CONVFILTER_SERVER")}
    if not server:
        env["CONVFILTER_SERVER"] = "off"
    for name in ("home", "cache", "runtime"):
        os.makedirs(os.path.join(folder, name), exist_ok=True)
    env.update(HOME=os.path.join(folder, "home"), XDG_CACHE_HOME=os.path.join(folder, "cache"),
               XDG_RUNTIME_DIR=os.path.join(folder, "runtime"), **extra)
    return env


def stop_server(env: dict) -> None:
    """Stop the server a run with ``env`` started (it would compile on, slowing the next runs)."""
    subprocess.run([sys.executable, "-m", "convfilter", "server", "stop"], cwd=ROOT, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed_run(argv: list[str], env: dict, output: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "convfilter", *argv, "-o", output], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def whole_process(work: str, repeats: int) -> None:
    warm_folder = os.path.join(work, "warm")
    warm = user_env(warm_folder)
    numba = dict(warm, CONVFILTER_BACKEND="numba")
    subprocess.run([sys.executable, "-m", "convfilter", "warmup"], cwd=ROOT, env=warm, check=True,
                   stderr=subprocess.DEVNULL)
    single = ["apply", "-k", "vertical", "sample_images/china.jpg"]
    rows = {"first run ever (empty cache), book command": [], "warm cache, book command": [],
            "warm cache, book command, Numba forced (the old way)": [],
            "warm cache, one photo (-k vertical china.jpg)": [],
            "warm cache, one photo, Numba forced": []}
    for round_ in range(repeats):
        cold = user_env(os.path.join(work, f"cold{round_}"), server=True)
        times = [timed_run(BOOK, cold, os.path.join(work, f"out-cold{round_}"))]
        stop_server(cold)  # its warm-up would compete with the runs below
        times += [timed_run(BOOK, warm, os.path.join(work, "out-warm")),
                  timed_run(BOOK, numba, os.path.join(work, "out-numba")),
                  timed_run(single, warm, os.path.join(work, "one.png")),
                  timed_run(single, numba, os.path.join(work, "one-numba.png"))]
        for samples, took in zip(rows.values(), times):
            samples.append(took)
    same = all(Path(work, "out-cold0", name).read_bytes() == Path(work, "out-numba", name).read_bytes()
               for name in os.listdir(os.path.join(work, "out-numba")))
    base = statistics.median(rows["warm cache, book command, Numba forced (the old way)"])
    print(f"# whole process, medians of {repeats} interleaved rounds; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| command | median s | / warm Numba run |")
    print("| --- | ---: | ---: |")
    for name, samples in rows.items():
        print(f"| {name} | {statistics.median(samples):.2f} | {statistics.median(samples) / base:.2f} |")
    print(f"# first-run output byte-identical to the warm Numba run's: {same}")


def per_kernel(work: str, repeats: int) -> None:
    """Each kernel call of a few workloads, timed on both backends in this process (whose Numba
    cache is the warm one of :func:`whole_process`)."""
    os.environ.update(user_env(os.path.join(work, "warm")))
    os.environ.pop("NUMBA_CACHE_DIR", None)
    import numpy as np
    from PIL import Image

    from convfilter import _backend, kernels, ops

    calls: list[tuple[str, float, str, float]] = []
    chosen = _backend.kernel

    def timing(name, work):
        run = chosen(name, work)

        def call(*args):
            start = time.perf_counter()
            result = run(*args)
            calls.append((name, work, _backend.get_backend(), time.perf_counter() - start))
            return result

        return call

    def grid(name):
        return np.asarray(kernels.resolve(name).weights, np.float32)

    photo = np.asarray(Image.open(ROOT / "sample_images" / "china.jpg"), np.float32)[None] / 255
    line_bank = np.repeat(np.stack([grid("vertical"), grid("horizontal")], -1)[:, :, None], 3, 2)
    depthwise = np.random.default_rng(1).standard_normal((3, 3, 64, 1)).astype(np.float32)
    feature_map = np.random.default_rng(2).standard_normal((1, 112, 112, 64)).astype(np.float32)
    workloads = {
        "book bank (channel sum + separable)": lambda: ops.conv2d(photo, line_bank),
        "sobel-x + laplacian (direct)": lambda: ops.conv2d(
            photo, np.repeat(np.stack([grid("sobel-x"), grid("laplacian")], -1)[:, :, None], 3, 2)),
        "3x3x3x32 + ReLU (direct)": lambda: ops.conv2d(
            photo, np.random.default_rng(0).standard_normal((3, 3, 3, 32)).astype(np.float32), activation="relu"),
        "depthwise 3x3 (one kernel per channel)": lambda: ops.depthwise_conv2d(photo, depthwise[:, :, :3]),
        "depthwise 3x3 on a network's 112x112x64 map": lambda: ops.depthwise_conv2d(feature_map, depthwise),
        "max pool 2x2": lambda: ops.max_pool2d(photo, 2),
        "avg pool 3x3 s2 SAME": lambda: ops.avg_pool2d(photo, 3, 2, "SAME"),
    }
    _backend.kernel = timing
    ops.set_num_threads(1)
    try:
        for backend in ("numba", "numpy"):  # untimed: loads the kernels, warms the caches
            ops.set_backend(backend)
            for run in workloads.values():
                run()
        calls.clear()
        totals: dict[tuple[str, str], list[float]] = {}
        for _ in range(repeats):
            for name, run in workloads.items():
                for backend in ("numba", "numpy"):
                    ops.set_backend(backend)
                    start = time.perf_counter()
                    run()
                    totals.setdefault((name, backend), []).append(time.perf_counter() - start)
    finally:
        _backend.kernel = chosen
        ops.set_backend("auto")
        ops.set_num_threads(None)
    print(f"\n# one 640x427 photo in this process, one thread, medians of {repeats}")
    print("| workload | Numba ms | numpy ms | numpy / Numba |")
    print("| --- | ---: | ---: | ---: |")
    for name in workloads:
        jit, plain = (statistics.median(totals[name, b]) * 1e3 for b in ("numba", "numpy"))
        print(f"| {name} | {jit:.1f} | {plain:.1f} | {plain / jit:.1f} |")
    print("\n| kernel | Numba ns/unit | numpy ns/unit | COSTS in _backend |")
    print("| --- | ---: | ---: | --- |")
    for name in _backend.COSTS:
        speeds = {b: [t / w * 1e9 for n, w, bb, t in calls if n == name and bb == b and w] for b in ("numba", "numpy")}
        if speeds["numba"] and speeds["numpy"]:
            print(f"| {name} | {statistics.median(speeds['numba']):.2f} | {statistics.median(speeds['numpy']):.2f} | "
                  f"{_backend.COSTS[name][1]} / {_backend.COSTS[name][0]} |")


COMPILE_PATHS = {
    "channel sum + separable (the book's line bank)": ["-k", "vertical", "-k", "horizontal"],
    "direct (sobel-x + laplacian)": ["-k", "sobel-x", "-k", "laplacian"],
    "separable, one channel in place (gray)": ["-k", "gaussian:5", "--channels", "gray"],
}


def compile_costs(work: str) -> None:
    """Each path once, Numba forced, in a fresh process with an empty cache: its whole time."""
    print("\n# compile cost per path: fresh process, empty cache, Numba forced, one photo")
    print("| path | seconds |")
    print("| --- | ---: |")
    for index, (name, options) in enumerate(COMPILE_PATHS.items()):
        env = user_env(os.path.join(work, f"compile{index}"), CONVFILTER_BACKEND="numba")
        took = timed_run(["apply", *options, "sample_images/china.jpg"], env, os.path.join(work, f"c{index}"))
        print(f"| {name} | {took:.2f} |")
    for pool in ("max", "avg"):
        env = user_env(os.path.join(work, f"compile-{pool}"), CONVFILTER_BACKEND="numba")
        took = timed_run(["pool", "--type", pool, "sample_images/china.jpg"], env, os.path.join(work, f"p{pool}.png"))
        print(f"| {pool} pool | {took:.2f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile-cost table (slow)")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="convfilter-cold-")
    try:
        whole_process(work, args.repeats)
        per_kernel(work, args.repeats)
        if not args.no_compile:
            compile_costs(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
