"""convfilter.ops against independent references.

References: tests/naive.py (plain loops from the formula, float64), scipy.ndimage.correlate,
hand-computed small cases (the arithmetic is in the comments) and hypothesis properties.
"""

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st

import naive
from convfilter import conv_paths, ops
from convfilter.geometry import axis, output_size
from convfilter.kernels import identity

PROPERTY = settings(max_examples=40, deadline=None)
RNG = np.random.default_rng(2026)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def as_pair(value):
    return (value, value) if isinstance(value, int) else value


# --- against the plain-loop reference -------------------------------------------------------

KERNELS = [(1, 1), (2, 2), (3, 3), (2, 3), (4, 1), (1, 5)]
STRIDES = [(1, 1), (2, 3), (3, 2)]
DILATIONS = [(1, 1), (2, 1), (2, 3)]


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("dilation", DILATIONS)
@pytest.mark.parametrize("stride", STRIDES)
@pytest.mark.parametrize("kernel", KERNELS)
def test_conv2d_matches_the_formula(kernel, stride, dilation, padding):
    x = rand(2, 10, 14, 2)  # wide enough for a 1x5 kernel dilated by 3 (13) with VALID
    w = rand(*kernel, 2, 3)
    got = ops.conv2d(x, w, stride, padding, dilation)
    want = naive.conv2d(x, w, stride, padding, dilation)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("maps", [1, 3])
@pytest.mark.parametrize(
    "image", [(1, 1), (1, 7), (7, 1), (2, 2), (3, 3), (6, 5)], ids=lambda s: f"{s[0]}x{s[1]}"
)
def test_conv2d_tiny_and_line_images(image, channels, maps):
    """1x1 and 1xN images, kernels larger than the image (SAME only), N = 3 batches."""
    x = rand(3, *image, channels)
    for kernel in [(1, 1), (2, 2), (3, 3), (4, 5)]:
        w = rand(*kernel, channels, maps)
        for stride in [(1, 1), (2, 3)]:
            got = ops.conv2d(x, w, stride, "SAME")
            np.testing.assert_allclose(got, naive.conv2d(x, w, stride, "SAME", (1, 1)), rtol=1e-5, atol=1e-5)
            if kernel[0] <= image[0] and kernel[1] <= image[1]:
                got = ops.conv2d(x, w, stride, "VALID")
                np.testing.assert_allclose(got, naive.conv2d(x, w, stride, "VALID", (1, 1)), rtol=1e-5, atol=1e-5)


# --- hand-computed cases ----------------------------------------------------------------------

X3 = np.arange(1, 10, dtype=np.float32).reshape(3, 3, 1)  # [[1,2,3],[4,5,6],[7,8,9]]


def k4(grid):
    return np.asarray(grid, np.float32)[:, :, None, None]


def test_even_kernel_same_pads_bottom_right():
    # 3x3 input, 2x2 kernel, SAME: out 3, total padding (3-1)*1 + 2 - 3 = 1, all of it after.
    # Kernel [[0,0],[0,1]] picks x[i+1, j+1]: the last row and column read the padding (0).
    # Symmetric padding would have put the 1 before and returned x itself.
    got = ops.conv2d(X3, k4([[0, 0], [0, 1]]))[:, :, 0]
    np.testing.assert_array_equal(got, [[5, 6, 0], [8, 9, 0], [0, 0, 0]])
    # Ones: out[i,j] = x[i,j] + x[i,j+1] + x[i+1,j] + x[i+1,j+1]
    # [0,0] 1+2+4+5=12  [0,1] 2+3+5+6=16  [0,2] 3+6=9
    # [1,0] 4+5+7+8=24  [1,1] 5+6+8+9=28  [1,2] 6+9=15
    # [2,0] 7+8=15      [2,1] 8+9=17      [2,2] 9
    got = ops.conv2d(X3, k4([[1, 1], [1, 1]]))[:, :, 0]
    np.testing.assert_array_equal(got, [[12, 16, 9], [24, 28, 15], [15, 17, 9]])


def test_kernel_is_not_flipped():
    # cross-correlation: kernel [[1,0],[0,0]] at (i,j) reads x[i,j] (no padding before) -> x.
    # A flipping convolution would read x[i+1,j+1] instead.
    got = ops.conv2d(X3, k4([[1, 0], [0, 0]]), padding="VALID")[:, :, 0]
    np.testing.assert_array_equal(got, [[1, 2], [4, 5]])


X57 = (10 * np.arange(5)[:, None] + np.arange(7)[None, :]).astype(np.float32)[:, :, None]  # x[r,c] = 10r + c


def test_stride_2_3_valid_and_same():
    # 1x1 kernel, stride (2,3), VALID on 5x7: rows 0,2,4, cols 0,3,6
    got = ops.conv2d(X57, k4([[1]]), strides=(2, 3), padding="VALID")[:, :, 0]
    np.testing.assert_array_equal(got, [[0, 3, 6], [20, 23, 26], [40, 43, 46]])
    # 2x2 ones, stride (2,3), VALID: out (5-2)//2+1 = 2 by (7-2)//3+1 = 2;
    # window sum = x[2i,3j] + x[2i,3j+1] + x[2i+1,3j] + x[2i+1,3j+1] = 80i + 12j + 22
    got = ops.conv2d(X57, k4([[1, 1], [1, 1]]), strides=(2, 3), padding="VALID")[:, :, 0]
    np.testing.assert_array_equal(got, [[22, 34], [102, 114]])
    # SAME: out ceil(5/2)=3 by ceil(7/3)=3; padding rows (3-1)*2+2-5 = 1, cols (3-1)*3+2-7 = 1,
    # both after. Last row window = row 4 only, last column window = column 6 only:
    # [0,2] 6+16=22  [1,2] 26+36=62  [2,0] 40+41=81  [2,1] 43+44=87  [2,2] 46
    got = ops.conv2d(X57, k4([[1, 1], [1, 1]]), strides=(2, 3), padding="SAME")[:, :, 0]
    np.testing.assert_array_equal(got, [[22, 34, 22], [102, 114, 62], [81, 87, 46]])


def test_dilation_by_hand():
    row = np.array([1, 2, 3, 4, 5], np.float32).reshape(1, 5, 1)
    w = k4([[1, 10]])
    # dilation 2: taps at j and j+2; VALID: effective 3, out 3: x[j] + 10 x[j+2]
    got = ops.conv2d(row, w, padding="VALID", dilations=2)[0, :, 0]
    np.testing.assert_array_equal(got, [1 + 30, 2 + 40, 3 + 50])
    # SAME: padding 4*1 + 3 - 5 = 2, one each side: x[j-1] + 10 x[j+1]
    got = ops.conv2d(row, w, padding="SAME", dilations=2)[0, :, 0]
    np.testing.assert_array_equal(got, [0 + 20, 1 + 30, 2 + 40, 3 + 50, 4 + 0])


def test_one_pixel_and_kernel_larger_than_image():
    one = np.full((1, 1, 1), 5, np.float32)
    # 3x3 kernel on 1x1, SAME: padding 2 -> 1 before, 1 after: only the centre tap w[1,1]=5 -> 25
    assert ops.conv2d(one, k4(np.arange(1, 10).reshape(3, 3)))[0, 0, 0] == 25
    # 2x2 kernel on 1x1, SAME: padding 1, after: only w[0,0]=2 sees the pixel -> 10
    assert ops.conv2d(one, k4([[2, 3], [4, 5]]))[0, 0, 0] == 10
    # 1x2 image [1,2], 1x4 kernel [1,2,3,4], SAME: padding 1+4-2 = 3 -> 1 before, 2 after
    # out[0] = 0*1 + 1*2 + 2*3 + 0*4 = 8 ; out[1] = 1*1 + 2*2 + 0 + 0 = 5
    got = ops.conv2d(np.array([[[1], [2]]], np.float32), k4([[1, 2, 3, 4]]))[0, :, 0]
    np.testing.assert_array_equal(got, [8, 5])


def test_channels_are_summed_and_maps_kept_apart():
    # 1x1 image with channels (1, 2, 3); 1x1 filters: map 0 = sum, map 1 = 1*1 - 1*2 + 0*3 = -1
    x = np.array([[[1, 2, 3]]], np.float32)
    w = np.array([[1, 1], [1, -1], [1, 0]], np.float32)[None, None]
    np.testing.assert_array_equal(ops.conv2d(x, w)[0, 0], [6, -1])


# --- against scipy.ndimage --------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 3), (5, 5), (2, 2), (4, 4), (2, 3), (3, 4), (7, 7)])
def test_same_stride_1_equals_scipy_correlate(shape):
    x = rand(13, 17, 3)
    w = rand(*shape, 3, 1)
    # scipy centres the kernel at size//2 + origin; TF pads (size-1)//2 before, so even sizes need
    # origin -1 on that axis (FACTS: "scipy.ndimage with an even kernel needs origin=-1")
    origin = [-1 if s % 2 == 0 else 0 for s in shape]
    want = sum(
        ndi.correlate(x[:, :, c].astype(np.float64), w[:, :, c, 0].astype(np.float64), mode="constant", cval=0.0,
                      origin=origin)
        for c in range(3)
    )
    np.testing.assert_allclose(ops.conv2d(x, w)[:, :, 0], want, rtol=1e-5, atol=1e-5)


# --- pooling ------------------------------------------------------------------------------------

POOLS = [(ops.max_pool2d, np.max), (ops.avg_pool2d, np.mean)]


@pytest.mark.parametrize("op,reduce", POOLS, ids=["max", "avg"])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("ksize,strides", [(2, None), (3, None), ((2, 3), None), (3, 2), ((3, 2), (1, 2)), (1, 1)])
@pytest.mark.parametrize("image", [(7, 9), (1, 1), (1, 5), (4, 4)])
def test_pools_match_the_reference(op, reduce, padding, ksize, strides, image):
    x = rand(2, *image, 3) - 1.0  # mostly negative: a zero-padded max pool would show 0s
    k = as_pair(ksize)
    s = k if strides is None else as_pair(strides)
    if padding == "VALID" and (k[0] > image[0] or k[1] > image[1]):
        with pytest.raises(ValueError, match="larger than"):
            op(x, ksize, strides, padding)
        return
    got = op(x, ksize, strides, padding)
    want = naive.pool2d(x, k, s, padding, reduce)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_pool_strides_default_to_ksize():
    x = rand(1, 9, 8, 2)
    np.testing.assert_array_equal(ops.max_pool2d(x, 3), ops.max_pool2d(x, 3, 3))
    np.testing.assert_array_equal(ops.avg_pool2d(x, (3, 2)), ops.avg_pool2d(x, (3, 2), (3, 2)))
    assert ops.max_pool2d(x, 3).shape == (1, 3, 2, 2)


def test_same_max_pool_never_picks_padding_and_avg_counts_in_image_cells():
    neg = -np.arange(1, 10, dtype=np.float32).reshape(3, 3, 1)  # [[-1,-2,-3],[-4,-5,-6],[-7,-8,-9]]
    # 2x2 pool, stride 2, SAME on 3x3: out 2x2, padding 1 after on each axis.
    # windows: rows 0-1 x cols 0-1 | rows 0-1 x col 2 | row 2 x cols 0-1 | row 2 x col 2
    # max:  -1, max(-3,-6) = -3, max(-7,-8) = -7, -9   (zero padding would give 0 for three of them)
    np.testing.assert_array_equal(ops.max_pool2d(neg, 2, padding="SAME")[:, :, 0], [[-1, -3], [-7, -9]])
    # avg:  (-1-2-4-5)/4 = -3, (-3-6)/2 = -4.5, (-7-8)/2 = -7.5, -9/1 = -9
    np.testing.assert_array_equal(ops.avg_pool2d(neg, 2, padding="SAME")[:, :, 0], [[-3, -4.5], [-7.5, -9]])


def test_max_pool_ignores_nan_cells_as_tensorflow_does():
    nan = np.nan
    # tf.nn.max_pool2d's results for these 2x2 windows (TensorFlow 2.21): a NaN never wins, first
    # cell or not
    for cells, want in (([1, nan, 0, 5], 5), ([nan, 1, 0, 5], 5), ([1, 2, 0, nan], 2), ([nan, nan, nan, 1], 1)):
        assert ops.max_pool2d(np.array(cells, np.float32).reshape(2, 2, 1), 2)[0, 0, 0] == want
    # a window of NaNs only is NaN (TensorFlow gives the lowest float32 there)
    assert np.isnan(ops.max_pool2d(np.full((2, 2, 1), nan, np.float32), 2)[0, 0, 0])


@pytest.mark.parametrize("ksize,strides,padding", [(2, 2, "VALID"), (3, 2, "SAME"), ((2, 5), (1, 1), "SAME"),
                                                   ((4, 3), (3, 2), "SAME")])
def test_max_pool_is_the_max_of_the_cells_that_are_not_nan(ksize, strides, padding):
    x = rand(2, 9, 11, 4) - 1.0
    x[RNG.random(x.shape) < 0.3] = np.nan
    x[:, :5, :6] = np.nan  # the first windows are all NaN
    got = ops.max_pool2d(x, ksize, strides, padding)
    want = naive.pool2d(x, as_pair(ksize), as_pair(strides), padding, np.fmax.reduce)  # fmax skips NaN
    assert np.isnan(want).any() and not np.isnan(want).all()
    np.testing.assert_array_equal(got, want)


def test_global_pools_against_float64():
    x = (RNG.random((2, 301, 257, 3)) * 1000 + 0.1).astype(np.float32)
    mean64 = x.astype(np.float64).mean(axis=(1, 2))
    got = ops.global_avg_pool2d(x)
    assert got.shape == (2, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, mean64, rtol=1e-7)  # float32 rounding of the exact mean only
    np.testing.assert_array_equal(ops.global_max_pool2d(x), x.max(axis=(1, 2)))
    assert ops.global_avg_pool2d(x, keepdims=True).shape == (2, 1, 1, 3)
    assert ops.global_max_pool2d(x[0]).shape == (3,)
    assert ops.global_avg_pool2d(x[0], keepdims=True).shape == (1, 1, 3)


# --- bias and activations -----------------------------------------------------------------------


def test_bias_and_activations():
    x = np.array([[[-2.0, 0.5]]], np.float32)
    np.testing.assert_array_equal(ops.bias_add(x, [1, -1]), [[[-1.0, -0.5]]])
    np.testing.assert_array_equal(ops.relu(x), [[[0.0, 0.5]]])
    np.testing.assert_array_equal(ops.activate(x, "abs"), [[[2.0, 0.5]]])
    np.testing.assert_array_equal(ops.activate(np.float32([[[-2.0, 0.5, 6.0, 7.5]]]), "relu6"),
                                  [[[0.0, 0.5, 6.0, 6.0]]])
    np.testing.assert_allclose(ops.activate(x, "sigmoid"), 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6)
    np.testing.assert_allclose(ops.activate(x, "TANH"), np.tanh(x.astype(np.float64)), rtol=1e-6)
    np.testing.assert_array_equal(ops.activate(x, "none"), x)
    with pytest.raises(ValueError, match="relu"):
        ops.activate(x, "softmax")
    with pytest.raises(ValueError, match="one value per channel"):
        ops.bias_add(x, [1, 2, 3])


def test_conv2d_checks_its_bias_and_activation():
    x = np.ones((4, 5, 2), np.float32)
    w = np.ones((3, 3, 2, 3), np.float32)
    with pytest.raises(ValueError, match=r"unknown activation 'softmax'; choose one of none, relu"):
        ops.conv2d(x, w, activation="softmax")
    with pytest.raises(ValueError, match=r"one value per channel \(3\), got shape \(2,\)"):
        ops.conv2d(x, w, bias=[1.0, 2.0])
    with pytest.raises(ValueError, match="one value per channel"):
        ops.conv2d(x, w, bias=np.zeros((3, 1)))
    with pytest.raises(ValueError, match="finite"):
        ops.conv2d(x, w, bias=[0.0, np.inf, 0.0])
    with pytest.raises(TypeError):
        ops.conv2d(x, w, 1, "SAME", 1, [1.0, 2.0, 3.0])  # keyword-only: the positional order is tf.nn's


def test_conv2d_bias_and_activation_keywords_act_like_keras():
    x = np.full((3, 3, 1), 1.0, np.float32)
    w = np.ones((1, 1, 1, 2), np.float32) * np.array([1.0, -1.0], np.float32)
    # a scalar bias goes to every filter; relu after the bias; names are case-insensitive
    np.testing.assert_array_equal(ops.conv2d(x, w, bias=0.5, activation="ReLU")[0, 0], [1.5, 0.0])
    np.testing.assert_array_equal(ops.conv2d(x, w, bias=[-2.0, 3.0], activation="abs")[0, 0], [1.0, 2.0])
    np.testing.assert_array_equal(ops.conv2d(x, w, activation=None), ops.conv2d(x, w, activation="none"))


# --- hypothesis properties -----------------------------------------------------------------------

sizes = st.integers(1, 12)
small = st.integers(1, 4)


@PROPERTY
@given(h=sizes, w=sizes, c=st.integers(1, 3), k=st.sampled_from([1, 3, 5]), seed=st.integers(0, 2**32 - 1))
def test_identity_kernel_returns_the_input(h, w, c, k, seed):
    x = np.random.default_rng(seed).standard_normal((h, w, c)).astype(np.float32)
    filters = np.zeros((k, k, c, c), np.float32)
    for ch in range(c):
        filters[:, :, ch, ch] = identity(k)
    np.testing.assert_array_equal(ops.conv2d(x, filters), x)


@PROPERTY
@given(h=sizes, w=sizes, kh=small, kw=small, value=st.floats(-100, 100, allow_nan=False, width=32))
def test_box_on_a_constant_image_is_the_constant_away_from_the_border(h, w, kh, kw, value):
    x = np.full((h, w, 1), value, np.float32)
    box = np.full((kh, kw, 1, 1), 1 / (kh * kw), np.float32)
    out = ops.conv2d(x, box)[:, :, 0]
    top, left = (kh - 1) // 2, (kw - 1) // 2  # SAME, stride 1: the padding before
    inside = out[top : h - (kh - 1 - top), left : w - (kw - 1 - left)]  # windows fully in the image
    np.testing.assert_allclose(inside, value, rtol=1e-5, atol=1e-5)
    assert inside.size == max(h - kh + 1, 0) * max(w - kw + 1, 0)


@PROPERTY
@given(h=sizes, w=sizes, kh=small, kw=small, s=st.tuples(small, small), d=st.tuples(small, small),
       padding=st.sampled_from(["SAME", "VALID", "same", "valid"]))
def test_output_shapes_obey_the_geometry(h, w, kh, kw, s, d, padding):
    x = np.ones((1, h, w, 2), np.float32)
    filters = np.ones((kh, kw, 2, 3), np.float32)
    fits = (kh - 1) * d[0] + 1 <= h and (kw - 1) * d[1] + 1 <= w
    if padding.upper() == "VALID" and not fits:
        with pytest.raises(ValueError, match="padding SAME or a smaller window"):
            ops.conv2d(x, filters, s, padding, d)
        return
    expected = output_size((h, w), (kh, kw), s, padding, d)
    assert ops.conv2d(x, filters, s, padding, d).shape == (1, *expected, 3)
    # and the geometry itself is TF's: SAME = ceil(N/S), VALID = floor((N - F')/S) + 1
    for n, k, stride, dil, out in ((h, kh, s[0], d[0], expected[0]), (w, kw, s[1], d[1], expected[1])):
        eff = (k - 1) * dil + 1
        assert out == (-(-n // stride) if padding.upper() == "SAME" else (n - eff) // stride + 1)
        g = axis(n, k, stride, padding, dil)
        assert (n + g.pad_before + g.pad_after - eff) // stride + 1 == out
        assert 0 <= g.pad_after - g.pad_before <= 1


@PROPERTY
@given(h=sizes, w=sizes, c=st.integers(1, 3), kh=small, kw=small, s=st.tuples(small, small),
       a=st.floats(-4, 4, allow_nan=False), b=st.floats(-4, 4, allow_nan=False), seed=st.integers(0, 2**32 - 1))
def test_conv_is_linear_in_the_input(h, w, c, kh, kw, s, a, b, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((2, 1, h, w, c)).astype(np.float32)
    filters = rng.standard_normal((kh, kw, c, 2)).astype(np.float32)
    combined = ops.conv2d(np.float32(a) * x + np.float32(b) * y, filters, s)
    separate = np.float32(a) * ops.conv2d(x, filters, s) + np.float32(b) * ops.conv2d(y, filters, s)
    np.testing.assert_allclose(combined, separate, rtol=1e-4, atol=1e-3)


@PROPERTY
@given(h=sizes, w=sizes, k=st.tuples(small, small), s=st.tuples(small, small),
       value=st.floats(-100, 100, allow_nan=False, width=32))
def test_same_pools_of_a_constant_image_are_the_constant(h, w, k, s, value):
    # padding cells never count: not in the max (they are not zeros), not in the average's divisor
    x = np.full((1, h, w, 2), value, np.float32)
    expected_shape = (1, *output_size((h, w), k, s, "SAME"), 2)
    for op in (ops.max_pool2d, ops.avg_pool2d):
        out = op(x, k, s, "SAME")
        assert out.shape == expected_shape
        np.testing.assert_allclose(out, value, rtol=1e-6)


# --- input forms -------------------------------------------------------------------------------


def test_hwc_in_hwc_out_and_float32_always():
    x = rand(6, 5, 3)
    w = rand(3, 3, 3, 2)
    out = ops.conv2d(x, w)
    assert out.shape == (6, 5, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out, ops.conv2d(x[None], w)[0])
    for op in (ops.max_pool2d, ops.avg_pool2d):
        assert op(x, 2).shape == (3, 2, 3) and op(x, 2).dtype == np.float32
    assert ops.conv2d(x.astype(np.float64), w.astype(np.float64)).dtype == np.float32


def test_layout_and_dtype_do_not_change_the_result():
    base = RNG.integers(0, 256, (2, 7, 9, 3))
    w = rand(3, 2, 3, 2)
    reference = ops.conv2d(np.ascontiguousarray(base, np.float32), w, (2, 1), "SAME", (1, 2))
    transposed = np.ascontiguousarray(base.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)  # F-like strides
    assert not transposed.flags.c_contiguous
    strided = np.zeros((2, 14, 9, 6), base.dtype)
    strided[:, ::2, :, ::2] = base
    for variant in (base, base.astype(np.float64), base.astype(np.uint8), transposed, strided[:, ::2, :, ::2],
                    np.asfortranarray(base.astype(np.float32)), base.tolist()):
        np.testing.assert_array_equal(ops.conv2d(variant, w, (2, 1), "SAME", (1, 2)), reference)
    for op in (ops.max_pool2d, ops.avg_pool2d):
        np.testing.assert_array_equal(op(transposed, 2, 1, "SAME"), op(base.astype(np.float32), 2, 1, "SAME"))


# --- errors: the message says what to change ---------------------------------------------------


def raises(exc, fragments, call, *args, **kwargs):
    with pytest.raises(exc) as info:
        call(*args, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_bad_shapes_are_rejected_with_what_to_change():
    w = np.ones((2, 2, 3, 1), np.float32)
    raises(ValueError, ["(N, H, W, C) or (H, W, C)", "(5, 5)"], ops.conv2d, np.ones((5, 5)), w)
    raises(ValueError, ["(N, H, W, C)"], ops.conv2d, np.ones((1, 1, 5, 5, 3)), w)
    raises(ValueError, ["4-D", "k[:, :, None, None]"], ops.conv2d, np.ones((5, 5, 3)), np.ones((2, 2)))
    raises(ValueError, ["expect 3 input channels", "has 1", "(2, 2, 1, 1)"], ops.conv2d, np.ones((5, 5, 1)), w)
    raises(ValueError, ["empty"], ops.conv2d, np.ones((0, 5, 3)), w)
    raises(ValueError, ["(N, H, W, C)"], ops.max_pool2d, np.ones((4, 4)), 2)


@pytest.mark.parametrize("name", ["strides", "dilations"])
@pytest.mark.parametrize("value", [0, -1, (1, 0), (-2, 1)])
def test_zero_and_negative_strides_and_dilations(name, value):
    raises(ValueError, [name, ">= 1"], ops.conv2d, np.ones((5, 5, 1)), np.ones((2, 2, 1, 1)), **{name: value})


def test_bad_stride_types_and_padding():
    x, w = np.ones((5, 5, 1)), np.ones((2, 2, 1, 1))
    raises(TypeError, ["strides", "int or a pair"], ops.conv2d, x, w, strides=1.5)
    raises(TypeError, ["strides", "int or a pair"], ops.conv2d, x, w, strides=(1, 2, 3))
    raises(ValueError, ["'SAME' or 'VALID'", "'full'"], ops.conv2d, x, w, padding="full")
    raises(ValueError, ["strides", ">= 1"], ops.max_pool2d, x, 2, 0)
    raises(ValueError, ["ksize", ">= 1"], ops.avg_pool2d, x, 0)


def test_valid_window_larger_than_input():
    x = np.ones((3, 4, 1), np.float32)
    raises(ValueError, ["4x4", "3x4", "padding SAME or a smaller window"], ops.conv2d, x, np.ones((4, 4, 1, 1)),
           padding="VALID")
    # dilation makes a 2x2 kernel 3x5 wide
    raises(ValueError, ["3x5", "padding SAME"], ops.conv2d, x, np.ones((2, 2, 1, 1)), padding="valid",
           dilations=(2, 4))
    raises(ValueError, ["pool window", "padding SAME"], ops.max_pool2d, x, 4, padding="VALID")
    assert ops.conv2d(x, np.ones((4, 4, 1, 1)), padding="SAME").shape == (3, 4, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_filters(bad):
    w = np.ones((3, 3, 1, 1), np.float32)
    w[1, 2] = bad
    raises(ValueError, ["NaN or infinity", "finite"], ops.conv2d, np.ones((5, 5, 1)), w)


def test_large_finite_filters_whose_sum_overflows_are_accepted():
    # the finite check sums the squared weights first; a sum that overflows float32 is checked
    # weight by weight
    w = np.full((1, 1, 1, 4), 3e38, np.float32)
    assert ops.conv2d(np.zeros((2, 2, 1)), w).shape == (2, 2, 4)
    w = np.full((3, 3, 8, 2), 1e38, np.float32)
    w[2, 1, 5, 1] = np.nan  # one NaN in a bank whose sum overflows
    raises(ValueError, ["NaN or infinity", "finite"], ops.conv2d, np.ones((5, 5, 8)), w)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_in_a_deep_bank_are_found(bad):
    # one bad weight among 73 Ki of a deep bank still shows in the sum of their squares
    w = np.ones((3, 3, 64, 128), np.float32)
    w[2, 0, 63, 127] = bad
    raises(ValueError, ["NaN or infinity", "finite"], ops.conv2d, np.ones((5, 5, 64)), w)
    w = np.full((3, 3, 64, 128), 1e36, np.float32)  # finite, but the sum overflows: checked one by one
    assert ops.conv2d(np.zeros((5, 5, 64)), w).shape == (5, 5, 128)
    w[0, 1, 2, 3] = -np.inf
    raises(ValueError, ["NaN or infinity", "finite"], ops.conv2d, np.ones((5, 5, 64)), w)


@pytest.mark.parametrize("activation", [None, "relu", "sigmoid"])
def test_a_bad_weight_in_a_bank_larger_than_the_result_is_refused_with_any_activation(activation):
    # a bank larger than its result is checked after the call, through the result, when there is
    # no activation to hide a bad weight (a ReLU makes -inf 0, a sigmoid makes +inf 1)
    x = np.abs(np.random.default_rng(0).standard_normal((3, 3, 128))).astype(np.float32) + 1
    w = np.full((3, 3, 128, 128), 0.01, np.float32)
    assert w.size > conv_paths.LATE_CHECK_MIN_WEIGHTS
    for position in [(0, 0, 0, 0), (2, 2, 127, 127), (1, 0, 17, 5)]:
        bad = w.copy()
        bad[position] = -np.inf
        raises(ValueError, ["NaN or infinity", "finite"], ops.conv2d, x, bad, activation=activation)
    # a NaN in the image, not in the bank, is computed as TensorFlow does: NaN where it reaches
    x[1, 1, 5] = np.nan
    out = ops.conv2d(x, w)
    assert np.isnan(out).all() and out.shape == (3, 3, 128)


def test_float64_weights_beyond_float32_are_refused_not_turned_into_infinity():
    # the weights are computed in float32: 1e39 would be an infinity there
    w = np.ones((3, 3, 2, 1))
    w[0, 0, 1, 0] = -1e39
    raises(ValueError, ["NaN or infinity in float32", "finite"], ops.conv2d, np.ones((5, 5, 2)), w)
    w[0, 0, 1, 0] = 1e38  # the largest float32 is about 3.4e38
    assert np.isfinite(ops.conv2d(np.ones((5, 5, 2)), w)).all()


def test_non_numeric_dtypes():
    w = np.ones((1, 1, 1, 1))
    raises(TypeError, ["input must hold numbers", "<U"], ops.conv2d, np.full((2, 2, 1), "a"), w)
    raises(TypeError, ["filters must hold numbers", "complex"], ops.conv2d, np.ones((2, 2, 1)), w.astype(complex))
    raises(TypeError, ["filters must hold numbers", "object"], ops.conv2d, np.ones((2, 2, 1)), w.astype(object))
    raises(TypeError, ["input must hold numbers"], ops.max_pool2d, np.ones((2, 2, 1), complex), 1)
