"""The padding, --border and --flip options as a user runs them: real PNGs written and read back.

Numbers are checked against scipy.ndimage (its "reflect" is TensorFlow's SYMMETRIC, "mirror" is
REFLECT, "nearest" is edge; ``convolve`` flips the kernel) and against convfilter.ops, itself
checked against np.pad and the plain-loop formula in test_borders.py.
"""

import re

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from convfilter import ops
from convfilter.geometry import output_size
from test_cli import bank, invoke, npy_of, pixels

SCIPY_MODE = {"zero": "constant", "reflect": "mirror", "symmetric": "reflect", "edge": "nearest"}
ASYMMETRIC = "1,2,0;0,-1,3;4,0,-2"  # every flip changes it


@pytest.fixture
def gray(cwd):
    """A 19x24 8-bit gray photo with texture."""
    rng = np.random.default_rng(17)
    rows, cols = np.mgrid[0:19, 0:24]
    values = np.clip(rows * 9 + cols * 5 + rng.integers(0, 40, rows.shape), 0, 255).astype(np.uint8)
    path = cwd / "gray.png"
    Image.fromarray(values).save(path)
    return path


def kernel_matrix(text):
    return np.array([[float(v) for v in row.split(",")] for row in text.split(";")])


@pytest.mark.parametrize("text,pads", [("1,2,0,3", ((1, 2), (0, 3))), ("2", ((2, 2), (2, 2))),
                                       (" 0 , 1,1 ,0", ((0, 1), (1, 0)))])
def test_explicit_padding_is_tensorflows(photo, text, pads):
    got = npy_of("apply", "-k", "sobel-x", "-p", text, "--stride", "2", photo)
    want = ops.conv2d(pixels(photo), bank("sobel-x", 3), strides=2, padding=[[0, 0], *pads, [0, 0]])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("text", ["1,2", "1,2,3", "1,2,3,4,5", "-1", "1.5", "full", "1,2,3,x", ""])
def test_bad_padding_is_a_usage_error(photo, text):
    result = invoke("apply", "-k", "sobel-x", "-p", text, photo)
    assert result.exit_code == 2
    assert "Error: Invalid value for '-p' / '--padding'" in result.stderr
    assert "T,B,L,R" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("border", ["zero", "reflect", "symmetric", "edge"])
def test_border_equals_scipy_correlate(gray, border):
    got = npy_of("apply", "-k", ASYMMETRIC, "--border", border, gray)[:, :, 0]
    want = ndi.correlate(pixels(gray)[:, :, 0], kernel_matrix(ASYMMETRIC), mode=SCIPY_MODE[border])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("border", ["zero", "symmetric", "edge"])
def test_flip_is_true_convolution(gray, border):
    got = npy_of("apply", "-k", ASYMMETRIC, "--flip", "--border", border, gray)[:, :, 0]
    want = ndi.convolve(pixels(gray)[:, :, 0], kernel_matrix(ASYMMETRIC), mode=SCIPY_MODE[border])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    unflipped = npy_of("apply", "-k", ASYMMETRIC, "--border", border, gray)[:, :, 0]
    assert np.abs(unflipped - got).max() > 0.1  # TensorFlow's default stays cross-correlation


def test_flip_applies_to_every_kernel_and_a_bank(gray, cwd):
    bank_path = cwd / "bank.npy"
    weights = np.random.default_rng(3).standard_normal((3, 2, 1, 2)).astype(np.float32)
    np.save(bank_path, weights)
    got = npy_of("apply", "-k", "sobel-y", "-k", bank_path, "--flip", "--border", "edge", gray)
    x = pixels(gray)[None].astype(np.float32)
    want = np.concatenate([ops.conv2d(x, w[::-1, ::-1], border="EDGE")[0] for w in (bank("sobel-y", 1), weights)],
                          axis=2)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_constant_colour_blurred_with_border_edge_stays_that_colour_to_the_last_pixel(cwd):
    colour = (200, 120, 35)
    Image.new("RGB", (37, 23), colour).save(cwd / "flat.png")
    # the gallery's 25x25 blur: wider than the image is tall, so the edge repeats past the image
    for kernel in ("gaussian:25:6", "box", "gaussian:9:2"):
        result = invoke("apply", "-k", kernel, "--channels", "each", "--border", "edge", "--normalize", "clip",
                        "flat.png", "-o", "out.png")
        assert result.exit_code == 0, result.stderr
        out = np.asarray(Image.open(cwd / "out.png"))
        assert out.shape == (23, 37, 3) and (out == colour).all(), (kernel, np.unique(out.reshape(-1, 3), axis=0))
    # with TensorFlow's zero border the rim darkens: the case the option is for
    invoke("apply", "-k", "gaussian:25:6", "--channels", "each", "--normalize", "clip", "flat.png", "-o", "zero.png")
    rim = np.asarray(Image.open(cwd / "zero.png"))[0, 0]
    assert (rim < np.array(colour) * 0.6).all()


def test_a_mirror_border_that_cannot_reach_fails_that_input(cwd):
    Image.new("L", (3, 3), 128).save(cwd / "tiny.png")
    result = invoke("apply", "-k", "gaussian:9:2", "--border", "reflect", "tiny.png", "-o", "out.png")
    assert result.exit_code == 1
    assert "Error: tiny.png: border reflect needs padding smaller than the input: 4+4 rows" in result.stderr
    assert not (cwd / "out.png").exists()
    result = invoke("shape", "--size", "3x3", "-k", "gaussian:9:2", "--border", "reflect")
    assert result.exit_code == 2 and "border reflect needs padding" in result.stderr


def test_shape_shows_explicit_pads_and_the_border():
    result = invoke("shape", "--size", "10x12x3", "-k", "vertical:5", "-p", "1,2,0,3", "--border", "symmetric",
                    "--pool", "max", "--pool-padding", "1")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    conv = next(line for line in lines if line.startswith("conv"))
    assert "conv 5x5 pad 1,2,0,3 border symmetric stride 1" in conv
    assert "9x11x1" in conv and "(10 - 5 + 1 + 2) // 1 + 1 = 9" in conv and "1 top, 2 bottom" in conv
    assert any("(12 - 5 + 0 + 3) // 1 + 1 = 11" in line and "0 left, 3 right" in line for line in lines)
    pool = next(line for line in lines if line.startswith("max pool"))
    assert "max pool 2x2 pad 1,1,1,1 stride 2" in pool and "5x6x1" in pool and "1 top, 1 bottom" in pool


def test_pool_takes_explicit_padding_for_max_only(photo):
    got = npy_of("pool", "--type", "max", "--size", "3", "--stride", "2", "--padding", "1,0,2,1", photo)
    want = ops.max_pool2d(pixels(photo), 3, 2, ((1, 0), (2, 1)))
    np.testing.assert_array_equal(got, want)
    for args in (["pool", "--type", "avg", "--padding", "1"],
                 ["apply", "-k", "box", "--pool", "avg", "--pool-padding", "0,1,0,1"]):
        result = invoke(*args, photo)
        assert result.exit_code == 2 and "average pooling takes padding SAME or VALID only" in result.stderr
    result = invoke("apply", "-k", "box", "--pool", "max", "--pool-size", "2", "--pool-padding", "2", photo)
    assert result.exit_code == 2 and "top padding 2 with a window of 2" in result.stderr


def test_help_explains_the_options_with_examples():
    text = invoke("apply", "-h").stdout
    for fragment in ("--border [zero|reflect|symmetric|edge]", "--flip", "T,B,L,R", "--border edge", "--flip photo"):
        assert fragment in text
    assert "--padding 1" in invoke("pool", "-h").stdout
    assert "-p 3,3,0,0" in invoke("shape", "-h").stdout


def padding_or_none(text: str):
    """What -p should accept, by the documented rule: SAME/VALID (any case), N, or T,B,L,R."""
    if text.upper() in ("SAME", "VALID"):
        return text.upper()
    match = re.fullmatch(r"\s*\d+(\s*,\s*\d+){3}\s*|\s*\d+\s*", text)
    if not match:
        return None
    cells = [int(v.strip()) for v in text.split(",")]  # str.strip, not int(), drops \x1c-\x1f as \s matches them
    cells = cells * 4 if len(cells) == 1 else cells
    return None if max(cells) > 100_000 else ((cells[0], cells[1]), (cells[2], cells[3]))


small = st.integers(0, 6).map(str)
padding_texts = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["same", "VALID", "Same", "full", "causal"]),
    small,
    st.lists(small, min_size=1, max_size=6).flatmap(
        lambda cells: st.sampled_from([",", ", ", " ,", ";", "x"]).map(lambda sep: sep.join(cells))),
    st.text(alphabet="0123456789, -+.", max_size=10),
)


@settings(max_examples=100, deadline=None)
@given(text=padding_texts)
@example(text="0\x1f")  # control characters that str.strip and \s take as white space
@example(text="1\x1c, 2,3 ,4")
def test_padding_text_is_accepted_by_the_rule_or_a_usage_error(text):
    # shape parses -p as apply does and computes sizes without allocating (pads up to 100000 are fine)
    result = invoke("shape", "--size", "19x24", "-k", "sobel-x", "-p", text)
    assert "Traceback" not in result.stderr
    expected = padding_or_none(text)
    if expected is None:
        assert result.exit_code == 2 and "Error: Invalid value for '-p' / '--padding'" in result.stderr
        return
    assert result.exit_code == 0, result.stderr
    height, width = output_size((19, 24), 3, 1, expected)
    conv = next(line for line in result.stdout.splitlines() if line.startswith("conv"))
    assert f" {height}x{width}x1 " in conv
