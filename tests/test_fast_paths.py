"""Every fast path of conv2d and pooling, forced one at a time, against tests/naive.py.

The paths reorder sums (channel sum first, columns then rows), so they are
compared within float32 rounding of the direct formula: a tolerance scaled by
sum |x| * |w| over each window, which the naive float64 reference gives.
"""

import itertools
import os
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convfilter import _backend, conv_paths, ops
from convfilter import threads as thread_pool
from convfilter.geometry import axis

import naive
from conftest import CHECKOUT_ENV

PATHS = ["planar", "separable"]


def run_path(x, w, strides, padding, dilations, path, sum_channels=None):
    gh = axis(x.shape[1], w.shape[0], strides[0], padding, dilations[0])
    gw = axis(x.shape[2], w.shape[1], strides[1], padding, dilations[1])
    return conv_paths.correlate(np.ascontiguousarray(x, np.float32), np.ascontiguousarray(w, np.float32),
                          strides, dilations, gh, gw, path=path, sum_channels=sum_channels)


def assert_close_to_formula(result, x, w, strides, padding, dilations, reference=naive.conv2d,
                            magnitude=None, ulps=8, block=1):
    expected = reference(x, w, strides, padding, dilations)
    magnitude = (magnitude or reference)(np.abs(x), np.abs(w), strides, padding, dilations)
    assert result.shape == expected.shape and result.dtype == np.float32
    # float32 rounding of a sum of products: a few ulps of the sum of magnitudes
    tolerance = ulps * np.finfo(np.float32).eps * (naive.max_over_blocks(magnitude, block) + 1e-30)
    excess = np.abs(result - expected) - tolerance
    assert np.all(excess <= 0), f"worst excess {excess.max():.3g}"


def winograd_magnitude(abs_x, abs_w, strides, padding, dilations):
    """sum |x| * max|w| over each window: Winograd's filter transform mixes every tap of a
    kernel, so even an output whose window holds one nonzero input rounds with the others' size."""
    peak = np.broadcast_to(abs_w.max(axis=(0, 1), keepdims=True), abs_w.shape)
    return naive.conv2d(abs_x, np.ascontiguousarray(peak), strides, padding, dilations)


# Winograd's transforms add and halve a 4x4 input patch and the weights before multiplying: its
# rounding scales with the largest sum of |x| * |w| in each 2x2 output block, |w| taken as the
# kernel's largest (measured: up to 7 ulps of the sum with each tap's own |w|; of an output's own
# sum, which may cover mostly padding, up to 580; a 1x1 image with one large off-centre tap
# exceeded 16 ulps of the sum with the centre tap alone)
TOLERANCES = {"winograd": dict(ulps=16, block=2, magnitude=winograd_magnitude)}


def rank_one_bank(rng, fh, fw, n_in, n_out):
    cols = rng.standard_normal((fh, 1, n_in, n_out))
    rows = rng.standard_normal((1, fw, n_in, n_out))
    cols[rng.random(cols.shape) < 0.3] = 0.0  # zero taps are skipped: exercise that too
    return (cols * rows).astype(np.float32)


CASES = [
    # (height, width, channels, fh, fw, filters, strides, padding, dilations)
    (9, 11, 3, 3, 3, 2, (1, 1), "SAME", (1, 1)),
    (10, 7, 2, 4, 2, 3, (1, 1), "SAME", (1, 1)),  # even kernels: odd padding cell bottom/right
    (12, 13, 1, 5, 3, 1, (2, 3), "SAME", (1, 1)),
    (12, 13, 3, 3, 3, 9, (2, 1), "VALID", (1, 1)),
    (15, 14, 2, 3, 2, 4, (1, 2), "SAME", (2, 3)),
    (15, 16, 3, 3, 3, 10, (3, 2), "VALID", (2, 2)),
    (1, 1, 3, 3, 3, 2, (1, 1), "SAME", (1, 1)),  # a 1x1 image: every tap but the centre is padding
    (1, 1, 1, 4, 4, 8, (2, 2), "SAME", (1, 1)),
    (6, 8, 4, 1, 1, 8, (1, 1), "VALID", (1, 1)),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:6])) + f"-s{c[6]}-{c[7]}-d{c[8]}")
def test_each_path_matches_the_formula(path, case):
    height, width, channels, fh, fw, n_out, strides, padding, dilations = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))  # the same in every process
    x = rng.standard_normal((2, height, width, channels)).astype(np.float32)
    w = rank_one_bank(rng, fh, fw, channels, n_out) if path == "separable" else \
        rng.standard_normal((fh, fw, channels, n_out)).astype(np.float32)
    result = run_path(x, w, strides, padding, dilations, path, sum_channels=False)
    assert_close_to_formula(result, x, w, strides, padding, dilations)


@pytest.mark.parametrize("n_out", range(1, 10))
@pytest.mark.parametrize("strides", [(1, 1), (2, 3)])
def test_direct_path_filter_groups_match_the_formula(n_out, strides):
    """Filters go four, then two, then one at a time: every remainder, contiguous and strided rows."""
    rng = np.random.default_rng(n_out * 10 + strides[1])
    x = rng.standard_normal((2, 13, 17, 3)).astype(np.float32)
    w = rng.standard_normal((3, 4, 3, n_out)).astype(np.float32)
    w[rng.random(w.shape) < 0.2] = 0.0  # taps zero in some filters only
    result = run_path(x, w, strides, "SAME", (1, 1), "planar", sum_channels=False)
    assert_close_to_formula(result, x, w, strides, "SAME", (1, 1))


@pytest.mark.parametrize("height", range(1, 10))
@pytest.mark.parametrize("row_stride", [1, 2])
@pytest.mark.parametrize("channels", [1, 2])  # one channel: the kernel pads as it reads the image
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_separable_row_groups_match_the_formula(height, row_stride, channels, padding):
    """The column pass takes four output rows at a time (two with a row stride), then the rest and
    the rows whose taps reach into the padding one by one: every remainder."""
    kh = 5 if padding == "SAME" else min(height, 3)
    rng = np.random.default_rng(height * 3 + row_stride)
    x = rng.standard_normal((2, height, 7, channels)).astype(np.float32)
    w = rank_one_bank(rng, kh, 4, channels, 3)
    w[:, :, :, ~w.any(axis=(0, 1, 2))] = 1.0
    result = run_path(x, w, (row_stride, 1), padding, (1, 1), "separable", sum_channels=False)
    assert_close_to_formula(result, x, w, (row_stride, 1), padding, (1, 1))


@pytest.mark.parametrize("path", PATHS)
def test_channel_sum_path_matches_the_formula(path):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 11, 9, 3)).astype(np.float32)
    one = rank_one_bank(rng, 3, 5, 1, 3) if path == "separable" else \
        rng.standard_normal((3, 5, 1, 3)).astype(np.float32)
    w = np.repeat(one, 3, axis=2)  # the same kernels on every input channel
    result = run_path(x, w, (1, 2), "SAME", (2, 1), path, sum_channels=True)
    assert_close_to_formula(result, x, w, (1, 2), "SAME", (2, 1))


FUSED_PATHS = [("planar", False), ("separable", False), ("planar", True), ("separable", True)]


@pytest.mark.parametrize("path,sum_channels", FUSED_PATHS, ids=lambda p: str(p))
@pytest.mark.parametrize("n_out", [1, 2, 3, 6])  # every store: a plain row, strided writes, per-pixel
@pytest.mark.parametrize("activation", ["none", "relu", "relu6", "tanh"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fused_bias_and_activation_on_every_path(path, sum_channels, n_out, activation, with_bias):
    """Bias (one per filter) and ReLU are applied by the kernels as rows are stored; other activations
    after them. Both must give the formula plus bias, then the activation, on every path."""
    rng = np.random.default_rng(n_out * 7 + len(activation) + with_bias)
    x = rng.standard_normal((2, 11, 9, 3)).astype(np.float32)
    n_in = 1 if sum_channels else 3
    w = rank_one_bank(rng, 3, 5, n_in, n_out) if path == "separable" else \
        rng.standard_normal((3, 5, n_in, n_out)).astype(np.float32)
    w[:, :, :, ~w.any(axis=(0, 1, 2))] = 1.0  # a filter of zeros only (skipped taps) would test nothing
    if sum_channels:
        w = np.repeat(w, 3, axis=2)
    bias = rng.standard_normal(n_out).astype(np.float32) if with_bias else None
    gh, gw = axis(11, 3, 1, "SAME", 2), axis(9, 5, 2, "SAME", 1)
    result = conv_paths.correlate(x, w, (1, 2), (2, 1), gh, gw, path=path, sum_channels=sum_channels, bias=bias,
                            activation=activation)
    linear = run_path(x, w, (1, 2), "SAME", (2, 1), path, sum_channels=sum_channels)
    assert_close_to_formula(linear, x, w, (1, 2), "SAME", (2, 1))
    # the fused result is exactly the unfused one: the same float32 additions, then the activation
    expected = ops.activate(linear if bias is None else linear + bias, activation)
    np.testing.assert_array_equal(result, expected)
    if activation == "relu":
        assert (result == 0).any() and (result > 0).any()  # the ReLU clipped something, and not all
    if activation == "none" and bias is None:
        assert np.signbit(result).sum() == np.signbit(linear).sum()  # no bias: not even -0.0 changes


def test_fused_relu_keeps_nan_and_negative_zero_like_numpy():
    x = np.array([[[[np.nan], [-0.0], [-1.0], [2.0]]]], np.float32)  # (1, 1, 4, 1)
    w = np.ones((1, 1, 1, 1), np.float32)
    got = ops.conv2d(x, w, padding="VALID", activation="relu")[0, 0, :, 0]
    expected = np.maximum(x[0, 0, :, 0], np.float32(0))
    np.testing.assert_array_equal(got, expected)  # NaN stays NaN
    assert np.signbit(got[1]) == np.signbit(expected[1])


def test_forcing_a_path_that_does_not_apply_is_refused():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 5, 5, 2)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 1)).astype(np.float32)
    with pytest.raises(ValueError, match="rank-1"):
        run_path(x, w, (1, 1), "SAME", (1, 1), "separable")
    with pytest.raises(ValueError, match="same kernels"):
        run_path(x, w, (1, 1), "SAME", (1, 1), "planar", sum_channels=True)


def test_rank_one_detection_is_exact_not_approximate():
    rng = np.random.default_rng(3)
    col, row = rng.standard_normal(5), rng.standard_normal(7)
    kernel = np.outer(col, row).astype(np.float32)
    assert conv_paths.rank_one(kernel) is not None
    nudged = kernel.copy()
    nudged[2, 3] += 1e-4 * np.abs(kernel).max()  # visibly not rank 1 in float32
    assert conv_paths.rank_one(nudged) is None
    assert conv_paths.rank_one(rng.standard_normal((3, 3)).astype(np.float32)) is None


def test_book_bank_and_gaussian_take_the_separable_channel_sum_path(monkeypatch):
    from convfilter.kernels import gaussian, horizontal, vertical

    bank = np.stack([np.asarray(vertical(), np.float32), np.asarray(horizontal(), np.float32)], -1)
    bank = np.repeat(bank[:, :, None, :], 3, axis=2)
    assert ops.sums_input_channels(bank)
    assert conv_paths.separable_factors(bank[:, :, :1]) is not None
    assert conv_paths.separable_factors(np.asarray(gaussian(9, 2.0), np.float32)[:, :, None, None]) is not None


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_bands_give_the_same_result(threads, monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 23, 17, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    separable = rank_one_bank(rng, 5, 3, 3, 2)
    monkeypatch.setattr(thread_pool, "MIN_PARALLEL_WORK", 0)
    ops.set_num_threads(threads)
    try:
        banded = ops.conv2d(x, w)
        banded_separable = ops.conv2d(x, separable)  # bands of odd length: rows not in pairs
        pooled = ops.avg_pool2d(x, 3, 2, "SAME")
    finally:
        ops.set_num_threads(None)
    assert_close_to_formula(banded, x, w, (1, 1), "SAME", (1, 1))
    assert_close_to_formula(banded_separable, x, separable, (1, 1), "SAME", (1, 1))
    np.testing.assert_allclose(pooled, naive.pool2d(x, (3, 3), (2, 2), "SAME", np.mean), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("path", ["planar", "separable", "im2col", "matmul", "shifted", "winograd", "winograd 5x5",
                                  "blocked"])
def test_the_thread_count_does_not_change_the_bits(path, monkeypatch):
    """Bands depend on the work only (see threads.band_edges), so a result is the same to the
    last bit on one thread or several, whichever thread takes which band."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 30, 23, 6)).astype(np.float32)
    kernel = {"matmul": (1, 1), "winograd 5x5": (5, 5)}.get(path, (3, 3))
    path = path.split()[0]
    w = rank_one_bank(rng, *kernel, 6, 5) if path == "separable" else \
        rng.standard_normal((*kernel, 6, 5)).astype(np.float32)
    monkeypatch.setattr(thread_pool, "MIN_PARALLEL_WORK", 4000)  # several bands, on threads
    results = []
    for threads in (1, 2, 3):
        ops.set_num_threads(threads)
        try:
            results.append(run_path(x, w, (1, 1), "SAME", (1, 1), path))
        finally:
            ops.set_num_threads(None)
    assert len(thread_pool.band_edges(2 * 30, x.size * 5 * 9)) > 3
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_can_use_threads_after_its_parent_did(monkeypatch):
    import multiprocessing

    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 20, 20, 2)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 3)).astype(np.float32)
    monkeypatch.setattr(thread_pool, "MIN_PARALLEL_WORK", 0)
    ops.set_num_threads(2)
    try:
        expected = ops.conv2d(x, w)  # starts the parent's thread pool
        with multiprocessing.get_context("fork").Pool(1) as pool:
            result = pool.apply_async(ops.conv2d, (x, w)).get(timeout=120)
    finally:
        ops.set_num_threads(None)
    np.testing.assert_array_equal(result, expected)


def band_thread_cpus(count, monkeypatch):
    """{thread name: its CPU set} of the band threads after a call on ``count`` threads."""
    import threading

    seen, lock = {}, threading.Lock()

    def record(rows, start, stop):  # a band kernel that notes where it runs, taking a while
        with lock:
            seen[threading.current_thread().name] = os.sched_getaffinity(0)
        time.sleep(0.001)

    monkeypatch.setattr(thread_pool, "MIN_PARALLEL_WORK", 0)
    ops.set_num_threads(count)
    try:
        for _ in range(20):  # every thread takes a band at least once
            thread_pool.run_bands(record, (None,), 64, 1e6)
    finally:
        ops.set_num_threads(None)
    return seen


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_band_threads_are_pinned_one_per_cpu_beside_the_caller(monkeypatch):
    """The caller takes bands too, beside band threads pinned one per CPU; the one pinned to the
    caller's CPU is left out (it would take turns with the caller); the caller's own CPUs are
    left as they were."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    seen = band_thread_cpus(2, monkeypatch)
    helpers = {name: mask for name, mask in seen.items() if name.startswith("convfilter")}
    assert threading.current_thread().name in seen and helpers  # the caller and a band thread
    pinned = sorted(min(mask) for mask in helpers.values())
    assert all(len(mask) == 1 for mask in helpers.values()) and len(set(pinned)) == len(pinned)
    assert set(pinned) <= set(cpus)
    assert os.sched_getaffinity(0) == set(cpus)  # the caller's own CPUs are untouched
    for here in cpus[:2]:
        monkeypatch.setattr(thread_pool, "_current_cpu", lambda here=here: here)
        chosen = thread_pool._helpers_beside_caller(2, 1)
        assert len(chosen) == 1 and chosen[0].cpu != here and chosen[0].cpu in cpus[:2]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_more_threads_than_cpus_are_not_pinned(monkeypatch):
    cpus = os.sched_getaffinity(0)
    seen = band_thread_cpus(len(cpus) + 1, monkeypatch)
    assert seen and all(mask == cpus for mask in seen.values())


def test_a_failed_band_stops_the_others_and_raises(monkeypatch):
    import threading

    done, lock = [], threading.Lock()

    def failing(start, stop):
        if start == 0:
            raise ValueError("band 0 failed")
        time.sleep(0.002)  # 31 bands would take 60 ms: the failure is seen long before
        with lock:
            done.append(start)

    monkeypatch.setattr(thread_pool, "MIN_PARALLEL_WORK", 0)
    ops.set_num_threads(2)
    try:
        with pytest.raises(ValueError, match="band 0 failed"):
            thread_pool.run_bands(failing, (), 32, 1e9)
    finally:
        ops.set_num_threads(None)
    assert len(done) < 31  # the other thread stopped taking bands


def test_a_slow_kernels_bands_run_on_threads_from_less_work(monkeypatch):
    """``slowness``: a kernel whose unit of work takes twice a multiply-add's time runs its bands
    on threads from half MIN_PARALLEL_WORK; the bands themselves are those of its work. The
    direct loops (``planar``) say so; the matrix-product and blocked paths do not."""
    seen, lock = [], threading.Lock()

    def record(start, stop):
        with lock:
            seen.append((threading.current_thread().name, start, stop))
        time.sleep(0.002)  # long enough for the band thread to take the second band

    work = 0.75 * thread_pool.MIN_PARALLEL_WORK  # two bands (band_edges), below the threshold
    ops.set_num_threads(2)
    try:
        for slowness, threaded in ((1.0, False), (2.0, True)):
            seen.clear()
            for _ in range(5):
                thread_pool.run_bands(record, (), 10, work, slowness=slowness)
            assert sorted({(start, stop) for _, start, stop in seen}) == [(0, 5), (5, 10)]
            assert any(name.startswith("convfilter") for name, _, _ in seen) == threaded
    finally:
        ops.set_num_threads(None)
    assert conv_paths._slowness("planar") == conv_paths.PLANAR_SLOWNESS == 2.0
    assert all(conv_paths._slowness(path) == 1.0 for path in ("separable", *conv_paths.DENSE_PATHS))
    calls = []
    real = conv_paths.run_bands
    monkeypatch.setattr(conv_paths, "run_bands", lambda *args, **kwargs: calls.append(kwargs) or real(*args, **kwargs))
    x = np.random.default_rng(3).standard_normal((1, 60, 60, 3)).astype(np.float32)
    w = np.random.default_rng(4).standard_normal((3, 3, 3, 8)).astype(np.float32)
    result = run_path(x, w, (1, 1), "SAME", (1, 1), "planar")
    assert calls[-1].get("slowness") == 2.0
    assert_close_to_formula(result, x, w, (1, 1), "SAME", (1, 1))


def test_set_num_threads_rejects_nonsense():
    with pytest.raises(ValueError, match="thread count"):
        ops.set_num_threads(0)


def test_the_default_thread_count_is_read_once_and_again_after_set_num_threads_none(monkeypatch):
    """The environment's count is read when a call first needs it, kept (each call asks), and
    read again after ``set_num_threads(None)``; an explicit count wins meanwhile."""
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.setenv("CONVFILTER_NUM_THREADS", "3")
    try:
        ops.set_num_threads(None)
        assert ops.get_num_threads() == 3
        monkeypatch.setenv("CONVFILTER_NUM_THREADS", "5")
        assert ops.get_num_threads() == 3  # kept
        ops.set_num_threads(2)
        assert ops.get_num_threads() == 2
        ops.set_num_threads(None)
        assert ops.get_num_threads() == 5  # read again
        monkeypatch.setenv("CONVFILTER_NUM_THREADS", "none of it")
        ops.set_num_threads(None)
        from convfilter.system import usable_cpus

        assert ops.get_num_threads() == usable_cpus()  # not a count: the CPUs this process may use
    finally:
        monkeypatch.undo()
        ops.set_num_threads(None)


# a random call's geometry, for the property tests of the forced paths (with size, n_out and path)
GEOMETRY = dict(kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)), channels=st.integers(1, 4),
                strides=st.tuples(st.integers(1, 3), st.integers(1, 3)),
                dilations=st.tuples(st.integers(1, 2), st.integers(1, 2)), padding=st.sampled_from(["SAME", "VALID"]),
                seed=st.integers(0, 2**32 - 1))


def forced_geometry(path, size, kernel, n_out, strides, dilations, padding, seed):
    """``((fh, fw), n_out, strides, dilations, gh, gw)`` of a random call made fit for the forced
    ``path`` (1x1 for matmul, 3x3 or 5x5 with stride 1 for winograd, at least 4 filters and 4
    output columns for blocked), or None where it has no output (VALID with a larger window)."""
    (height, width), (fh, fw) = size, {"matmul": (1, 1), "winograd": (3 + 2 * (seed % 2),) * 2}.get(path, kernel)
    strides = (1, 1) if path in ("shifted", "winograd") else strides
    dilations = (1, 1) if path == "winograd" else dilations
    if path == "blocked":  # blocks of 4 filters and 4 columns, window columns adjacent
        n_out, dilations = max(n_out, 4), (dilations[0], 1)
    if padding == "VALID" and ((fh - 1) * dilations[0] >= height or (fw - 1) * dilations[1] >= width):
        return None  # no VALID output: conv2d refuses this, tested elsewhere
    gh, gw = (axis(n, k, s, padding, d) for n, k, s, d in zip(size, (fh, fw), strides, dilations))
    if path == "blocked" and gw.out < 4:
        return None
    return (fh, fw), n_out, strides, dilations, gh, gw


@settings(max_examples=60, deadline=None)
@given(size=st.tuples(st.integers(1, 12), st.integers(1, 12)), n_out=st.integers(1, 10),
       path=st.sampled_from([*PATHS, "im2col", "matmul", "shifted", "winograd", "blocked"]), **GEOMETRY)
def test_property_every_path_is_the_formula(size, kernel, channels, n_out, strides, dilations, padding,
                                            path, seed):
    geometry = forced_geometry(path, size, kernel, n_out, strides, dilations, padding, seed)
    if geometry is None:
        return
    (fh, fw), n_out, strides, dilations, _, _ = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, *size, channels)).astype(np.float32)
    w = rank_one_bank(rng, fh, fw, channels, n_out) if path == "separable" else \
        rng.standard_normal((fh, fw, channels, n_out)).astype(np.float32)
    result = run_path(x, w, strides, padding, dilations, path)
    assert_close_to_formula(result, x, w, strides, padding, dilations, **TOLERANCES.get(path, {}))


@settings(max_examples=80, deadline=None)
@given(size=st.tuples(st.integers(1, 10), st.integers(1, 10)), n_out=st.integers(1, 6),
       path=st.sampled_from(conv_paths.LATE_BANK_CHECK), bad=st.sampled_from([np.nan, np.inf, -np.inf]), **GEOMETRY)
def test_property_a_bad_weight_shows_in_the_output_where_the_check_waits_for_it(
        size, kernel, channels, n_out, strides, dilations, padding, path, bad, seed):
    # conv2d checks a bank larger than its result only when the result is not finite: on the
    # paths that allow it, one NaN or infinity anywhere in the bank must make some output so
    geometry = forced_geometry(path, size, kernel, n_out, strides, dilations, padding, seed)
    if geometry is None:
        return
    (fh, fw), n_out, strides, dilations, gh, gw = geometry
    height, width = size
    # the rule against a count of the image rows each kernel row meets
    meets = [any(0 <= i * strides[0] + u * dilations[0] - gh.pad_before < height for i in range(gh.out))
             for u in range(fh)]
    assert conv_paths.bank_shows_in_output(path, gh, gw) == (path != "blocked" or all(meets))
    if not conv_paths.bank_shows_in_output(path, gh, gw):
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, height, width, channels)).astype(np.float32)
    w = rng.standard_normal((fh, fw, channels, n_out)).astype(np.float32)
    w[tuple(int(rng.integers(n)) for n in w.shape)] = bad
    assert not np.isfinite(run_path(x, w, strides, padding, dilations, path)).all()


def test_the_blocked_path_leaves_out_kernel_rows_that_meet_only_padding(monkeypatch):
    # a 5x5 kernel on a 1-row image: rows 0, 1, 3 and 4 of the kernel meet only zero padding, and
    # the blocked path leaves them out, so a NaN there does not show: conv2d checks such a bank first
    x = np.ones((1, 1, 8, 4), np.float32)
    w = np.ones((5, 5, 4, 4), np.float32)
    w[0, 2, 1, 3] = np.nan
    gh, gw = axis(1, 5, 1, "SAME", 1), axis(8, 5, 1, "SAME", 1)
    assert not conv_paths.bank_shows_in_output("blocked", gh, gw)
    assert np.isfinite(run_path(x, w, (1, 1), "SAME", (1, 1), "blocked")).all()
    monkeypatch.setattr(conv_paths, "LATE_CHECK_MIN_WEIGHTS", 0)  # this small bank would be checked first anyway
    with pytest.raises(ValueError, match="NaN or infinity"):
        conv_paths.correlate(x, w, (1, 1), (1, 1), gh, gw, path="blocked",
                             check_bank=lambda: ops._filters(w, 4, "filters", "out_channels"))


POOL_CASES = [
    ((1, 8, 8, 3), (2, 2), (2, 2), "VALID"),
    ((2, 9, 7, 2), (3, 3), (2, 2), "SAME"),
    ((1, 5, 6, 1), (2, 3), (1, 2), "SAME"),
    ((1, 1, 1, 4), (3, 3), (2, 2), "SAME"),  # a 1x1 image: only one cell per window
    ((1, 7, 7, 5), (3, 2), (3, 1), "VALID"),
]


@pytest.mark.parametrize("shape,ksize,strides,padding", POOL_CASES)
def test_pools_match_the_formula_with_negative_values(shape, ksize, strides, padding):
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(shape) - 3).astype(np.float32)  # all negative: padding must never win
    got_max = ops.max_pool2d(x, ksize, strides, padding)
    got_avg = ops.avg_pool2d(x, ksize, strides, padding)
    np.testing.assert_array_equal(got_max, naive.pool2d(x, ksize, strides, padding, np.max))
    np.testing.assert_allclose(got_avg, naive.pool2d(x, ksize, strides, padding, np.mean), rtol=1e-6, atol=1e-6)


def test_any_dtype_or_layout_reuses_the_one_compiled_signature():
    from convfilter import _jit

    rng = np.random.default_rng(9)
    base = rng.standard_normal((2, 9, 8, 3))
    dense = rng.standard_normal((3, 3, 3, 2))
    inputs = [base, np.asfortranarray(base), base[:, ::-1], (base * 10).astype(np.int16),
              base.astype(np.float32)[..., ::1]]
    inputs.append(base[..., :1].astype(np.float32))  # one channel: read in place by the separable kernel
    frozen = base.astype(np.float32)
    frozen.flags.writeable = False  # as a decoded float TIFF is
    inputs += [frozen, frozen[..., :1]]
    samples = (base * 40 + 128).clip(0, 255).astype(np.uint8)
    decoded = samples.copy()
    decoded.flags.writeable = False  # as Pillow's decoded images are
    ops.warm_up()  # every kernel once (the cost model may send these small calls to other paths)
    ops.set_backend("numba")  # these tiny calls would run on the numpy kernels
    try:
        for scaled in (samples, decoded, samples.astype(np.uint16)):  # 16-bit samples take the float copy
            ops.conv2d(scaled, np.ones((3, 1, 3, 1)), input_scale=255)
        for x in inputs:
            ops.conv2d(x, dense[:, :, : x.shape[3]], strides=np.int64(2), dilations=(1, 2))
            ops.conv2d(x, dense[:, :, : x.shape[3]], bias=np.float32(1), activation="relu")
            ops.conv2d(x, np.ones((3, 1, x.shape[3], 1)), bias=[0.5], activation="tanh")
            ops.conv2d(x, np.ones((3, 1, x.shape[3], 1)))  # separable (and channel sum for several channels)
            ops.depthwise_conv2d(x, dense[:, :, : x.shape[3], :1], strides=2, dilations=np.int64(1))
            ops.depthwise_conv2d(x, dense[:, :, : x.shape[3]], bias=np.float32(1), activation="relu")
            ops.max_pool2d(x, 2)
            ops.avg_pool2d(x, (3, 2), 2, "SAME")
    finally:
        ops.set_backend("auto")
    for name in _jit.KERNELS:
        assert len(getattr(_jit, name).signatures) == 1, name


# --- the matrix-product paths (BLAS) ---------------------------------------------------------

GEMM_CASES = [
    # (batch, height, width, channels, kernel, filters, strides, padding, dilations)
    (1, 9, 11, 1, 3, 2, (1, 1), "SAME", (1, 1)),
    (3, 7, 5, 2, 1, 3, (1, 1), "VALID", (1, 1)),
    (1, 13, 12, 16, 3, 16, (2, 2), "SAME", (1, 1)),
    (3, 10, 9, 33, 5, 7, (1, 2), "SAME", (1, 1)),
    (1, 15, 14, 64, 7, 5, (2, 1), "VALID", (1, 1)),
    (1, 12, 13, 130, 3, 9, (1, 1), "SAME", (2, 2)),
    (3, 11, 8, 130, 1, 130, (2, 2), "SAME", (1, 1)),
    (1, 6, 7, 40, 4, 3, (2, 2), "SAME", (1, 3)),  # even kernel: the odd padding cell bottom/right
    (1, 1, 1, 24, 3, 4, (1, 1), "SAME", (1, 1)),  # every tap but the centre is padding
    (2, 7, 9, 20, 3, 11, (1, 1), "SAME", (1, 1)),  # odd sizes: Winograd's last 2x2 blocks half outside
    (1, 8, 5, 9, 3, 6, (1, 1), "VALID", (1, 1)),
    (3, 2, 3, 17, 7, 6, (2, 2), "SAME", (1, 1)),  # a kernel larger than the image
    (2, 9, 13, 40, 5, 9, (1, 1), "SAME", (1, 1)),  # blocked: window rows of 200 floats
    (1, 8, 11, 160, 5, 6, (2, 1), "SAME", (3, 1)),  # blocked: of 800 floats, pieces of 256
    (1, 30, 250, 24, 3, 7, (1, 1), "SAME", (1, 1)),  # blocked: blocks of 8 pixels over a long row
]


def gemm_paths(kernel, strides, dilations, n_out=4, out_w=4):
    paths = ["im2col", *(["matmul"] if kernel == 1 else []), *(["shifted"] if strides == (1, 1) else [])]
    paths += ["winograd"] if conv_paths.winograd_fits((kernel, kernel), strides, dilations) else []
    return paths + (["blocked"] if conv_paths.blocked_fits((kernel, kernel, 1, n_out), (1, out_w), dilations) else [])


@pytest.mark.parametrize("case", GEMM_CASES, ids=lambda c: "x".join(map(str, c[:6])) + f"-s{c[6]}-{c[7]}-d{c[8]}")
@pytest.mark.parametrize("small_map", ["tiles", "one product", "parts of the sum"])
def test_matrix_product_paths_match_the_formula(case, small_map, monkeypatch):
    """Each map as tiles and bands of rows, and as the one product of a small map, whole or in
    parts of its sum (every case here is small enough for either)."""
    monkeypatch.setattr(conv_paths, "SMALL_MAP_PIXELS", 0 if small_map == "tiles" else 1 << 30)
    if small_map == "parts of the sum":
        monkeypatch.setattr(conv_paths, "SMALL_MAP_PARALLEL_WORK", 0)
        monkeypatch.setattr(conv_paths, "DEPTH_PARTS", 3)
        monkeypatch.setattr(conv_paths, "MIN_PART_DEPTH", 1)
    n_img, height, width, channels, k, n_out, strides, padding, dilations = case
    rng = np.random.default_rng(sum(case[:6]) * 7 + strides[0])
    x = rng.standard_normal((n_img, height, width, channels)).astype(np.float32)
    w = rng.standard_normal((k, k, channels, n_out)).astype(np.float32)
    out_w = axis(width, k, strides[1], padding, dilations[1]).out
    for path in gemm_paths(k, strides, dilations, n_out, out_w):
        result = run_path(x, w, strides, padding, dilations, path, sum_channels=False)
        assert_close_to_formula(result, x, w, strides, padding, dilations, **TOLERANCES.get(path, {}))


@pytest.mark.parametrize("tile_floats", [1, 40, 300, 1 << 16])  # one pixel, part of a row, rows, all
@pytest.mark.parametrize("threads", [1, 3])
def test_im2col_tiles_and_bands_cover_every_output(tile_floats, threads, monkeypatch):
    """Tiles of whole rows, of part of a row and of one pixel, on bands that start and stop
    inside images of a batch: every output is written once, with its own windows (the
    shifted path's tiles are whole rows: one row or several; a strided 1x1 kernel's tiles
    read the image in place, or copies of its pixels)."""
    rng = np.random.default_rng(tile_floats + threads)
    x = rng.standard_normal((3, 9, 10, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 5, 4)).astype(np.float32)
    one = rng.standard_normal((1, 1, 5, 6)).astype(np.float32)
    monkeypatch.setattr(conv_paths, "TILE_FLOATS", tile_floats)
    monkeypatch.setattr(conv_paths, "SMALL_MAP_PIXELS", 0)
    monkeypatch.setattr(conv_paths, "SHIFT_TILE_FLOATS", tile_floats)
    monkeypatch.setattr(conv_paths, "WINOGRAD_BLOCKS", tile_floats // 8)
    monkeypatch.setattr(thread_pool, "MIN_PARALLEL_WORK", 0)
    ops.set_num_threads(threads)
    try:
        for strides in ((1, 1), (2, 3)):
            result = run_path(x, w, strides, "SAME", (1, 1), "im2col")
            assert_close_to_formula(result, x, w, strides, "SAME", (1, 1))
            for view_floats in (0, 1 << 16):  # a strided 1x1 kernel's pixels copied, or read in place
                monkeypatch.setattr(conv_paths, "STRIDED_VIEW_FLOATS", view_floats)
                result = run_path(x, one, strides, "VALID", (1, 1), "matmul")
                assert_close_to_formula(result, x, one, strides, "VALID", (1, 1))
        for padding, dilations in (("SAME", (1, 1)), ("VALID", (2, 3)), ("SAME", (2, 1))):
            result = run_path(x, w, (1, 1), padding, dilations, "shifted")
            assert_close_to_formula(result, x, w, (1, 1), padding, dilations)
        for size in (3, 5):
            square = rng.standard_normal((size, size, 5, 4)).astype(np.float32)
            for padding in ("SAME", "VALID"):
                result = run_path(x, square, (1, 1), padding, (1, 1), "winograd")
                assert_close_to_formula(result, x, square, (1, 1), padding, (1, 1), **TOLERANCES["winograd"])
    finally:
        ops.set_num_threads(None)


def test_window_taps_used_counts_taps_any_filter_uses():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((3, 2, 4, 6)).astype(np.float32)
    assert conv_paths.window_taps_used(w) == 24
    w[0, 1, 2, 0] = 0.0  # the first filter misses a tap another one uses
    assert conv_paths.window_taps_used(w) == 24
    w[1, 0, 3, :] = 0.0
    w[2, 1, 0, :] = 0.0
    assert conv_paths.window_taps_used(w) == 22
    assert conv_paths.window_taps_used(np.zeros((2, 2, 3, 1), np.float32)) == 0


@pytest.mark.parametrize("path,kernel", [("im2col", 3), ("matmul", 1), ("shifted", 3), ("winograd", 3), ("winograd", 5),
                                         ("blocked", 3), ("blocked", 1), ("small map", 3), ("small map", 1)])
@pytest.mark.parametrize("activation", ["none", "relu", "relu6", "sigmoid"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matrix_product_paths_apply_bias_and_activation_per_tile(path, kernel, activation, with_bias,
                                                               monkeypatch):
    """The bias and the activation are applied tile by tile (or, on a small map, once on the
    sum of its parts): exactly the unfused result."""
    rng = np.random.default_rng(kernel * 11 + len(activation) + with_bias)
    x = rng.standard_normal((2, 11, 9, 20)).astype(np.float32)
    w = rng.standard_normal((kernel, kernel, 20, 6)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32) if with_bias else None
    if path == "small map":  # in three parts of the sum
        path = "im2col" if kernel > 1 else "matmul"
        monkeypatch.setattr(conv_paths, "SMALL_MAP_PARALLEL_WORK", 0)
        monkeypatch.setattr(conv_paths, "DEPTH_PARTS", 3)
        monkeypatch.setattr(conv_paths, "MIN_PART_DEPTH", 1)
    else:
        monkeypatch.setattr(conv_paths, "SMALL_MAP_PIXELS", 0)
    monkeypatch.setattr(conv_paths, "TILE_FLOATS", 500)
    monkeypatch.setattr(conv_paths, "SHIFT_TILE_FLOATS", 100)
    strides = (1, 1) if path in ("shifted", "winograd") else (2, 1)
    gh, gw = axis(11, kernel, strides[0], "SAME", 1), axis(9, kernel, 1, "SAME", 1)
    result = conv_paths.correlate(x, w, strides, (1, 1), gh, gw, path=path, bias=bias, activation=activation)
    linear = run_path(x, w, strides, "SAME", (1, 1), path)
    assert_close_to_formula(linear, x, w, strides, "SAME", (1, 1), **TOLERANCES.get(path, {}))
    np.testing.assert_array_equal(result, ops.activate(linear if bias is None else linear + bias, activation))


def l1_crowding(span: int, width: int) -> int:
    """The most of the 16 matrices' first rows (of ``width`` float32, ``span`` rows apart) that
    share one of L1's 64 sets of 64-byte lines, counted byte by byte."""
    lines = [{(t * span * width * 4 + byte) // 64 % 64 for byte in range(width * 4)} for t in range(16)]
    return max(sum(s in matrix for matrix in lines) for s in range(64))


@pytest.mark.parametrize("count,width,span", [
    (224, 64, 225),  # 1x112x112x64: 56 KB apart, all 16 rows in the same 4 sets; 256 bytes more each
    (120, 16, 121),  # 7.5 KB apart, 8 sets of two rows; 64 bytes more each: 16 sets
    (196, 256, 197),  # 196 KB apart, all in the same 16 sets; 1 KB more each: 4 rows a set
    (49, 512, 49),  # 98 KB apart, 8 rows a set, as few as rows of 2 KB allow
    (120, 24, 120),  # 11.25 KB apart: 16 different first sets already
])
def test_the_16_winograd_matrices_are_spread_over_l1s_sets(count, width, span):
    assert conv_paths.winograd_span(count, width) == span
    assert l1_crowding(span, width) <= 8  # L1's ways
    assert span == count or l1_crowding(span, width) < l1_crowding(count, width)


def test_path_names_are_checked():
    x = np.ones((1, 4, 4, 2), np.float32)
    w = np.ones((3, 3, 2, 1), np.float32)
    with pytest.raises(ValueError, match="unknown conv path 'bogus'; choose 'auto' or one of planar, separable"):
        run_path(x, w, (1, 1), "SAME", (1, 1), "bogus")
    with pytest.raises(ValueError, match="matmul path needs a 1x1 kernel"):
        run_path(x, w, (1, 1), "SAME", (1, 1), "matmul")
    with pytest.raises(ValueError, match="sum_channels applies to the planar and separable paths"):
        run_path(x, w, (1, 1), "SAME", (1, 1), "im2col", sum_channels=True)
    with pytest.raises(ValueError, match=r"shifted path needs strides 1, got \(2, 1\)"):
        run_path(x, w, (2, 1), "SAME", (1, 1), "shifted")
    with pytest.raises(ValueError, match=r"winograd path needs a 3x3 or 5x5 kernel, strides 1 and dilations 1, got a 3x3 "
                                         r"kernel, strides \(1, 1\), dilations \(2, 1\)"):
        run_path(x, w, (1, 1), "SAME", (2, 1), "winograd")
    with pytest.raises(ValueError, match=r"blocked path needs at least 4 output columns, 4 filters and dilation 1 "
                                         r"across, got 4 columns, 1 filters, dilations \(1, 1\)"):
        run_path(x, w, (1, 1), "SAME", (1, 1), "blocked")
    with pytest.raises(ValueError, match=r"got 2 columns, 4 filters, dilations \(1, 1\)"):
        run_path(x, np.ones((3, 3, 2, 4), np.float32), (1, 2), "SAME", (1, 1), "blocked")
    with pytest.raises(ValueError, match=r"got 4 columns, 4 filters, dilations \(1, 2\)"):
        run_path(x, np.ones((1, 1, 2, 4), np.float32), (1, 1), "SAME", (1, 2), "blocked")
    assert set(ops.CONV_PATHS) == {"planar", "separable", "matmul", "im2col", "shifted", "winograd", "blocked"}


@pytest.mark.parametrize("x_shape,w_shape,expected", [
    ((1, 56, 56, 128), (1, 1, 128, 256), "matmul"),  # the 1x1 layers of every ResNet/MobileNet block
    # ... but a deep sum over few filters is faster as the blocked path's vector products, read
    # in place (two threads: blocked 3.3 ms, matmul 4.1)
    ((1, 112, 112, 256), (1, 1, 256, 64), "blocked"),
    ((1, 112, 112, 64), (3, 3, 64, 64), "winograd"),
    ((8, 28, 28, 256), (3, 3, 256, 256), "winograd"),
    # 16 blocks: the transforms do not pay; a 98 KiB output: the blocked path's runs of two
    # vectors of 16 filters (two threads: blocked 1.7 ms, im2col 2.1 ms); AVX2's runs of two
    # vectors of 8 are not offered 512 filters (a Zen3, two threads: blocked 6.3 ms, im2col 4.1)
    ((1, 7, 7, 512), (3, 3, 512, 512), {"avx512": "blocked", "avx2": "im2col"}),
    # measured on one thread: blocked 6.7 ms, im2col 7.4 ms (3.8 and 4.5 ms on two)
    ((1, 56, 56, 64), (5, 5, 64, 64), "blocked"),
    ((1, 427, 640, 3), (7, 7, 3, 2), "planar"),  # few channels, few filters: the direct loops
    ((1, 2048, 2048, 1), (31, 31, 1, 1), "separable"),  # a large Gaussian
    # 16 channels on a large image: the blocked path's vector products (measured: one thread,
    # blocked 4.4 ms, Winograd 9.3; two threads 2.7 and 2.6)
    ((1, 224, 224, 16), (3, 3, 16, 16), "blocked"),
    # a 1x1 kernel on 3 channels: the direct loops do little but store rows; BLAS writes 268 MB faster
    ((1, 1024, 1024, 3), (1, 1, 3, 64), "matmul"),
    ((1, 112, 112, 3), (3, 3, 3, 16), "planar"),  # a first layer stays on the direct loops
    ((1, 1024, 1024, 3), (3, 3, 3, 16), "planar"),  # ... on a large image too
    # 32 bands of 3-4 rows, 49 small products each: the shifted path loses; so does im2col's
    # BLAS with 16 filters (one thread: blocked 3.7 ms, im2col 5.5 ms, shifted 6.8 ms)
    ((1, 112, 112, 16), (7, 7, 16, 16), "blocked"),
    # AVX2's transforms run on vectors of 8: a 3x3 layer of 32 channels takes the blocked path (a
    # Zen3, two threads: 56x56x32 * 3x3x32x32 blocked 0.84 ms, winograd 1.08), one of 64 winograd
    # (56x56x64 * 3x3x64x64 blocked 2.26 ms, winograd 1.57)
    ((1, 56, 56, 32), (3, 3, 32, 32), {"avx2": "blocked"}),
    ((1, 56, 56, 64), (3, 3, 64, 64), {"avx2": "winograd"}),
    # a small call: the blocked path's is shorter than the window copy and BLAS's small product
    # (a Zen3, two threads: 7x7x32 * 3x3x32x32 79 against im2col's 96 us), and a deep layer on a
    # small map, whose Winograd transforms do not pay (14x14x256 * 3x3x256x256 2.71 against 3.48 ms)
    ((1, 7, 7, 32), (3, 3, 32, 32), "blocked"),
    ((1, 14, 14, 256), (3, 3, 256, 256), {"avx2": "blocked"}),
    # 5x5 over many channels on a 28x28 map: F(2x2, 5x5) (a Zen4, two threads: winograd 9.2 ms,
    # blocked 13.7); on a 14x14 map its 36 transformed filter matrices cost more than the
    # products save (6.1 against 3.7 ms), unless a batch shares them (8x14x14x256: 20.9 against 26.4)
    ((1, 28, 28, 256), (5, 5, 256, 256), {"avx512": "winograd"}),
    ((1, 14, 14, 256), (5, 5, 256, 256), {"avx512": "blocked"}),
    ((8, 14, 14, 256), (5, 5, 256, 256), {"avx512": "winograd"}),
])
@pytest.mark.parametrize("vectors", ["avx512", "avx2"])
def test_the_cost_model_picks_the_expected_path(x_shape, w_shape, expected, vectors, monkeypatch):
    """The choices for the blocked kernel Numba compiles where AVX-512 runs and where only AVX2
    does, whichever this machine has (an expectation given once holds for both)."""
    if isinstance(expected, dict):
        if vectors not in expected:
            pytest.skip(f"measured where Numba compiles for {', '.join(expected)} only")
        expected = expected[vectors]
    rng = np.random.default_rng(4)
    w = rng.standard_normal(w_shape).astype(np.float32)
    if expected == "separable":
        w = np.outer(np.hanning(33)[1:-1], np.hanning(33)[1:-1]).astype(np.float32)[:, :, None, None]
    out_shape = (x_shape[0], x_shape[1], x_shape[2], w_shape[3])
    monkeypatch.setattr(_backend, "numba_imported", lambda: True)  # as in a server or a loop of calls
    monkeypatch.setattr(_backend, "is_cached", lambda name: True)
    from convfilter import _jit

    lanes, pixels = {"avx512": (16, 8), "avx2": (8, 6)}[vectors]
    monkeypatch.setattr(_jit, "LANES", lanes)
    monkeypatch.setattr(_jit, "BLOCK_PIXELS", pixels)
    monkeypatch.setattr(_jit, "BLOCKED_WIDE", 2)
    monkeypatch.setattr(conv_paths, "_choices", {})
    chosen = conv_paths.choose_path(x_shape, w, (1, 1), (1, 1), out_shape, conv_paths.separable_factors(w))
    assert chosen == expected


@pytest.mark.parametrize("numba_imported,cached,backend,expected", [
    (True, True, "auto", "blocked"), (False, True, "auto", "im2col"), (True, False, "auto", "im2col"),
    (False, False, "numba", "blocked"), (True, True, "numpy", "im2col"),
])
def test_the_blocked_path_is_chosen_only_where_numba_runs(numba_imported, cached, backend, expected, monkeypatch):
    """It has no numpy twin: a process that has not paid Numba's start-up, or would compile the
    kernel first, or runs numpy's kernels, takes the BLAS paths; forcing it on numpy's kernels
    is an error, not a silent import."""
    w = np.random.default_rng(4).standard_normal((5, 5, 64, 64)).astype(np.float32)
    monkeypatch.setattr(_backend, "numba_imported", lambda: numba_imported)
    monkeypatch.setattr(_backend, "loaded", lambda name: False)
    monkeypatch.setattr(_backend, "is_cached", lambda name: cached)
    ops.set_backend(backend)
    try:
        assert conv_paths.choose_path((1, 56, 56, 64), w, (1, 1), (1, 1), (1, 56, 56, 64), None) == expected
        if backend == "numpy":
            with pytest.raises(ValueError, match="blocked path runs on Numba's compiled kernels only"):
                run_path(np.ones((1, 6, 6, 64), np.float32), w, (1, 1), "SAME", (1, 1), "blocked")
    finally:
        ops.set_backend("auto")


def _blocked_lanes() -> int:
    from convfilter import _jit

    return _jit.LANES


@pytest.mark.parametrize("source", ["copy", "the image in place"])
@pytest.mark.parametrize("filters", ["4", "lanes", "lanes + 5", "2 lanes", "3 lanes + 5"])
@pytest.mark.parametrize("width,strides", [(5, (1, 1)), (13, (1, 1)), (27, (2, 2)), (12, (1, 1)), (18, (2, 2))])
def test_blocked_vector_blocks_cover_every_output(source, filters, width, strides, monkeypatch):
    """The blocked kernel's blocks of BLOCK_PIXELS pixels (8, or 6 with AVX2: the last block of a
    row of the 4 or more outputs left for it, or of 4 overlapping the block before when fewer are
    left, as rows of 5, 13, 14, 12 and 9 outputs leave one or the other) and vectors of LANES
    filters (the last one filled up with zero filters, stored a filter at a time; whole ones a
    vector at a time with the bias and the ReLU; two whole vectors in one run where the runs are
    of two), read from the padded copy or from the image in place a piece of rows at a time by
    each band, on a batch: the formula, the same bits either way, and the fused bias and ReLU
    exactly the unfused ones (NaN kept)."""
    lanes = _blocked_lanes()
    n_out = {"4": 4, "lanes": lanes, "lanes + 5": lanes + 5, "2 lanes": 2 * lanes,
             "3 lanes + 5": 3 * lanes + 5}[filters]
    if source == "copy":  # however few columns the edge copy would take
        monkeypatch.setattr(conv_paths, "BLOCKED_IN_PLACE_EDGE", 0)
        conv_paths.forget_plans()
    if source == "the image in place":  # pieces of 4 output rows (or 2 with a stride), each band
        monkeypatch.setattr(conv_paths, "WHOLE_COPY_BYTES", 0)
        monkeypatch.setattr(conv_paths, "PIECE_BYTES", 1)
        monkeypatch.setattr(thread_pool, "MIN_PARALLEL_WORK", 0)
        monkeypatch.setattr(conv_paths, "BLOCKED_BAND_PIXELS", 1)
        conv_paths.forget_plans()
    rng = np.random.default_rng(width * 31 + n_out)
    x = rng.standard_normal((2, 20, width, 12)).astype(np.float32)
    x[1, 14, 2, 5] = np.nan
    w = rng.standard_normal((3, 5, 12, n_out)).astype(np.float32)
    bias = rng.standard_normal(n_out).astype(np.float32)
    linear = run_path(x, w, strides, "SAME", (1, 1), "blocked")
    finite = np.isfinite(linear)
    assert 0 < (~finite).sum() and finite.any()
    expected = naive.conv2d(x, w, strides, "SAME", (1, 1))
    magnitude = naive.conv2d(np.abs(np.nan_to_num(x)), np.abs(w), strides, "SAME", (1, 1))
    assert np.array_equal(np.isnan(linear), np.isnan(expected))
    assert np.all(np.abs(linear - expected)[finite] <= 8 * np.finfo(np.float32).eps * magnitude[finite])
    gh, gw = axis(20, 3, strides[0], "SAME", 1), axis(width, 5, strides[1], "SAME", 1)
    fused = conv_paths.correlate(x, w, strides, (1, 1), gh, gw, path="blocked", bias=bias, activation="relu")
    np.testing.assert_array_equal(fused, ops.relu(linear + bias))
    assert (fused == 0).any() and (fused > 0).any()
    if source == "the image in place":
        assert conv_paths._piece_rows(12, 22, width + 4, gh.out, strides[0], 3, 1) is not None
        monkeypatch.setattr(conv_paths, "WHOLE_COPY_BYTES", 1 << 30)
        monkeypatch.setattr(conv_paths, "BLOCKED_IN_PLACE_EDGE", 0)
        conv_paths.forget_plans()
        np.testing.assert_array_equal(run_path(x, w, strides, "SAME", (1, 1), "blocked"), linear)


def test_the_blocked_layout_reads_every_window_from_its_source():
    """Every block of every row (4 to 40 outputs, windows 1-7 wide, strides 1-3, SAME and VALID)
    reads columns that its source has: a block inside the image reads the image's row, a block
    reaching into the zero padding the edge copy's, whose columns there are those of the padded
    row, zeros included; only the blocks that reach the padding read the edge copy."""
    rng = np.random.default_rng(5)
    checked = 0
    for width in range(4, 41):
        for fw in range(1, 8):
            for sw in (1, 2, 3):
                for padding in ("SAME", "VALID"):
                    if padding == "VALID" and fw > width:
                        continue
                    gw = axis(width, fw, sw, padding, 1)
                    if gw.out < 4:
                        continue
                    x = rng.standard_normal((2, 3, width, 2)).astype(np.float32)
                    padded = np.pad(x, ((0, 0), (0, 0), (gw.pad_before, gw.pad_after), (0, 0)))
                    edge, table = conv_paths.blocked_edges(x, gw, gw.out)
                    assert not table.flags.writeable and not edge.flags.writeable
                    covered = np.zeros(gw.out, bool)
                    for j0, pixels, reads_edge, first, row_floats in table:
                        span = (pixels - 1) * sw + fw  # the columns its windows read
                        source = edge if reads_edge else x
                        assert row_floats == source.shape[2] * 2 and first % 2 == 0
                        column = first // 2
                        assert 0 <= column and column + span <= source.shape[2]
                        np.testing.assert_array_equal(source[:, :, column : column + span],
                                                      padded[:, :, j0 * sw : j0 * sw + span])
                        inside = j0 * sw >= gw.pad_before and j0 * sw + span <= gw.pad_before + width
                        assert bool(reads_edge) != inside
                        covered[j0 : j0 + pixels] = True
                        checked += 1
                    assert covered.all()
                    if not (gw.pad_before or gw.pad_after):
                        assert edge.size == 0
    assert checked > 3000


@pytest.mark.parametrize("shape,kernel,strides,dilations,padding", [
    ((2, 17, 23, 40), (3, 3), (1, 1), (1, 1), "SAME"),  # pieces of two window rows, clipped at the top and bottom
    ((2, 41, 23, 40), (3, 3), (2, 2), (2, 1), "SAME"),  # dilated rows, some of a piece above the image
    ((1, 19, 26, 60), (5, 5), (2, 2), (1, 1), "SAME"),  # a window row in pieces of 256 products
    ((1, 45, 7, 16), (7, 7), (2, 1), (1, 1), "SAME"),  # a narrow image: the edge copy's two parts overlap
    ((2, 12, 30, 24), (3, 3), (1, 2), (1, 1), "SAME"),  # one piece: the direct runs, clipped
    ((1, 13, 20, 16), (4, 4), (3, 3), (1, 1), "VALID"),  # nothing padded: the image itself, whole
    ((2, 2, 9, 16), (2, 3), (1, 1), (4, 1), "SAME"),  # every window row in the padding: the bias alone
])
def test_the_blocked_path_reads_a_large_image_in_place(shape, kernel, strides, dilations, padding, monkeypatch):
    """A large image (here every image with enough output rows for pieces, by the thresholds)
    is read in place, a piece of output rows at a time by each band: the window rows in the
    zero padding are left out of the runs and the blocks at a row's ends read the edge copy of
    their columns, never a padded copy of the image. The same bits as the padded copy (whose
    rows of zero padding are left out the same way), with a bias and the ReLU; the formula; the
    image unchanged."""
    rng = np.random.default_rng(sum(shape) + kernel[0])
    n_out = 2 * _blocked_lanes() + 3
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((*kernel, shape[3], n_out)).astype(np.float32)
    bias = rng.standard_normal(n_out).astype(np.float32)
    gh = axis(shape[1], kernel[0], strides[0], padding, dilations[0])
    gw = axis(shape[2], kernel[1], strides[1], padding, dilations[1])
    before = x.copy()

    def blocked():
        return conv_paths.correlate(x, w, strides, dilations, gh, gw, path="blocked", bias=bias, activation="relu")

    monkeypatch.setattr(conv_paths, "BLOCKED_IN_PLACE_EDGE", 0)  # the padded copy, whatever its edges
    conv_paths.forget_plans()
    copied = blocked()
    monkeypatch.setattr(conv_paths, "WHOLE_COPY_BYTES", 0)
    monkeypatch.setattr(conv_paths, "PIECE_BYTES", 1)
    monkeypatch.setattr(thread_pool, "MIN_PARALLEL_WORK", 0)
    monkeypatch.setattr(conv_paths, "BLOCKED_BAND_PIXELS", 1)
    conv_paths.forget_plans()

    def no_copy(*args, **kwargs):
        raise AssertionError("a large image was copied")

    monkeypatch.setattr(conv_paths, "padded_copy", no_copy)
    padded_h, padded_w = gh.pad_before + shape[1] + gh.pad_after, gw.pad_before + shape[2] + gw.pad_after
    pieces = conv_paths._piece_rows(shape[3], padded_h, padded_w, gh.out, strides[0], kernel[0], dilations[0])
    if padding == "SAME" and shape[1] > 2:
        assert pieces is not None
    if pieces is not None:
        np.testing.assert_array_equal(blocked(), copied)
    assert_close_to_formula(copied, x, w, strides, padding, dilations,
                            reference=lambda *args: ops.relu(naive.conv2d(*args) + bias),
                            magnitude=lambda *args: naive.conv2d(*args) + np.abs(bias))
    np.testing.assert_array_equal(x, before)
    if shape[1] == 2:
        np.testing.assert_array_equal(copied, np.broadcast_to(ops.relu(bias), copied.shape))


@pytest.mark.parametrize("width,kernel,strides,bank_limit,in_place", [
    (60, (3, 3), (1, 1), 1 << 20, True),  # blocks of 8: the edge copy holds the 9 + 9 columns of the first and last
    (60, (5, 5), (2, 2), 1 << 20, True),
    (60, (3, 3), (1, 1), 1000, False),  # a bank of more than the limit: copied
    (22, (3, 3), (1, 1), 1 << 20, False),  # the first and last blocks read 17 of 22 columns: copied
    (14, (7, 7), (2, 2), 1 << 20, False),  # every block reaches the padding
])
def test_a_small_image_is_read_in_place_when_its_edges_are_narrow(width, kernel, strides, bank_limit, in_place,
                                                                   monkeypatch):
    """An image too small for pieces is read in place all the same, one piece a band, when the
    edge copy of the columns that the blocks at a row's ends read is at most
    BLOCKED_IN_PLACE_EDGE of its columns and the bank at most BLOCKED_IN_PLACE_BANK bytes;
    otherwise, and with the fraction set to 0, it is copied. The same bits either way, the
    formula, the image unchanged."""
    monkeypatch.setattr(conv_paths, "BLOCKED_IN_PLACE_BANK", bank_limit)
    conv_paths.forget_plans()
    rng = np.random.default_rng(width + kernel[0])
    x = rng.standard_normal((2, 11, width, 24)).astype(np.float32)
    w = rng.standard_normal((*kernel, 24, _blocked_lanes() + 3)).astype(np.float32)
    gh, gw = axis(11, kernel[0], strides[0], "SAME", 1), axis(width, kernel[1], strides[1], "SAME", 1)
    before = x.copy()
    assert conv_paths._piece_rows(24, gh.pad_before + 11 + gh.pad_after, gw.pad_before + width + gw.pad_after,
                                  gh.out, strides[0], kernel[0], 1) is None  # not large
    edge_width = conv_paths.blocked_layout(gw.out, width, strides[1], kernel[1], gw.pad_before, 24)[3]
    bank_fits = w.nbytes <= conv_paths.BLOCKED_IN_PLACE_BANK
    assert (edge_width <= conv_paths.BLOCKED_IN_PLACE_EDGE * width and bank_fits) == in_place
    copies = []
    real_copy = conv_paths.padded_copy
    monkeypatch.setattr(conv_paths, "padded_copy", lambda *args: copies.append(args) or real_copy(*args))
    result = run_path(x, w, strides, "SAME", (1, 1), "blocked")
    assert bool(copies) != in_place
    monkeypatch.setattr(conv_paths, "BLOCKED_IN_PLACE_EDGE", 0)
    conv_paths.forget_plans()
    copies.clear()
    np.testing.assert_array_equal(run_path(x, w, strides, "SAME", (1, 1), "blocked"), result)
    assert copies
    assert_close_to_formula(result, x, w, strides, "SAME", (1, 1))
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("kernel,strides,padding", [((1, 1), (1, 1), "SAME"), ((1, 1), (2, 2), "SAME"),
                                                     ((3, 3), (2, 1), "VALID")])
def test_the_blocked_path_reads_an_unpadded_image_in_place(kernel, strides, padding, monkeypatch):
    """Nothing to pad (a 1x1 kernel, or VALID): the kernel reads the image itself, never pieces
    of a copy, even where an image's copy would be made in pieces; the sums of 300 channels run
    over two pieces of the depth. The formula, and the image unchanged."""
    monkeypatch.setattr(conv_paths, "WHOLE_COPY_BYTES", 0)
    monkeypatch.setattr(conv_paths, "PIECE_BYTES", 1)
    conv_paths.forget_plans()

    def no_pieces(*args):
        raise AssertionError("an unpadded image was copied in pieces")

    monkeypatch.setattr(conv_paths, "_blocked_pieces_of_band", no_pieces)
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 24, 13, 300)).astype(np.float32)
    w = rng.standard_normal((*kernel, 300, 20)).astype(np.float32)
    before = x.copy()
    result = run_path(x, w, strides, padding, (1, 1), "blocked")
    assert_close_to_formula(result, x, w, strides, padding, (1, 1))
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("filters", ["lanes", "lanes + 5", "2 lanes", "4 lanes"])
@pytest.mark.parametrize("window,strides", [((1, 1), (1, 1)), ((1, 1), (2, 2)), ((1, 3), (1, 2)), ((3, 3), (1, 1)),
                                            ((3, 1), (2, 2))])
def test_the_blocked_paths_direct_runs_give_the_bits_of_its_sums(filters, window, strides):
    """A window of at most DEPTH_PIECE products (here 24 channels by 1-9 taps) is one piece: the
    blocked kernel's direct runs make each output's whole sum in registers, over the window rows
    of the padded copy (its rows of zeros too), and store it finished, with no array of sums. The
    same bank with rows of zero filters added below, enough for a second piece, over the image
    padded by hand with rows added below, runs through the sums: the first piece is the same sum
    (zero products added), the second adds +0.0. The same bits, on a batch, with strides, the
    padding, whole vectors and a last vector filled up with zero filters. Against the formula
    too, and the fused bias and ReLU exactly the unfused ones (NaN kept)."""
    from convfilter import _jit

    lanes = _blocked_lanes()
    n_out = {"lanes": lanes, "lanes + 5": lanes + 5, "2 lanes": 2 * lanes, "4 lanes": 4 * lanes}[filters]
    (fh, fw), channels = window, 24
    rng = np.random.default_rng(fh * 11 + fw * 7 + n_out)
    x = rng.standard_normal((2, 9, 27, channels)).astype(np.float32)
    w = rng.standard_normal((fh, fw, channels, n_out)).astype(np.float32)
    assert fh * fw * channels <= _jit.DEPTH_PIECE
    gh, gw = axis(9, fh, strides[0], "SAME", 1), axis(27, fw, strides[1], "SAME", 1)
    direct = conv_paths.correlate(x, w, strides, (1, 1), gh, gw, path="blocked")
    assert_close_to_formula(direct, x, w, strides, "SAME", (1, 1))
    extra = _jit.DEPTH_PIECE // (fw * channels) + 1 - fh  # zero rows: the bank is two pieces deep
    padded = np.pad(x, ((0, 0), (gh.pad_before, gh.pad_after), (0, 0), (0, 0)))
    below = np.concatenate([padded, rng.standard_normal((2, extra, 27, channels)).astype(np.float32)], axis=1)
    deeper = np.concatenate([w, np.zeros((extra, fw, channels, n_out), np.float32)])
    gh_valid = axis(below.shape[1], fh + extra, strides[0], "VALID", 1)
    assert gh_valid.out == gh.out
    in_sums = conv_paths.correlate(below, deeper, strides, (1, 1), gh_valid, gw, path="blocked")
    np.testing.assert_array_equal(direct, in_sums)
    x[1, 4, 6, 3] = np.nan
    linear = conv_paths.correlate(x, w, strides, (1, 1), gh, gw, path="blocked")
    bias = rng.standard_normal(n_out).astype(np.float32)
    fused = conv_paths.correlate(x, w, strides, (1, 1), gh, gw, path="blocked", bias=bias, activation="relu")
    assert np.isnan(fused).any() and (fused == 0).any() and (fused > 0).any()
    np.testing.assert_array_equal(fused, ops.relu(linear + bias))


def test_shallow_1x1_layers_take_the_blocked_paths_direct_runs(monkeypatch):
    """1x1 kernels of 8-256 channels and at most 64 filters (at most twice the channels), on
    maps of at least 28x28 pixels, take the blocked path without an estimate where Numba runs
    (measured faster than BLAS's product there); more filters, smaller maps, deeper sums and
    processes without Numba keep to the estimates."""
    monkeypatch.setattr(conv_paths, "_choices", {})
    cases = {((1, 224, 224, 32), (1, 1, 32, 32), 1): True, ((1, 56, 56, 128), (1, 1, 128, 32), 1): True,
             ((8, 28, 28, 64), (1, 1, 64, 64), 2): True, ((1, 112, 112, 8), (1, 1, 8, 16), 1): True,
             ((1, 224, 224, 32), (1, 1, 32, 128), 1): False, ((1, 224, 224, 16), (1, 1, 16, 64), 1): False,
             ((1, 14, 14, 64), (1, 1, 64, 64), 1): False, ((1, 56, 56, 512), (1, 1, 512, 16), 1): False,
             ((1, 56, 56, 32), (3, 3, 32, 32), 1): False}
    for (x_shape, w_shape, stride), direct in cases.items():
        assert conv_paths.pointwise_direct(x_shape, w_shape) is direct, (x_shape, w_shape)
    for ready in (True, False):
        monkeypatch.setattr(conv_paths, "blocked_ready", lambda: ready)
        monkeypatch.setattr(conv_paths, "_choices", {})
        for (x_shape, w_shape, stride), direct in cases.items():
            if not direct:
                continue
            out_h = -(-x_shape[1] // stride)
            chosen = conv_paths.choose_path(x_shape, np.ones(w_shape, np.float32), (stride, stride), (1, 1),
                                            (x_shape[0], out_h, out_h, w_shape[3]), None)
            assert chosen == ("blocked" if ready else "matmul"), (x_shape, w_shape, ready)


def test_the_direct_runs_depth_is_the_kernels_piece():
    from convfilter import _jit

    assert conv_paths.BLOCKED_DIRECT_MAX_CHANNELS == _jit.DEPTH_PIECE


def test_vector_kernels_run_on_eight_lanes_where_numba_compiles_for_avx2(tmp_path):
    """Without AVX-512 the blocked kernel takes blocks of 6 pixels by two vectors of 8 filters
    (8 pixels by 32 filters would not fit AVX2's registers) and the direct loops blocks of 8
    outputs: compiled for a Haswell in a process of its own, they give the formula, and the same
    bits as this process (16 lanes where it has AVX-512): each output's sum is the same chain of
    operations whatever the lanes."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 10, 21, 128)).astype(np.float32)
    w = rng.standard_normal((3, 3, 128, 19)).astype(np.float32)
    image = rng.standard_normal((1, 9, 71, 3)).astype(np.float32)  # blocks of 1 and 4 vectors
    image_bank = rng.standard_normal((3, 3, 3, 6)).astype(np.float32)
    for name, array in (("x", x), ("w", w), ("image", image), ("image_bank", image_bank)):
        np.save(tmp_path / f"{name}.npy", array)
    script = (
        "import os, numpy as np, naive\n"
        "from convfilter import _jit, conv_paths, ops\n"
        "from convfilter.geometry import axis\n"
        "assert _jit.LANES == _jit.VECTOR_PIXELS == 8 and _jit.BLOCK_PIXELS == 6, _jit.LANES\n"
        f"folder = {str(tmp_path)!r}\n"
        "x, w, image, image_bank = (np.load(os.path.join(folder, name + '.npy'))\n"
        "                           for name in ('x', 'w', 'image', 'image_bank'))\n"
        "gh, gw = axis(10, 3, 1, 'SAME', 1), axis(21, 3, 1, 'SAME', 1)\n"
        "got = conv_paths.correlate(x, w, (1, 1), (1, 1), gh, gw, path='blocked')\n"
        "expected = naive.conv2d(x, w, (1, 1), 'SAME', (1, 1))\n"
        "magnitude = naive.conv2d(np.abs(x), np.abs(w), (1, 1), 'SAME', (1, 1))\n"
        "assert np.all(np.abs(got - expected) <= 8 * np.finfo(np.float32).eps * magnitude)\n"
        "np.save(os.path.join(folder, 'got.npy'), got)\n"
        "ops.set_backend('numba')\n"
        "gh, gw = axis(9, 3, 1, 'SAME', 1), axis(71, 3, 1, 'SAME', 1)\n"
        "planar = conv_paths.correlate(image, image_bank, (1, 1), (1, 1), gh, gw, path='planar')\n"
        "np.save(os.path.join(folder, 'planar.npy'), planar)\n"
        "print('ok')\n"
    )
    features = "+avx,+avx2,+fma,+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+f16c,+bmi,+bmi2,+lzcnt,+movbe"
    env = dict(CHECKOUT_ENV, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=features,
               NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], os.path.dirname(naive.__file__)])
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    here = run_path(x, w, (1, 1), "SAME", (1, 1), "blocked")
    np.testing.assert_array_equal(np.load(tmp_path / "got.npy"), here)
    ops.set_backend("numba")
    try:
        here = run_path(image, image_bank, (1, 1), "SAME", (1, 1), "planar")
    finally:
        ops.set_backend("auto")
    np.testing.assert_array_equal(np.load(tmp_path / "planar.npy"), here)


def test_images_never_take_the_blocked_path(monkeypatch):
    """Images have 1-4 channels: their results are the same bits in every process, server or not."""
    monkeypatch.setattr(_backend, "numba_imported", lambda: True)
    monkeypatch.setattr(_backend, "is_cached", lambda name: True)
    rng = np.random.default_rng(2)
    for channels in (1, 3, 4):
        for kernel, filters in ((3, 32), (5, 64), (7, 16)):
            w = rng.standard_normal((kernel, kernel, channels, filters)).astype(np.float32)
            shape = (1, 512, 512, channels)
            assert conv_paths.choose_path(shape, w, (1, 1), (1, 1), shape[:3] + (filters,), None) != "blocked"


def test_blas_is_single_threaded_inside_the_bands_and_restored_after(monkeypatch):
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    if not before:
        pytest.skip("numpy has no BLAS library that threadpoolctl can see")
    seen = []

    def recording(band):
        def recording_band(*args):
            seen.append(blas_threads())
            band(*args)
        return recording_band

    for name in ("_gemm_band", "_shifted_band", "_winograd_band"):
        monkeypatch.setattr(conv_paths, name, recording(getattr(conv_paths, name)))
    monkeypatch.setattr(thread_pool, "MIN_PARALLEL_WORK", 0)
    monkeypatch.setattr(thread_pool, "OPENBLAS_SERIAL_WORK", 0)  # these products are tiny
    x = np.ones((2, 8, 8, 16), np.float32)
    ops.set_num_threads(2)
    try:
        run_path(x, np.ones((1, 1, 16, 8)), (1, 1), "SAME", (1, 1), "matmul")
        run_path(x, np.ones((3, 3, 16, 8)), (1, 1), "SAME", (1, 1), "im2col")
        run_path(x, np.ones((3, 3, 16, 8)), (1, 1), "SAME", (1, 1), "shifted")
        run_path(x, np.ones((3, 3, 16, 8)), (1, 1), "SAME", (1, 1), "winograd")
    finally:
        ops.set_num_threads(None)
    assert seen and all(counts == [1] * len(counts) for counts in seen)
    assert blas_threads() == before


def test_products_too_small_for_openblas_to_thread_give_the_same_bits_on_any_blas_thread_count():
    # what lets a small call leave BLAS's thread count alone (blas_serial_anyway)
    from threadpoolctl import threadpool_info, threadpool_limits

    libraries = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    if not libraries or any(lib["internal_api"] != "openblas" for lib in libraries):
        pytest.skip("numpy's BLAS is not OpenBLAS")
    rng = np.random.default_rng(7)
    checked = 0
    while checked < 200:
        m, k, n = (int(np.exp(rng.uniform(0, np.log(1000)))) for _ in range(3))
        if checked % 4 == 0:  # one filter or one pixel: numpy asks BLAS for a matrix-vector product
            m, n = (1, n) if checked % 8 == 0 else (m, 1)
        if m * k * n > thread_pool.OPENBLAS_SERIAL_WORK:
            continue
        a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
        with threadpool_limits(1, user_api="blas"):
            alone = a @ b
        with threadpool_limits(4, user_api="blas"):
            np.testing.assert_array_equal(a @ b, alone, err_msg=f"{m}x{k} @ {k}x{n}")
        checked += 1
    assert thread_pool.blas_serial_anyway(thread_pool.OPENBLAS_SERIAL_WORK)
    assert not thread_pool.blas_serial_anyway(thread_pool.OPENBLAS_SERIAL_WORK + 1)


def test_single_threaded_blas_nests_and_restores():
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    if not blas_threads():
        pytest.skip("numpy has no BLAS library that threadpoolctl can see")
    with threadpool_limits(2, user_api="blas"):
        with thread_pool.single_threaded_blas():
            with thread_pool.single_threaded_blas():
                assert set(blas_threads()) == {1}
            assert set(blas_threads()) == {1}
        assert set(blas_threads()) == {2}


def test_bands_of_several_rows_come_in_even_counts():
    """Two threads share an even count of bands equally; rows that are bands of their own (the
    parts of a small map's sum, a map of a few rows) stay so."""
    for rows, work, min_rows in ((56, 1e9, 10), (56, 1e9, 1), (300, 7.5e7, 1), (7, 1e9, 2)):
        edges = thread_pool.band_edges(rows, work, min_rows)
        count = len(edges) - 1
        assert count % 2 == 0 and edges[0] == 0 and edges[-1] == rows
        assert min(np.diff(edges)) >= min(min_rows, rows // 2)
    assert len(thread_pool.band_edges(56, 1e9, 10)) - 1 == 4  # not the five bands of 11-12 rows
    assert len(thread_pool.band_edges(3, 1e9)) - 1 == 3


def test_single_threaded_blas_holds_blas_from_any_python_thread():
    """threadpoolctl (3.8) lets only the first Python thread that set OpenBLAS's count set it
    again while that thread lives; a conv2d called from a Dask worker's or a user's thread must
    hold BLAS all the same."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    if not blas_threads():
        pytest.skip("numpy has no BLAS library that threadpoolctl can see")
    seen = []

    def hold():
        with thread_pool.single_threaded_blas():
            seen.append(blas_threads())

    with threadpool_limits(2, user_api="blas"):  # this thread sets the count first
        hold()
        other = threading.Thread(target=hold)
        other.start()
        other.join()
        assert seen == [[1] * len(seen[0])] * 2
        assert set(blas_threads()) == {2}


# --- depthwise -------------------------------------------------------------------------------


def naive_depthwise(x, w, strides, padding, dilations):
    """Each channel through the plain-loop conv2d with its own kernels, channel-major outputs."""
    parts = [naive.conv2d(x[..., c : c + 1], w[:, :, c : c + 1, :], strides, padding, dilations)
             for c in range(x.shape[3])]
    return np.concatenate(parts, axis=3)


DEPTHWISE_CASES = [
    # (batch, height, width, channels, fh, fw, multiplier, strides, padding, dilations)
    (1, 9, 11, 1, 3, 3, 1, (1, 1), "SAME", (1, 1)),
    (3, 8, 7, 3, 3, 3, 2, (2, 2), "SAME", (1, 1)),
    (1, 12, 13, 32, 3, 3, 1, (2, 1), "VALID", (1, 1)),
    (3, 10, 9, 130, 5, 5, 1, (1, 1), "SAME", (2, 1)),
    (1, 7, 6, 4, 4, 2, 3, (1, 2), "SAME", (1, 1)),  # even kernel
    (1, 1, 1, 5, 3, 3, 2, (1, 1), "SAME", (1, 1)),  # a 1x1 image
    (1, 6, 5, 8, 1, 1, 1, (2, 2), "VALID", (1, 1)),
]


@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=lambda c: "x".join(map(str, c[:7])) + f"-s{c[7]}-{c[8]}")
@pytest.mark.parametrize("finish", ["plain", "bias+relu", "tanh"])
def test_depthwise_conv2d_matches_the_formula(case, finish):
    n_img, height, width, channels, fh, fw, mult, strides, padding, dilations = case
    rng = np.random.default_rng(sum(case[:7]) + len(finish))
    x = rng.standard_normal((n_img, height, width, channels)).astype(np.float32)
    w = rng.standard_normal((fh, fw, channels, mult)).astype(np.float32)
    linear = ops.depthwise_conv2d(x, w, strides, padding, dilations)
    assert_close_to_formula(linear, x, w, strides, padding, dilations,
                            reference=naive_depthwise, magnitude=naive_depthwise)
    bias = rng.standard_normal(channels * mult).astype(np.float32)
    if finish == "bias+relu":
        got = ops.depthwise_conv2d(x, w, strides, padding, dilations, bias=bias, activation="relu")
        np.testing.assert_array_equal(got, ops.relu(linear + bias))
    elif finish == "tanh":
        got = ops.depthwise_conv2d(x[0], w, strides, padding, dilations, activation="tanh")  # (H, W, C) in
        np.testing.assert_array_equal(got, ops.activate(linear[0], "tanh"))


def test_depthwise_conv2d_checks_its_arguments():
    x = np.ones((1, 5, 5, 3), np.float32)
    with pytest.raises(ValueError, match=r"filter expects 2 input channels but the input has 3; "
                                         r"use filter of shape \(3, 3, 3, 1\)"):
        ops.depthwise_conv2d(x, np.ones((3, 3, 2, 1)))
    with pytest.raises(ValueError, match="filter must be 4-D"):
        ops.depthwise_conv2d(x, np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"one value per channel \(6\)"):
        ops.depthwise_conv2d(x, np.ones((3, 3, 3, 2)), bias=[1.0, 2.0])
    with pytest.raises(ValueError, match="larger than the 5x5 input"):
        ops.depthwise_conv2d(x, np.ones((7, 7, 3, 1)), padding="VALID")


@pytest.mark.parametrize("channels,kernel", [(20, 3), (160, 5)])  # window rows of one piece of the sum, of four
def test_the_blocked_path_carries_inf_and_nan_as_the_formula_does(channels, kernel):
    """Its sums run in pieces with fused multiply-adds, in another order than the formula's, but
    nothing assumes finite values: NaN, and inf of either sign (NaN where they meet, or meet a
    zero weight), land where the plain-loop formula puts them."""
    rng = np.random.default_rng(channels)
    x = rng.standard_normal((2, 9, 11, channels)).astype(np.float32)
    x[0, 2, 3, 0], x[0, 6, 8, 1], x[1, 4, 4, 2], x[1, 4, 6, 2] = np.nan, np.inf, np.inf, -np.inf
    w = rng.standard_normal((kernel, kernel, channels, 6)).astype(np.float32)
    w[0, 0, 1, :3] = 0.0  # zero weights meet the inf
    result = run_path(x, w, (1, 1), "SAME", (1, 1), "blocked")
    with np.errstate(invalid="ignore"):
        expected = naive.conv2d(x, w, (1, 1), "SAME", (1, 1))
    assert np.isnan(expected).any() and np.isinf(expected).any()
    np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(result), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(result), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(result[finite], expected[finite], rtol=1e-4, atol=1e-4)


def test_the_quick_rank_test_never_turns_down_a_rank_one_kernel():
    """The minor test that turns down dense kernels at once must pass every kernel rank_one accepts,
    at every scale and sign, including float32 outer products that round."""
    rng = np.random.default_rng(8)
    for _ in range(2000):
        col = rng.standard_normal(rng.integers(2, 8)) * 10.0 ** rng.integers(-20, 20)
        row = rng.standard_normal(rng.integers(2, 8))
        kernel = np.outer(col, row).astype(np.float32)
        if conv_paths.rank_one(kernel) is not None:
            assert not conv_paths.clearly_not_rank_one(kernel)
    dense = rng.standard_normal((3, 3)).astype(np.float32)
    assert conv_paths.clearly_not_rank_one(dense) and conv_paths.rank_one(dense) is None


def test_a_1x1_kernel_on_one_channel_is_a_scaling_with_tensorflows_infinities():
    """No padded copy and no zero-weight taps: ``0 + x * w`` per filter, the bits of the direct
    loops for finite inputs (-0.0 comes out +0.0, as their sums start from +0), and inf * w is
    an infinity (NaN for a zero weight), as TensorFlow gives; with one filter (its own loop
    over a plain row) too."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 9, 11, 1)).astype(np.float32)
    x[0, 2, 2, 0], x[0, 4, 6, 0], x[1, 3, 3, 0], x[1, 5, 5, 0] = np.inf, -np.inf, np.nan, -0.0
    five = rng.standard_normal((1, 1, 1, 5)).astype(np.float32)
    five[0, 0, 0, 1] = 0.0
    biases = rng.standard_normal(5).astype(np.float32)
    for (w, bias), strides in itertools.product(((five, biases), (five[..., 1:2], biases[1:2]),
                                                 (five[..., 2:3], biases[2:3])), ((1, 1), (2, 3))):
        with np.errstate(invalid="ignore"):
            expected = np.float32(0.0) + x[:, :: strides[0], :: strides[1], :] * w[0, 0]
        for backend in ("numba", "numpy"):
            ops.set_backend(backend)
            try:
                np.testing.assert_array_equal(ops.conv2d(x, w, strides, "VALID"), expected)
                np.testing.assert_array_equal(ops.conv2d(x, w, strides, "SAME", bias=bias, activation="relu"),
                                              ops.activate(expected + bias, "relu"))
            finally:
                ops.set_backend("auto")
        if strides == (1, 1):  # the cases above are in the output (a zero weight makes the infinities NaN)
            assert np.isnan(expected).any() and (np.isinf(expected).any() or not w.any())


@pytest.mark.parametrize("kernel,channels", [(3, 48), (1, 200)])
def test_a_small_maps_sum_in_parts_does_not_depend_on_the_thread_count(kernel, channels, monkeypatch):
    """A map of one tile is one product, or with threads several products of parts of its sum
    (kernel rows, or for 1x1 kernels groups of channels), added in their order whatever thread
    ran them."""
    rng = np.random.default_rng(kernel + channels)
    x = rng.standard_normal((2, 7, 6, channels)).astype(np.float32)
    w = rng.standard_normal((kernel, kernel, channels, 40)).astype(np.float32)
    bias = rng.standard_normal(40).astype(np.float32)
    monkeypatch.setattr(conv_paths, "SMALL_MAP_PARALLEL_WORK", 0)
    monkeypatch.setattr(conv_paths, "DEPTH_PARTS", 3)
    parts = []
    band = conv_paths._depth_part
    monkeypatch.setattr(conv_paths, "_depth_part", lambda *args: (parts.append(args[-2:]), band(*args)))
    results = []
    try:
        for threads in (1, 2, 3):
            ops.set_num_threads(threads)
            results.append(ops.conv2d(x, w, 2, "SAME", bias=bias, activation="relu"))
    finally:
        ops.set_num_threads(None)
    assert sorted(set(parts)) == [(0, 1), (1, 2), (2, 3)]  # three parts, each a band of its own
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
    linear = ops.conv2d(x, w, 2, "SAME")
    assert_close_to_formula(linear, x, w, (2, 2), "SAME", (1, 1))
    np.testing.assert_array_equal(results[0], np.maximum(linear + bias, 0))


def test_the_chosen_path_is_remembered_per_shape_and_taps(monkeypatch):
    """choose_path keeps its choice for the shapes, the taps the bank uses and what it may offer:
    the same bank with zeros in place of eight of its nine taps is chosen for afresh."""
    monkeypatch.setattr(conv_paths, "blocked_ready", lambda: False)  # as in a process without Numba
    conv_paths._choices.clear()
    rng = np.random.default_rng(3)
    w = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    shapes = ((1, 224, 224, 16), (1, 1), (1, 1), (1, 224, 224, 16))
    x_shape, strides, dilations, out_shape = shapes

    def fresh():
        return conv_paths._cheapest_path(x_shape, w.shape, strides, dilations, out_shape,
                                         conv_paths.window_taps_used(w), None, False)

    dense = conv_paths.choose_path(x_shape, w, strides, dilations, out_shape, None)
    assert dense == conv_paths.choose_path(x_shape, w, strides, dilations, out_shape, None) == fresh() == "winograd"
    w[[0, 0, 0, 1, 1, 2, 2, 2], [0, 1, 2, 0, 2, 0, 1, 2]] = 0.0  # only the centre tap is left
    assert conv_paths.choose_path(x_shape, w, strides, dilations, out_shape, None) == fresh() == "planar"


@pytest.mark.parametrize("phases", [1, 2])
def test_a_dense_banks_tap_list_is_worked_out_once_per_shape_and_its_weights_each_call(phases):
    """The direct path's tap positions of a bank that uses every tap depend on the shapes alone:
    worked out once per shape, they are those of the plain rule (each tap (c, u, v) at row
    ``c*Hp + u*dh`` and column ``v*dw``, dealt into phases, padded to a multiple of four with
    (0, 0)); every call gets its own copy, and the weights of the bank as it is now (changed in
    place between calls)."""
    rng = np.random.default_rng(phases)
    w = rng.uniform(0.5, 1.5, (3, 5, 2, 4)).astype(np.float32)  # no zero weight: dense
    padded_h, dilations = 30, (2, 1)
    expected = np.zeros((32, 2), np.int64)  # 30 taps padded to 32
    for index, (c, u, v) in enumerate(np.ndindex(2, 3, 5)):
        expected[index] = c * padded_h + u * dilations[0], v * dilations[1]
    if phases > 1:
        expected = conv_paths.phase_taps(expected, padded_h, phases)
    taps, weights = conv_paths.direct_taps(w, padded_h, dilations, phases)
    np.testing.assert_array_equal(taps, expected)
    np.testing.assert_array_equal(weights[:, :30], w.transpose(3, 2, 0, 1).reshape(4, 30))
    assert not weights[:, 30:].any()
    taps[:] = -1  # a caller's copy: the next call's is untouched
    w *= 2  # the bank changed in place
    again, doubled = conv_paths.direct_taps(w, padded_h, dilations, phases)
    np.testing.assert_array_equal(again, expected)
    assert again.flags.writeable  # the kernels' one compiled signature
    np.testing.assert_array_equal(doubled, 2 * weights)


@pytest.mark.parametrize("pieces", [False, True])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_column_stride_reads_the_copy_in_phases_with_the_bits_of_stride_one(pieces, backend, monkeypatch):
    """With a column stride the planar copy's columns are dealt into phases; the loops read the
    same cells in the same order, so the result is stride 1's, subsampled, to the bit (also when
    the copy is made a piece of rows at a time, and on either kernel set)."""
    rng = np.random.default_rng(17)
    x = rng.standard_normal((2, 23, 26, 3)).astype(np.float32)
    w = rng.standard_normal((3, 5, 3, 6)).astype(np.float32)
    w[1, 2, 0, :] = 0.0  # a tap no filter uses: skipped
    pads = ((1, 2), (3, 1))
    if pieces:
        monkeypatch.setattr(conv_paths, "WHOLE_COPY_BYTES", 0)
        monkeypatch.setattr(conv_paths, "PIECE_BYTES", 1000)
    ops.set_backend(backend)
    try:
        def planar(strides):
            gh, gw = axis(23, 3, strides[0], pads[0], 2), axis(26, 5, strides[1], pads[1], 1)
            return conv_paths.correlate(x, w, strides, (2, 1), gh, gw, path="planar", bias=np.ones(6, np.float32),
                                        activation="relu")

        one = planar((1, 1))
        phased = []
        monkeypatch.setattr(conv_paths, "phase_taps", lambda taps, h, phases, f=conv_paths.phase_taps:
                            (phased.append(phases), f(taps, h, phases))[1])
        for strides in ((1, 2), (2, 3), (3, 4)):
            np.testing.assert_array_equal(planar(strides), one[:, :: strides[0], :: strides[1]])
        assert phased == [2, 3, 4]
    finally:
        ops.set_backend("auto")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_wide_rows_of_many_filters_are_summed_in_tiles_with_the_same_bits(backend, monkeypatch):
    """Output rows of many filters too wide for the cache are summed in tiles of columns: each
    output's sum is the one a whole row gives, so both kernel sets agree to the bit, and the
    result is the formula's."""
    from convfilter import _jit

    assert _jit.PLANAR_TILE_MIN_WIDTH == conv_paths.PLANAR_TILE_MIN_WIDTH  # the cost model knows the rule
    assert _jit.planar_tile(8, 600) == 600  # a row that fits: whole
    assert _jit.planar_tile(32, 400) == 400  # too narrow to gain from tiles
    assert _jit.planar_tile(32, 600) == 208  # 19 200 floats: three tiles, a multiple of 16 wide
    rng = np.random.default_rng(23)
    x = rng.standard_normal((1, 3, 600, 2)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 32)).astype(np.float32)
    ops.set_backend(backend)
    try:
        got = run_path(x, w, (1, 1), "SAME", (1, 1), "planar")
    finally:
        ops.set_backend("auto")
    assert_close_to_formula(got, x, w, (1, 1), "SAME", (1, 1))
    if backend == "numba":
        ops.set_backend("numpy")
        try:
            np.testing.assert_array_equal(got, run_path(x, w, (1, 1), "SAME", (1, 1), "planar"))
        finally:
            ops.set_backend("auto")


@pytest.mark.parametrize("lanes,wide", [(16, 1), (16, 2), (8, 2)])
def test_the_blocked_path_is_offered_up_to_256_filters_on_maps_of_any_size(lanes, wide, monkeypatch):
    """From 8 input channels and up to 256 filters the cost model weighs the blocked path on
    every map, down to 4 output columns (measured: it beats BLAS's products on small maps of
    64-256 filters since each band reads its own vectors' filters in place). Up to 512 filters
    it does so for outputs of at most 1 MiB, where the kernel's runs make the sums of two
    vectors of 16 filters at once (measured faster than BLAS's products there, slower on larger
    outputs); with runs of one vector, or of AVX2's vectors of 8, and above 512 filters, never."""
    from convfilter import _jit

    monkeypatch.setattr(_jit, "LANES", lanes)
    monkeypatch.setattr(_jit, "BLOCKED_WIDE", wide)
    monkeypatch.setattr(conv_paths, "blocked_ready", lambda: True)
    monkeypatch.setattr(conv_paths, "_choices", {})  # no choice remembered from another test
    offered = []
    monkeypatch.setattr(conv_paths, "_cheapest_path", lambda *args: offered.append(args[-1]) or "im2col")
    for x_shape, w_shape in [((1, 14, 14, 256), (7, 7, 256, 64)), ((1, 7, 7, 128), (7, 7, 128, 128)),
                             ((1, 14, 14, 256), (3, 3, 256, 256)), ((1, 112, 112, 64), (3, 3, 64, 256)),
                             ((1, 7, 7, 256), (7, 7, 256, 16)),
                             ((1, 14, 14, 512), (3, 3, 512, 512)), ((1, 14, 14, 16), (3, 3, 16, 512)),
                             ((2, 28, 28, 16), (5, 5, 16, 512)),  # 2 x 14x14x512 floats: 784 KiB
                             ((1, 112, 112, 16), (3, 3, 16, 512)),  # 56x56x512 floats: 6.1 MiB
                             ((1, 14, 14, 64), (3, 3, 64, 1024)), ((1, 14, 14, 4), (3, 3, 4, 64))]:
        w = np.ones(w_shape, np.float32)
        out_h = -(-x_shape[1] // 2)
        conv_paths.choose_path(x_shape, w, (2, 2), (1, 1), (x_shape[0], out_h, out_h, w_shape[3]), None)
    assert offered == [True] * 5 + [lanes == 16 and wide == 2] * 3 + [False] * 3


def test_the_blocked_estimate_counts_filters_read_from_beyond_l2(monkeypatch):
    """A vector's filters are one line of each row of the bank, rows F floats apart: lines a
    power of two apart share a fraction of L2's sets (2048 sets of 8 ways, 64-byte lines). When
    the vector's lines are more than that, each group of rows reads them from beyond L2 again,
    and the estimate grows by that (hand-computed: 16 filters, rows one line apart, use every
    set; 64 filters four lines apart, a quarter; 512 filters 32 lines apart, 1/32)."""
    assert [conv_paths.blocked_far_lines(n) for n in (16, 48, 64, 256, 512)] == [16384, 16384, 4096, 1024, 512]
    small, deep = (1, 7, 7, 256), (1, 4, 4, 256)
    # 3x3x256 = 2304 lines: L2 holds them at 64 filters, not at 256 (1024 lines)
    estimates = {}
    for far_line in (conv_paths.COST["blocked_far_line"], 0.0):
        monkeypatch.setitem(conv_paths.COST, "blocked_far_line", far_line)
        for n_out in (64, 256):
            estimates[far_line > 0, n_out] = conv_paths.blocked_seconds(
                small, (3, 3, 256, n_out), deep[:3] + (n_out,), (2, 2), (1, 1))
    assert estimates[True, 64] == estimates[False, 64]
    assert estimates[True, 256] > estimates[False, 256]


def test_the_blocked_path_takes_its_tasks_row_after_row_for_a_small_bank_on_a_large_image():
    """Vector after vector, each vector reads the whole image; row after row, the bank is read
    for every row: rows first where the bank stays in cache and the image does not."""
    assert conv_paths.blocked_rows_first((1, 224, 224, 64), (5, 5, 64, 64))  # 409 KB bank, 12.8 MB image
    assert conv_paths.blocked_rows_first((1, 224, 224, 64), (3, 3, 64, 64))
    assert not conv_paths.blocked_rows_first((1, 28, 28, 256), (5, 5, 256, 256))  # 6.5 MB bank
    assert not conv_paths.blocked_rows_first((1, 112, 112, 256), (3, 3, 256, 64))  # 590 KB bank
    assert not conv_paths.blocked_rows_first((1, 28, 28, 64), (3, 3, 64, 64))  # a 200 KB image


def test_the_blocked_blocks_of_a_row_cover_it_and_the_estimate_counts_them():
    """Each output column of a row is in exactly one block, the blocks as even as can be (with
    blocks of at most 8, 28 outputs are 7+7+7+7, 14 are 7+7 and 9 are 5+4; with AVX2's blocks
    of at most 6, 28 are 6+6+6+5+5 and 14 are 5+5+4), unless that leaves fewer than 4 to a block:
    then blocks of 4, the last overlapping the one before (7 outputs in blocks of at most 6:
    4+4, one twice); and the estimate's count of the pixels computed is the kernel's."""
    from convfilter import _jit

    by_hand = {8: [(28, 4), (14, 2), (9, 2), (7, 1), (4, 1)], 6: [(28, 5), (14, 3), (9, 2), (8, 2), (4, 1)]}
    assert [conv_paths.blocked_blocks(w) for w in (28, 14, 9, 7, 4)] == by_hand[_jit.BLOCK_PIXELS]
    for out_w in range(4, 70):
        row_pixels, blocks = conv_paths.blocked_blocks(out_w)
        spans = [conv_paths.blocked_block(b, blocks, out_w) for b in range(blocks)]
        covered = [j for j0, pixels in spans for j in range(j0, j0 + pixels)]
        assert sorted(set(covered)) == list(range(out_w))
        assert len(covered) == row_pixels <= out_w + 3
        assert all(4 <= pixels <= _jit.BLOCK_PIXELS for _, pixels in spans)
        assert row_pixels == out_w or out_w < 4 * blocks


@pytest.mark.parametrize("wide", [1, 2])
@pytest.mark.parametrize("strides", [(1, 1), (2, 2)])
def test_blocked_rows_give_the_same_bits_in_any_group_and_band(strides, wide, monkeypatch):
    """The blocked kernel sums a unit's output rows a group at a time, and its bands are runs of
    (unit, row) tasks that may start and end inside a unit and a group: an output's pieces
    are added in the same order however the rows are grouped and the tasks split, whether a
    run makes the sums of one vector of filters or of two (a unit of two, then one of a vector
    and a tail), and whether the filters are read in place or gathered first (small groups, large
    ones), so every grouping gives the same bits, and the formula."""
    from convfilter import _jit

    lanes = _blocked_lanes()
    monkeypatch.setattr(_jit, "BLOCKED_WIDE", wide)
    rng = np.random.default_rng(40 + strides[0])
    x = rng.standard_normal((2, 15, 11, 24)).astype(np.float32)
    w = rng.standard_normal((3, 3, 24, 3 * lanes + 5)).astype(np.float32)  # 4 vectors, the last a tail
    bias = rng.standard_normal(w.shape[3]).astype(np.float32)
    gh, gw = axis(15, 3, strides[0], "SAME", 1), axis(11, 3, strides[1], "SAME", 1)

    def blocked():
        return conv_paths.correlate(x, w, strides, (1, 1), gh, gw, path="blocked", bias=bias, activation="relu")

    whole = blocked()  # every row of an image pair in one group, in one band
    assert conv_paths.blocked_group(gw.out) >= 2 * gh.out
    assert_close_to_formula(whole, x, w, strides, "SAME", (1, 1),
                            reference=lambda *args: ops.relu(naive.conv2d(*args) + bias),
                            magnitude=lambda *args: naive.conv2d(*args) + np.abs(bias))
    pixels = _jit.BLOCK_PIXELS  # a row's blocks of up to this many pixels, pixels * lanes sums per vector
    blocks = -(-gw.out // pixels)
    row_floats = blocks * pixels * lanes * wide
    # groups of one row read the filters in place, the whole map's group gathers them first
    assert blocks < _jit.GATHER_MIN_RUNS <= 2 * gh.out * blocks
    monkeypatch.setattr(thread_pool, "MIN_PARALLEL_WORK", 0)  # bands of a task or two, on threads
    monkeypatch.setattr(conv_paths, "BLOCKED_BAND_PIXELS", 1)
    for rows in (1, 2, 3, 5):
        monkeypatch.setattr(conv_paths, "BLOCKED_SUM_FLOATS", rows * row_floats)
        conv_paths.forget_plans()
        assert conv_paths.blocked_group(gw.out) == rows
        np.testing.assert_array_equal(blocked(), whole)
    # the tasks row after row (a row's vectors one after the other), in bands that start inside a row
    assert not conv_paths.blocked_rows_first(x.shape, w.shape)  # a small image: vector after vector
    monkeypatch.setattr(conv_paths, "BLOCKED_ROWS_FIRST_IMAGE", 0)
    conv_paths.forget_plans()
    assert conv_paths.blocked_rows_first(x.shape, w.shape)
    np.testing.assert_array_equal(blocked(), whole)
    monkeypatch.setattr(thread_pool, "MIN_PARALLEL_WORK", 1 << 40)  # one band
    np.testing.assert_array_equal(blocked(), whole)
    monkeypatch.setattr(_jit, "BLOCKED_WIDE", 3 - wide)  # runs of the other width
    conv_paths.forget_plans()
    np.testing.assert_array_equal(blocked(), whole)


def test_a_large_result_reuses_only_memory_nobody_refers_to(monkeypatch):
    """Results of many megabytes are written into an earlier result's memory once nothing refers
    to it: a result (or a view of one) that the caller still holds is never written again."""
    monkeypatch.setattr(conv_paths, "RESULT_MIN_FLOATS", 1000)
    monkeypatch.setattr(conv_paths, "_kept_results", [])
    rng = np.random.default_rng(31)
    x = rng.standard_normal((1, 40, 30, 2)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    first = ops.conv2d(x, w)
    kept = first.copy()
    second = ops.conv2d(-x, w)  # `first` is held: another block
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, kept)
    view = first[0, 3]
    del first
    third = ops.conv2d(2 * x, w)  # `first` is gone but its row is held
    assert not np.shares_memory(third, view) and not np.shares_memory(third, second)
    np.testing.assert_array_equal(view, kept[0, 3])
    del view, third
    fourth = ops.conv2d(x, w)  # nothing refers to the kept blocks now: one is written again
    assert any(np.shares_memory(fourth, block) for block in conv_paths._kept_results)
    np.testing.assert_array_equal(fourth, kept)
    assert len(conv_paths._kept_results) <= conv_paths.KEPT_RESULTS


def test_results_made_at_once_on_several_threads_never_share_memory(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(conv_paths, "RESULT_MIN_FLOATS", 10)
    monkeypatch.setattr(conv_paths, "_kept_results", [])
    with ThreadPoolExecutor(8) as pool:
        for _ in range(20):
            results = list(pool.map(lambda _: conv_paths.result_array((5, 7)), range(16)))
            for i, a in enumerate(results):
                assert all(not np.shares_memory(a, b) for b in results[i + 1 :])


def test_a_loop_that_rebinds_its_result_reuses_two_blocks(monkeypatch):
    """``y = conv2d(x, w)`` holds the last result while the next one is made: two blocks are kept,
    so the loop writes into them in turn instead of mapping fresh memory on every call."""
    monkeypatch.setattr(conv_paths, "RESULT_MIN_FLOATS", 1000)
    monkeypatch.setattr(conv_paths, "_kept_results", [])
    rng = np.random.default_rng(37)
    x = rng.standard_normal((1, 40, 30, 2)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    addresses = []
    y = None
    for _ in range(6):
        y = ops.conv2d(x, w)
        addresses.append(y.__array_interface__["data"][0])
    assert len(set(addresses)) == 2 and addresses[0::2] == addresses[:1] * 3
    np.testing.assert_array_equal(y, ops.conv2d(x.copy(), w.copy()))
