"""Random option values: each is accepted with a correct result, or rejected with exit 2 and a message.

Runs the real command with click's CliRunner on a small real image and reads the .npy it writes.
"""

from __future__ import annotations

import os
import string

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from convfilter import cli
from convfilter.geometry import output_size
from convfilter.kernels import REGISTRY, resolve

HEIGHT, WIDTH = 9, 13
FLOAT32_MAX = float(np.finfo(np.float32).max)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("options")
    pixels = np.random.default_rng(5).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "img.png")
    return folder


def invoke(workdir, args: list[str]):
    """Run ``convfilter`` in ``workdir``; return the result and the written (H, W, F) array or None."""
    output = workdir / "out.npy"
    if output.exists():
        output.unlink()
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        result = CliRunner().invoke(cli.cli, [*args, "img.png", "-f", "npy", "-o", "out.npy"])
    finally:
        os.chdir(previous)
    array = np.load(output) if output.exists() else None
    return result, array


def assert_no_traceback(result):
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}\n{result.output}")
    assert "Traceback" not in result.output


def assert_rejected(result, array):
    assert result.exit_code == 2, result.output
    assert "Error: " in result.output and array is None


def pair_or_none(text: str):
    """What a N|H,W option should accept, by the documented rule (None: rejected)."""
    import re

    match = re.fullmatch(r"\s*(\d+)(?:\s*[,x]\s*(\d+))?\s*", text)
    if not match:
        return None
    first = int(match.group(1))
    second = int(match.group(2)) if match.group(2) else first
    if min(first, second) < 1 or max(first, second) > 100_000:
        return None
    return first, second


def checked_pair(result, array, text: str):
    """The pair an N|H,W option should give for ``text``, once the run is checked to have
    accepted it; None when the rule rejects it (checked as a usage error)."""
    assert_no_traceback(result)
    expected = pair_or_none(text)
    if expected is None:
        assert_rejected(result, array)
    else:
        assert result.exit_code == 0, result.output
    return expected


numbers = st.one_of(st.integers(-3, 12), st.integers(-10**9, 10**9), st.sampled_from([0, 1, 99_999, 100_000, 100_001]))


def pair_texts_of(values, noise_size: int):
    """Texts for a N|H,W option: free text, one value, two values with a separator, digit noise."""
    return st.one_of(
        st.text(max_size=12),
        values.map(str),
        st.tuples(values, values, st.sampled_from([",", "x", ", ", " x ", ";", ":", "X"])).map(
            lambda t: f"{t[0]}{t[2]}{t[1]}"),
        st.text(alphabet="0123456789,x -+.", max_size=noise_size),
    )


pair_texts = pair_texts_of(numbers, 8)


@SETTINGS
@given(stride=pair_texts)
def test_stride(workdir, stride):
    result, array = invoke(workdir, ["apply", "-k", "sobel-x", "--stride", stride])
    expected = checked_pair(result, array, stride)
    if expected is None:
        return
    assert array.shape == (*output_size((HEIGHT, WIDTH), 3, expected, "SAME"), 1)


# Dilations are drawn small or far out of range: SAME padding with dilation D copies the image
# into a zero frame (F - 1) * D cells wide, so a dilation in the thousands costs gigabytes
# (refused cleanly when it does not fit: see test_limits); the property is about parsing.
small_numbers = st.one_of(st.integers(-3, 40), st.integers(-10**9, 0), st.integers(100_001, 10**9),
                          st.sampled_from([0, 1, 100_001]))
dilation_texts = pair_texts_of(small_numbers, 3)


@SETTINGS
@given(dilation=dilation_texts)
def test_dilation(workdir, dilation):
    result, array = invoke(workdir, ["apply", "-k", "box", "--dilation", dilation])
    expected = checked_pair(result, array, dilation)
    if expected is None:
        return
    assert array.shape == (HEIGHT, WIDTH, 1)  # SAME keeps the size whatever the dilation
    # a box kernel dilated past the image sees only the centre pixel: the map is the channel sum / 9
    image = np.asarray(Image.open(workdir / "img.png"), np.float32) / 255
    if min(expected) >= max(HEIGHT, WIDTH):
        np.testing.assert_allclose(array[:, :, 0], image.sum(axis=2) / 9, rtol=1e-5, atol=1e-6)


@SETTINGS
@given(size=pair_texts, mode=st.sampled_from(["valid", "same"]))
def test_pool_size(workdir, size, mode):
    result, array = invoke(workdir, ["pool", "--type", "max", "--size", size, "--padding", mode])
    assert_no_traceback(result)
    expected = pair_or_none(size)
    if expected is None:
        assert_rejected(result, array)
        return
    if mode == "valid" and (expected[0] > HEIGHT or expected[1] > WIDTH):
        # depends on the input, not the option: that input fails (exit 1) with its name
        assert result.exit_code == 1 and "Error: img.png: " in result.output and array is None
        return
    assert result.exit_code == 0, result.output
    assert array.shape == (*output_size((HEIGHT, WIDTH), expected, expected, mode.upper()), 3)


bias_texts = st.one_of(
    st.text(max_size=12),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.lists(st.floats(-1e6, 1e6).map(repr), min_size=1, max_size=4).map(",".join),
    st.text(alphabet="0123456789.,eE+-infa ", max_size=10),
)


def bias_or_none(text: str):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        return None
    return values if all(abs(v) <= FLOAT32_MAX for v in values) else None  # maps are float32


@SETTINGS
@given(bias=bias_texts)
def test_bias(workdir, bias):
    result, array = invoke(workdir, ["apply", "-k", "identity", "--channels", "gray", "--bias", bias])
    assert_no_traceback(result)
    values = bias_or_none(bias)
    if values is None:
        assert_rejected(result, array)
        return
    if len(values) != 1:
        # one map, several values: the message says how many to give
        assert result.exit_code in (1, 2) and "--bias has" in result.output and array is None
        return
    assert result.exit_code == 0, result.output
    gray = np.asarray(Image.open(workdir / "img.png").convert("RGB"), np.float32) / 255 @ np.float32(
        [0.299, 0.587, 0.114])
    np.testing.assert_allclose(array[:, :, 0], gray + np.float32(values[0]), rtol=1e-5,
                               atol=1e-6 * max(1.0, abs(values[0])))


kernel_texts = st.one_of(
    st.text(max_size=16),
    st.tuples(st.sampled_from(sorted(REGISTRY)), st.text(alphabet=string.digits + ":.-e ", max_size=8)).map(
        lambda t: t[0] + (":" + t[1] if t[1] else "")),
    st.lists(st.lists(st.one_of(st.floats(-100, 100), st.sampled_from([float("inf"), float("nan"), 1e400])),
                      min_size=1, max_size=4).map(lambda r: ",".join(map(repr, r))),
             min_size=1, max_size=4).map(";".join),
    st.text(alphabet="0123456789.,;-+eE #\n", max_size=16),
    st.sampled_from(["-", "--", "img.png", "missing.npy", "x.txt", ".", "/", "gaussian:0", "gaussian:9:0",
                     "vertical:4", "box:99", "gaussian:31:1e308", "1e999", "nan"]),
)


@SETTINGS
@given(spec=kernel_texts)
def test_kernel(workdir, spec):
    result, array = invoke(workdir, ["apply", "-k", spec])
    assert_no_traceback(result)
    try:
        previous = os.getcwd()
        os.chdir(workdir)
        try:
            kernel = resolve(spec)
        finally:
            os.chdir(previous)
    except ValueError:
        assert_rejected(result, array)
        return
    assert result.exit_code == 0, result.output
    assert array.shape == (HEIGHT, WIDTH, kernel.map_count)
    # the result is the SAME cross-correlation of the channel sum with the kernel
    weights = np.asarray(kernel.weights, np.float64)
    image = np.asarray(Image.open(workdir / "img.png"), np.float64).sum(axis=2) / 255
    fh, fw = weights.shape
    top, left = (fh - 1) // 2, (fw - 1) // 2
    padded = np.pad(image, ((top, fh - 1 - top), (left, fw - 1 - left)))
    expected = sum(weights[u, v] * padded[u:u + HEIGHT, v:v + WIDTH] for u in range(fh) for v in range(fw))
    np.testing.assert_allclose(array[:, :, 0], expected, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(weights).sum()))


# --- --name templates: accepted and inside the output folder, or refused ----------------------------------

name_pieces = st.sampled_from([
    "{stem}", "{kernel}", "{index}", "{index:03d}", "{ext}", "{stem!r}", "{index:>300}", "{stem:d}",
    "{", "}", "{{", "}}", "{bogus}", "{0}", "{}", "/", "//", "\\", "..", ".", "./", "../", "link/", "sub/",
    "a", "-", " ", "~", "*", "é", "\x00", "\n", "x" * 300,
])
# mostly well-formed names (a folder part, the input's stem or index, an extension) so that many are accepted
plausible_names = st.tuples(
    st.sampled_from(["", "sub/", "link/", "link/deeper/", "new/", "a/b/", "./", "sub/./", ".hidden/"]),
    st.lists(st.sampled_from(["x", "-", " ", "é", "{kernel}", "{ext}", "{{", "}}", "."]), max_size=3).map("".join),
    st.sampled_from(["{stem}", "{index}", "{index:03d}", "{stem}_{index}", "{index:>300}"]),
    st.sampled_from(["", ".{ext}", "_{kernel}.{ext}", ".png", ".part", "/", "/."]),
).map("".join)
name_templates = st.one_of(st.lists(name_pieces, max_size=8).map("".join), st.text(max_size=12), plausible_names)


def files_under(folder) -> set[str]:
    """Every file and link below ``folder``, without following links into other folders."""
    found = set()
    for top, dirs, files in os.walk(folder):
        found.update(os.path.join(top, name) for name in files)
        found.update(os.path.join(top, name) for name in dirs if os.path.islink(os.path.join(top, name)))
    return found


@SETTINGS
@given(template=name_templates)
def test_name_template(workdir, tmp_path_factory, template):
    """A template is refused (exit 2), or every output lands inside -o under the name it describes.

    The output folder holds a sub-folder that is a symbolic link to a folder outside it: a name
    through that link must fail (exit 1, the input named) rather than write outside.
    """
    root = tmp_path_factory.mktemp("names")
    inputs = [root / "a.png", root / "b.png"]
    for path in inputs:
        path.write_bytes((workdir / "img.png").read_bytes())
    out, outside = root / "out", root / "outside"
    (out / "sub").mkdir(parents=True)
    outside.mkdir()
    os.symlink(outside, out / "link")
    before = files_under(root)
    result = CliRunner().invoke(cli.cli, ["apply", "-k", "vertical", "--jobs", "1", *map(str, inputs),
                                          "-o", f"{out}/", "--name", template])
    assert_no_traceback(result)
    event(f"exit {result.exit_code}")
    assert list(outside.iterdir()) == [] and files_under(root) - before <= files_under(out)
    written = files_under(out) - before
    if result.exit_code == 2:
        assert "Error: " in result.output and not written, result.output
        return
    assert result.exit_code in (0, 1), result.output
    expected = {os.path.normpath(os.path.join(out, template.format(stem=path.stem, kernel="vertical",
                                                                     index=index, ext="png")))
                for index, path in enumerate(inputs)}
    lines = result.output.splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert lines[-1] == f"processed {2 - len(errors)}, failed {len(errors)}, skipped 0", result.output
    assert all(line.startswith((f"Error: {inputs[0]}: ", f"Error: {inputs[1]}: ")) for line in errors), errors
    assert written <= expected and len(written) == 2 - len(errors), (written, expected)
    assert (result.exit_code == 0) == (written == expected)
    for path in written:
        with Image.open(path) as image:
            assert image.size == (WIDTH, HEIGHT)
