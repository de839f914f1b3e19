"""convfilter against TensorFlow (and OpenCV where it is the faster peer) on the layers of a network.

The rows of the performance table: the book's bank, a first layer (3 channels in),
the many-channel 3x3 and 1x1 layers of every ResNet/MobileNet block, at batch 1
and 8, plain and with a bias and ReLU (keras ``Conv2D(activation="relu")``),
plus the Gaussian and the pools. Each row reports the medians, the ratio
peer / convfilter (above 1: convfilter is faster) and the fraction of the
machine's limits convfilter reaches: multiply-adds against the FMA peak,
and the bytes it must read and write at least against the copy bandwidth,
both measured by ``probe_peak.py`` in the same run.

The times are steady-state, as in a process that makes many calls (a server, a batch, a
model run, a long loop): the run first loads every Numba kernel (``ops.warm_up()``), as
``sweep_tensorflow.py`` does. ``--cold`` skips that: a row's calls then run numpy's twins of
the kernels until Numba pays for itself, as in a short loop in a fresh process (the Winograd
transforms of ``1x28x28x256 * 3x3x256x256`` do for the few dozen calls of a row).

On a shared machine absolute times move a lot; the libraries are therefore
timed in alternating rounds (convfilter, pause, peer, pause, ...), each round
gives a median and a ratio, and the table shows the medians over the rounds.
The pause lets TensorFlow's spinning worker threads go idle before the next
library runs.

    pip install tensorflow-cpu  # in a separate environment, with convfilter installed there too
    python benchmarks/bench_networks.py [--rounds 3] [--calls 11] [--only 1x1] [--cold]

BLAS may be slowed down by ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` in the environment: the
script prints the BLAS kernel threadpoolctl sees, so a run with a generic kernel shows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

import convfilter
from convfilter import ops
from convfilter.kernels import gaussian_1d

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_kernels  # noqa: E402  (the OpenCV peers and the book's inputs)
import probe_peak  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
try:
    import tensorflow as tf
except ImportError:
    tf = None
cv2 = bench_kernels.cv2


def conv_work(x_shape, w_shape, strides=1, depthwise=False) -> tuple[float, float]:
    """(multiply-adds, least bytes moved: input, filters and output once) of a SAME convolution."""
    n_img, height, width, channels = x_shape
    fh, fw, _, n_out = w_shape
    out_h, out_w = -(-height // strides), -(-width // strides)
    if depthwise:
        n_out, macs = channels * n_out, n_img * out_h * out_w * channels * n_out * fh * fw
    else:
        macs = n_img * out_h * out_w * n_out * fh * fw * channels
    moved = 4 * (np.prod(x_shape) + np.prod(w_shape) + n_img * out_h * out_w * n_out)
    return float(macs), float(moved)


class Row:
    """One workload: convfilter's call, the peers' calls, and its work for the fractions."""

    def __init__(self, name, ours, peers, work=(0.0, 0.0)):
        self.name, self.ours, self.peers, self.work = name, ours, peers, work


def conv_row(name, x, w, strides=1, finish=False, rng=None, with_cv2=False, dense=True):
    """A tf.nn.conv2d row; ``dense=False`` for banks that convfilter computes with fewer
    operations than the formula (zero taps skipped, separable), where an FMA fraction would
    mislead."""
    bias = rng.standard_normal(w.shape[3]).astype(np.float32) if finish else None
    activation = "relu" if finish else None

    def ours():
        return convfilter.conv2d(x, w, strides, "SAME", bias=bias, activation=activation)

    peers = {}
    if tf is not None:
        tx, tw = tf.constant(x), tf.constant(w)
        tb = tf.constant(bias) if finish else None

        def theirs():
            z = tf.nn.conv2d(tx, tw, strides, "SAME")
            if finish:
                z = tf.nn.relu(tf.nn.bias_add(z, tb))
            return z.numpy()

        peers["TensorFlow"] = theirs
    if with_cv2 and cv2 is not None and not finish:
        peers["OpenCV filter2D"] = lambda: bench_kernels.cv2_conv_same(x, w)
    macs, moved = conv_work(x.shape, w.shape, strides)
    return Row(name, ours, peers, (macs if dense else 0.0, moved))


def depthwise_row(name, x, w, strides=1):
    peers = {}
    if tf is not None:
        tx, tw = tf.constant(x), tf.constant(w)
        s = [1, strides, strides, 1]
        peers["TensorFlow"] = lambda: tf.nn.depthwise_conv2d(tx, tw, s, "SAME").numpy()
    return Row(name, lambda: ops.depthwise_conv2d(x, w, strides, "SAME"), peers,
               conv_work(x.shape, w.shape, strides, depthwise=True))


def rows(rng) -> list[Row]:
    images = bench_kernels.book_images()
    bank = bench_kernels.book_bank()
    dense = rng.standard_normal((7, 7, 3, 2)).astype(np.float32)
    photo = images[:1]
    layer = rng.standard_normal((3, 3, 3, 32)).astype(np.float32)
    table = [
        conv_row("book 2x427x640x3 * 7x7x3x2 line bank", images, bank, with_cv2=True, dense=False),
        conv_row("book images * dense random 7x7x3x2", images, dense, with_cv2=True),
        conv_row("1x427x640x3 * 3x3x3x32", photo, layer, with_cv2=True),
        conv_row("1x427x640x3 * 3x3x3x32 + bias + ReLU", photo, layer, finish=True, rng=rng),
    ]
    for batch in (1, 8):
        x64 = rng.standard_normal((batch, 112, 112, 64)).astype(np.float32)
        x128 = rng.standard_normal((batch, 56, 56, 128)).astype(np.float32)
        x256 = rng.standard_normal((batch, 28, 28, 256)).astype(np.float32)
        w64 = (rng.standard_normal((3, 3, 64, 64)) * 0.05).astype(np.float32)
        w1 = (rng.standard_normal((1, 1, 128, 256)) * 0.05).astype(np.float32)
        w256 = (rng.standard_normal((3, 3, 256, 256)) * 0.05).astype(np.float32)
        for finish in (False, True):
            plus = " + bias + ReLU" if finish else ""
            table += [
                conv_row(f"{batch}x112x112x64 * 3x3x64x64{plus}", x64, w64, finish=finish, rng=rng),
                conv_row(f"{batch}x56x56x128 * 1x1x128x256{plus}", x128, w1, finish=finish, rng=rng),
                conv_row(f"{batch}x28x28x256 * 3x3x256x256{plus}", x256, w256, finish=finish, rng=rng),
            ]
        table.append(conv_row(f"{batch}x112x112x64 * 1x1x64x128 stride 2", x64,
                              (rng.standard_normal((1, 1, 64, 128)) * 0.1).astype(np.float32), strides=2))
        table.append(depthwise_row(f"{batch}x112x112x64 depthwise 3x3", x64,
                                   rng.standard_normal((3, 3, 64, 1)).astype(np.float32)))
    big = rng.random((1, 2048, 2048, 1), dtype=np.float32)
    taps = np.asarray(gaussian_1d(31, 5.0), np.float32)
    gauss = np.outer(taps, taps)[:, :, None, None]
    gauss_row = conv_row("31x31 Gaussian on 2048x2048", big, gauss, dense=False)
    if cv2 is not None:
        gauss_row.peers["OpenCV sepFilter2D"] = lambda: bench_kernels.cv2_sep_same(big, taps, taps)
    tensor = rng.standard_normal((1, 1024, 1024, 32)).astype(np.float32)
    pools = [Row("max pool 2x2 on 1x1024x1024x32", lambda: convfilter.max_pool2d(tensor, 2), {},
                 (0.0, 4.0 * tensor.size * 1.25)),
             Row("avg pool 3x3 s2 SAME on 1x1024x1024x32", lambda: convfilter.avg_pool2d(tensor, 3, 2, "SAME"), {},
                 (0.0, 4.0 * tensor.size * 1.25))]
    if tf is not None:
        ttensor = tf.constant(tensor)
        pools[0].peers["TensorFlow"] = lambda: tf.nn.max_pool2d(ttensor, 2, 2, "VALID").numpy()
        pools[1].peers["TensorFlow"] = lambda: tf.nn.avg_pool2d(ttensor, 3, 2, "SAME").numpy()
    return [*table, gauss_row, *pools]


def median_of_calls(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(row: Row, rounds: int, calls: int, pause: float) -> dict[str, tuple[float, float]]:
    """``{library: (median seconds over the rounds, median ratio library / convfilter)}``."""
    libraries = {"convfilter": row.ours, **row.peers}
    for fn in libraries.values():
        fn()  # warm-up: build TF's graph, let convfilter choose and allocate
    seconds = {name: [] for name in libraries}
    for _ in range(rounds):
        for name, fn in libraries.items():
            time.sleep(pause)
            seconds[name].append(median_of_calls(fn, calls))
    ours = seconds["convfilter"]
    return {name: (statistics.median(times), statistics.median(t / o for t, o in zip(times, ours)))
            for name, times in seconds.items()}


def blas_description() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS unknown"
    libs = [f"{lib['internal_api']} {lib.get('version')} ({lib.get('architecture')}, {lib['num_threads']} threads)"
            for lib in threadpool_info() if lib["user_api"] == "blas"]
    return ", ".join(libs) or "no BLAS seen"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=11, help="timed calls per library per round")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between libraries")
    parser.add_argument("--only", default="", help="rows whose name contains this text")
    parser.add_argument("--cold", action="store_true", help="do not load Numba's kernels first")
    args = parser.parse_args(argv)
    if not args.cold:
        ops.warm_up()

    rng = np.random.default_rng(0)
    threads = ops.get_num_threads()
    limits = probe_peak.limits(threads)  # measured again at the end: the larger of the two counts
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# convfilter {convfilter.__version__}, numpy {np.__version__}, "
          f"TensorFlow {tf.__version__ if tf else 'not installed'}; {threads} threads; {blas_description()}")
    print(f"# load average {load:.1f} at the start; medians of {args.rounds} alternating rounds of "
          f"{args.calls} calls; {'cold' if args.cold else 'Numba kernels loaded first'}; ratio = peer / convfilter; FMA peak: 2 x multiply-adds of the formula per "
          "second (left out where convfilter skips zero taps or runs a separable kernel); copy bandwidth: "
          "input, filters and output once per call")
    worst, table = [], []
    for row in rows(rng):
        if args.only and args.only not in row.name:
            continue
        table.append((row, compare(row, args.rounds, args.calls, args.pause)))
        print(f"# timed: {row.name}", file=sys.stderr, flush=True)
    end = probe_peak.limits(threads)
    limits = {key: max(value, end[key]) for key, value in limits.items()}
    print(f"# measured limits on {threads} threads (the larger of the probes before and after): "
          f"{limits['flops'] / 1e9:.0f} GFLOP/s, copy {limits['bandwidth'] / 1e9:.1f} GB/s")
    print("| workload | convfilter ms | peer | peer ms | ratio | FMA peak | copy bandwidth |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for row, results in table:
        ours = results.pop("convfilter")[0]
        macs, moved = row.work
        arithmetic = f"{2 * macs / ours / limits['flops']:.0%}" if macs else ""
        memory = f"{moved / ours / limits['bandwidth']:.0%}" if moved else ""
        if not results:
            print(f"| {row.name} | {ours * 1e3:.2f} | | | | {arithmetic} | {memory} |", flush=True)
        for k, (peer, (theirs, ratio)) in enumerate(results.items()):
            first = k == 0
            print(f"| {row.name if first else ''} | {f'{ours * 1e3:.2f}' if first else ''} | {peer} | "
                  f"{theirs * 1e3:.2f} | {ratio:.2f} | {arithmetic if first else ''} | {memory if first else ''} |",
                  flush=True)
        if results:
            worst.append((min(r for _, r in results.values()), row.name))
    if worst:
        ratio, name = min(worst)
        print(f"# lowest ratio against the best peer: {ratio:.2f} ({name}); load average "
              f"{os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
