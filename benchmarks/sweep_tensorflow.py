"""A sweep of conv2d shapes against TensorFlow: where does convfilter fall behind, and by how much?

Every combination of image size (7x7 to 1024x1024), input/output channels (1 to
512), kernel size (1, 3, 5, 7) and stride (1, 2), SAME padding, batch 1, random
weights (so no zero taps and no rank-1 kernels: the general case). Cases above
``--max-gflop`` are left out to keep the run to minutes. Each case times
convfilter and ``tf.nn.conv2d`` in alternating rounds with a pause between them
and reports the median ratio TensorFlow / convfilter (above 1: convfilter is
faster), the path convfilter chose, and at the end the worst cases and the
share of cases below 0.8 and 1.0.

Then the cases below ``--recheck`` (1.0) are timed again, after the whole pass
(minutes later), for ``--recheck-rounds`` more alternating rounds each (a round
of every such case, then the next round: a case's rounds are minutes apart), and
their ratio becomes the median over all their rounds. On a shared machine one
case's ratio moves by 20-50% between runs, and the lowest of 200 noisy ratios
is lower than the lowest true one: the second look keeps a case that is slow
and drops one that met a busy moment. The summary gives the worst case of the
first pass and after the recheck; the CSV has both ratios and the rounds. The
first pass's geometric mean and shares are the ones to compare between runs:
the recheck looks again only below the line, so it moves them up a little.

The ratios are steady-state, as in a process that makes many calls: the run
first loads every Numba kernel (``ops.warm_up()``), as a server or a long loop
would have (a loop of calls moves to Numba once numpy has cost about Numba's
start-up; a small case reaches that after about 70 calls, more than one case
times here). ``--cold`` skips that: then small calls run on the numpy kernels
until Numba pays, as in a short-lived process.

    python benchmarks/sweep_tensorflow.py [--sample 200] [--seed 0] [--csv sweep.csv]

The recheck does for the slow cases what a second run would; ``--only`` (e.g.
``--only 56x56x128``) reruns chosen cases on their own.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import statistics
import sys
import time

import numpy as np

from convfilter import conv_paths, ops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_networks import median_of_calls as timed  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZES = [7, 14, 28, 56, 112, 224, 512, 1024]
CHANNELS = [(1, 1), (1, 32), (3, 16), (3, 64), (16, 16), (32, 32), (64, 64), (128, 128), (256, 256),
            (512, 512), (64, 256), (256, 64), (512, 16), (16, 512)]
KERNELS = [1, 3, 5, 7]
STRIDES = [1, 2]


def cases(max_gflop: float):
    for size, (n_in, n_out), k, stride in itertools.product(SIZES, CHANNELS, KERNELS, STRIDES):
        out = -(-size // stride)
        gflop = 2 * out * out * n_out * k * k * n_in / 1e9
        if gflop <= max_gflop:
            yield size, n_in, n_out, k, stride, gflop


def calls_for(seconds: float) -> int:
    """Enough calls for a median to mean something, about 50 ms per library per round."""
    return int(min(50, max(3, 0.05 / max(seconds, 1e-6))))


def alternate(ours, theirs, calls: int, rounds: int, pause: float, mine: list, peer: list) -> None:
    """``rounds`` rounds, each the median of ``calls`` calls of convfilter then of TensorFlow."""
    for _ in range(rounds):
        time.sleep(pause)
        mine.append(timed(ours, calls))
        time.sleep(pause)
        peer.append(timed(theirs, calls))


def summary(results, key: str) -> str:
    """The geometric mean, the shares below 0.8 and 1.0 and the worst case of the ratios under ``key``."""
    ratios = np.array([r[key] for r in results])
    worst = min(results, key=lambda r: r[key])
    return (f"geometric mean ratio {np.exp(np.mean(np.log(ratios))):.2f}, {np.mean(ratios < 0.8):.0%} below 0.8, "
            f"{np.mean(ratios < 1.0):.0%} below 1.0, worst {worst[key]:.2f} ({worst['case']})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between libraries")
    parser.add_argument("--max-gflop", type=float, default=4.0, help="skip larger cases (default 4 GFLOP)")
    parser.add_argument("--sample", type=int, default=0, help="time only this many random cases (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="cases whose label contains this text")
    parser.add_argument("--csv", help="also write every case to this CSV file")
    parser.add_argument("--recheck", type=float, default=1.0,
                        help="time the cases below this ratio again after the pass (0: none; default 1.0)")
    parser.add_argument("--recheck-rounds", type=int, default=6, help="more rounds for each rechecked case")
    parser.add_argument("--cold", action="store_true",
                        help="do not load Numba's kernels first (small calls run on numpy's until Numba pays)")
    args = parser.parse_args(argv)
    try:
        import tensorflow as tf
    except ImportError:
        print("TensorFlow is not importable; install tensorflow-cpu to run the sweep")
        return 0

    if not args.cold:
        ops.warm_up()
    rng = np.random.default_rng(args.seed)
    todo = list(cases(args.max_gflop))
    if args.sample and args.sample < len(todo):
        todo = [todo[i] for i in sorted(rng.choice(len(todo), args.sample, replace=False))]
    print(f"# {len(todo)} cases, {args.rounds} alternating rounds each, {ops.get_num_threads()} threads, "
          f"{'cold' if args.cold else 'Numba kernels loaded first'}, load average {os.getloadavg()[0]:.1f}; "
          "ratio = TensorFlow / convfilter")
    print("| case | GFLOP | path | convfilter ms | TensorFlow ms | ratio |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    results, rechecks = [], []
    for size, n_in, n_out, k, stride, gflop in todo:
        label = f"{size}x{size}x{n_in} * {k}x{k}x{n_in}x{n_out} s{stride}"
        if args.only and args.only not in label:
            continue
        x = rng.standard_normal((1, size, size, n_in)).astype(np.float32)
        w = (rng.standard_normal((k, k, n_in, n_out)) / np.sqrt(k * k * n_in)).astype(np.float32)
        tx, tw = tf.constant(x), tf.constant(w)

        def ours(x=x, w=w, stride=stride):  # bound now: a rechecked case runs after the loop
            return ops.conv2d(x, w, stride, "SAME")

        def theirs(tx=tx, tw=tw, stride=stride):
            return tf.nn.conv2d(tx, tw, stride, "SAME").numpy()

        reference = theirs()
        got = ours()
        error = float(np.max(np.abs(got - reference)) / (np.max(np.abs(reference)) or 1.0))
        path = conv_paths.choose_path(x.shape, w, (stride, stride), (1, 1), got.shape,
                                      conv_paths.separable_factors(w))
        calls = calls_for(timed(ours, 1))
        mine, peer = [], []
        alternate(ours, theirs, calls, args.rounds, args.pause, mine, peer)
        ratio = statistics.median(p / m for p, m in zip(peer, mine))
        row = dict(case=label, gflop=gflop, path=path, convfilter_ms=statistics.median(mine) * 1e3,
                   tensorflow_ms=statistics.median(peer) * 1e3, ratio=ratio, first_ratio=ratio, rounds=len(mine),
                   relative_error=error)
        results.append(row)
        if ratio < args.recheck:
            rechecks.append((row, ours, theirs, calls, mine, peer))
        print(f"| {label} | {gflop:.3f} | {path} | {row['convfilter_ms']:.3f} | {row['tensorflow_ms']:.3f} | "
              f"{ratio:.2f} |", flush=True)
    if not results:
        return 0
    if rechecks and args.recheck_rounds > 0:
        print(f"# the {len(rechecks)} cases below {args.recheck:g} again, {args.recheck_rounds} more rounds each:")
        for _ in range(args.recheck_rounds):  # a round of every case at a time: a busy minute spoils one round
            for row, ours, theirs, calls, mine, peer in rechecks:
                alternate(ours, theirs, calls, 1, args.pause, mine, peer)
        for row, ours, theirs, calls, mine, peer in rechecks:
            row.update(convfilter_ms=statistics.median(mine) * 1e3, tensorflow_ms=statistics.median(peer) * 1e3,
                       ratio=statistics.median(p / m for p, m in zip(peer, mine)), rounds=len(mine))
            print(f"#   {row['case']}: {row['first_ratio']:.2f} -> {row['ratio']:.2f}", flush=True)
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(results[0]))
            writer.writeheader()
            writer.writerows(results)
    print(f"# {len(results)} cases; largest relative difference from TensorFlow "
          f"{max(r['relative_error'] for r in results):.1e}; load average {os.getloadavg()[0]:.1f} at the end")
    print(f"# first pass: {summary(results, 'first_ratio')}")
    print(f"# after the recheck: {summary(results, 'ratio')}")
    print("# worst cases:")
    for r in sorted(results, key=lambda r: r["ratio"])[:10]:
        print(f"#   {r['ratio']:.2f}  {r['case']} ({r['path']}, {r['convfilter_ms']:.3f} ms vs "
              f"{r['tensorflow_ms']:.3f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
