"""Every fast path of conv2d and pooling, forced one at a time, against tests/naive.py.

The paths reorder sums (channel sum first, columns then rows), so they are
compared within float32 rounding of the direct formula: a tolerance scaled by
sum |x| * |w| over each window, which the naive float64 reference gives.
"""

import os
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convfilter import ops
from convfilter.geometry import axis

import naive

PATHS = ["planar", "separable"]


def run_path(x, w, strides, padding, dilations, path, sum_channels=None):
    gh = axis(x.shape[1], w.shape[0], strides[0], padding, dilations[0])
    gw = axis(x.shape[2], w.shape[1], strides[1], padding, dilations[1])
    return ops._correlate(np.ascontiguousarray(x, np.float32), np.ascontiguousarray(w, np.float32),
                          strides, dilations, gh, gw, path=path, sum_channels=sum_channels)


def assert_close_to_formula(result, x, w, strides, padding, dilations):
    expected = naive.conv2d(x, w, strides, padding, dilations)
    magnitude = naive.conv2d(np.abs(x), np.abs(w), strides, padding, dilations)
    assert result.shape == expected.shape and result.dtype == np.float32
    # float32 rounding of a sum of products: a few ulps of the sum of magnitudes
    tolerance = 8 * np.finfo(np.float32).eps * (magnitude + 1e-30)
    excess = np.abs(result - expected) - tolerance
    assert np.all(excess <= 0), f"worst excess {excess.max():.3g}"


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
@pytest.mark.parametrize("activation", ["none", "relu", "tanh"])
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
    result = ops._correlate(x, w, (1, 2), (2, 1), gh, gw, path=path, sum_channels=sum_channels, bias=bias,
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
    assert ops._rank_one(kernel) is not None
    nudged = kernel.copy()
    nudged[2, 3] += 1e-4 * np.abs(kernel).max()  # visibly not rank 1 in float32
    assert ops._rank_one(nudged) is None
    assert ops._rank_one(rng.standard_normal((3, 3)).astype(np.float32)) is None


def test_book_bank_and_gaussian_take_the_separable_channel_sum_path(monkeypatch):
    from convfilter.kernels import gaussian, horizontal, vertical

    bank = np.stack([np.asarray(vertical(), np.float32), np.asarray(horizontal(), np.float32)], -1)
    bank = np.repeat(bank[:, :, None, :], 3, axis=2)
    assert ops.sums_input_channels(bank)
    assert ops._separable_factors(bank[:, :, :1]) is not None
    assert ops._separable_factors(np.asarray(gaussian(9, 2.0), np.float32)[:, :, None, None]) is not None


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_bands_give_the_same_result(threads, monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 23, 17, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    separable = rank_one_bank(rng, 5, 3, 3, 2)
    monkeypatch.setattr(ops, "MIN_PARALLEL_WORK", 0)
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


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_can_use_threads_after_its_parent_did(monkeypatch):
    import multiprocessing

    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 20, 20, 2)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 3)).astype(np.float32)
    monkeypatch.setattr(ops, "MIN_PARALLEL_WORK", 0)
    ops.set_num_threads(2)
    try:
        expected = ops.conv2d(x, w)  # starts the parent's thread pool
        with multiprocessing.get_context("fork").Pool(1) as pool:
            result = pool.apply_async(ops.conv2d, (x, w)).get(timeout=120)
    finally:
        ops.set_num_threads(None)
    np.testing.assert_array_equal(result, expected)


def test_set_num_threads_rejects_nonsense():
    with pytest.raises(ValueError, match="thread count"):
        ops.set_num_threads(0)


@settings(max_examples=40, deadline=None)
@given(
    size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    channels=st.integers(1, 4),
    n_out=st.integers(1, 10),
    strides=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilations=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.sampled_from(["SAME", "VALID"]),
    path=st.sampled_from(PATHS),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_every_path_is_the_formula(size, kernel, channels, n_out, strides, dilations, padding,
                                            path, seed):
    (height, width), (fh, fw) = size, kernel
    if padding == "VALID" and ((fh - 1) * dilations[0] >= height or (fw - 1) * dilations[1] >= width):
        return  # no VALID output: conv2d refuses this, tested elsewhere
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, height, width, channels)).astype(np.float32)
    w = rank_one_bank(rng, fh, fw, channels, n_out) if path == "separable" else \
        rng.standard_normal((fh, fw, channels, n_out)).astype(np.float32)
    result = run_path(x, w, strides, padding, dilations, path)
    assert_close_to_formula(result, x, w, strides, padding, dilations)


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
    ops.set_backend("numba")  # these tiny calls would run on the numpy kernels
    try:
        for scaled in (samples, decoded, samples.astype(np.uint16)):  # 16-bit samples take the float copy
            ops.conv2d(scaled, np.ones((3, 1, 3, 1)), input_scale=255)
        for x in inputs:
            ops.conv2d(x, dense[:, :, : x.shape[3]], strides=np.int64(2), dilations=(1, 2))
            ops.conv2d(x, dense[:, :, : x.shape[3]], bias=np.float32(1), activation="relu")
            ops.conv2d(x, np.ones((3, 1, x.shape[3], 1)), bias=[0.5], activation="tanh")
            ops.conv2d(x, np.ones((3, 1, x.shape[3], 1)))  # separable (and channel sum for several channels)
            ops.max_pool2d(x, 2)
            ops.avg_pool2d(x, (3, 2), 2, "SAME")
    finally:
        ops.set_backend("auto")
    for name in _jit.KERNELS:
        assert len(getattr(_jit, name).signatures) == 1, name
