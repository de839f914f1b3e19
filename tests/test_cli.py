"""The command line run as a user runs it: real files, outputs read back, exit codes and stderr.

Numbers are checked against convfilter.ops (itself checked against the plain-loop reference in
test_ops.py) on pixels read with Pillow directly, so the CLI's loading, wiring and encoding are
what is under test here.
"""

import io as stdio
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import naive
from conftest import CHECKOUT_ENV, SAMPLES, cli_reference, run_convfilter
from convfilter import __version__, ops
from convfilter.cli import cli
from convfilter.geometry import output_size
from convfilter.kernels import REGISTRY, builtin

CHINA = SAMPLES / "china.jpg"


def invoke(*args, input=None):
    """Run the CLI in this process (click's CliRunner); stdout and stderr are kept apart."""
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


ENV = CHECKOUT_ENV


def run(*args, cwd, env, input=None):
    """Run ``python -m convfilter`` in a real subprocess, bytes out (``cli_env``: through the server
    and without)."""
    return run_convfilter(*args, cwd=cwd, input=input, text=False, timeout=300, env=env)


def pixels(path):
    """An image as float64 (H, W, C) in [0, 1], read with Pillow alone."""
    array = np.asarray(Image.open(path), np.float64) / 255
    return array[:, :, None] if array.ndim == 2 else array


def bank(name, channels):
    """A built-in 2-D kernel copied across the input channels: one summed map (the book's semantics)."""
    return np.repeat(np.asarray(builtin(name), np.float32)[:, :, None, None], channels, axis=2)


def minmax_8bit(data):
    data = np.asarray(data, np.float64)
    return np.round((data - data.min()) / (data.max() - data.min()) * 255)


def npy_of(*args):
    """Run apply/pool with -f npy to stdout and return the array."""
    result = invoke(*args, "-f", "npy", "-o", "-")
    assert result.exit_code == 0, result.stderr
    return np.load(stdio.BytesIO(result.stdout_bytes))


# --- the README's first command ----------------------------------------------------------------


def test_readme_first_command_writes_the_books_picture(tmp_path, cli_env):
    result = run("apply", "--kernel", "vertical", CHINA, cwd=tmp_path, env=cli_env)
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path) == ["china_vertical.png"]
    assert result.stderr.decode().strip() == "wrote china_vertical.png"
    assert result.stdout == b""
    image = Image.open(tmp_path / "china_vertical.png")
    assert image.format == "PNG" and image.size == (640, 427) and image.mode == "L"
    maps = ops.conv2d(pixels(CHINA), bank("vertical", 3))[:, :, 0]
    difference = np.abs(np.asarray(image, np.float64) - minmax_8bit(maps))
    assert difference.max() <= 1


def test_readme_first_command_with_two_kernels_and_two_images(tmp_path, cli_env):
    result = run("apply", "--kernel", "vertical", "--kernel", "horizontal", CHINA, SAMPLES / "flower.jpg",
                 cwd=tmp_path, env=cli_env)
    assert result.returncode == 0, result.stderr
    names = ["china_horizontal.png", "china_vertical.png", "flower_horizontal.png", "flower_vertical.png"]
    assert sorted(os.listdir(tmp_path)) == names
    assert all(Image.open(tmp_path / n).size == (640, 427) for n in names)
    # several inputs are a batch: a handful of files are named (in the order they finish), then a summary
    lines = result.stderr.decode().splitlines()
    assert sorted(lines[:-1]) == [f"wrote {n}" for n in names] and lines[-1] == "processed 2, failed 0, skipped 0"


# --- outputs -----------------------------------------------------------------------------------


def test_output_file_folder_and_stdout(photo, cwd):
    result = invoke("apply", "-k", "sobel-x", photo, "-o", "edges.png")
    assert result.exit_code == 0 and (cwd / "edges.png").is_file()
    assert "wrote edges.png" in result.stderr and result.stdout == ""

    result = invoke("apply", "-k", "sobel-x", "-k", "sobel-y", photo, "-o", "maps/deeper")
    assert result.exit_code == 0
    assert sorted(os.listdir(cwd / "maps" / "deeper")) == ["photo_sobel-x.png", "photo_sobel-y.png"]

    result = invoke("apply", "-k", "sobel-x", photo, "-o", "-")
    assert result.exit_code == 0
    streamed = Image.open(stdio.BytesIO(result.stdout_bytes))
    assert streamed.format == "PNG"
    np.testing.assert_array_equal(np.asarray(streamed), np.asarray(Image.open(cwd / "edges.png")))


def test_two_outputs_cannot_go_to_one_file(photo):
    result = invoke("apply", "-k", "sobel-x", "-k", "sobel-y", photo, "-o", "one.png")
    assert result.exit_code == 2
    assert result.stderr == ("Error: 2 maps cannot all go to the file 'one.png'; give -o a folder (e.g. -o maps/), "
                             "a .npy name (all maps in one array) or --montage (one picture)\n")


def test_npy_is_raw_float32_maps(photo):
    result = invoke("apply", "-k", "vertical", "-k", "sobel-x", "-k", "gaussian:5:1", photo, "-f", "npy", "-o",
                    "maps.npy")
    assert result.exit_code == 0
    maps = np.load("maps.npy")
    assert maps.dtype == np.float32 and maps.shape == (23, 31, 3)
    image = pixels(photo)
    for k, name in enumerate(["vertical", "sobel-x", "gaussian:5:1"]):
        np.testing.assert_allclose(maps[:, :, k], ops.conv2d(image, bank(name, 3))[:, :, 0], rtol=1e-5, atol=1e-5)


def test_png_output_is_minmax_of_the_raw_map(photo):
    raw = npy_of("apply", "-k", "laplacian", photo)[:, :, 0]
    invoke("apply", "-k", "laplacian", photo, "-o", "lap.png")
    assert np.abs(np.asarray(Image.open("lap.png"), np.float64) - minmax_8bit(raw)).max() <= 1


@pytest.mark.parametrize("name,fmt,mode", [("out.tif", "TIFF", "F"), ("out.tiff", "TIFF", "F"),
                                           ("out.png", "PNG", "L"), ("out.npy", None, None)])
def test_format_follows_the_extension(photo, name, fmt, mode):
    assert invoke("apply", "-k", "box", photo, "-o", name).exit_code == 0
    raw = ops.conv2d(pixels(photo), bank("box", 3))[:, :, 0]
    if fmt is None:
        np.testing.assert_allclose(np.load(name)[:, :, 0], raw, rtol=1e-5)
        return
    image = Image.open(name)
    assert image.format == fmt and image.mode == mode
    if mode == "F":
        np.testing.assert_allclose(np.asarray(image), raw, rtol=1e-5)


def test_png16_output(photo):
    assert invoke("apply", "-k", "sobel-y", photo, "-f", "png16", "-o", "deep.png").exit_code == 0
    image = Image.open("deep.png")
    assert image.mode.startswith("I") and image.size == (31, 23)
    raw = np.asarray(ops.conv2d(pixels(photo), bank("sobel-y", 3))[:, :, 0], np.float64)
    want = np.round((raw - raw.min()) / (raw.max() - raw.min()) * 65535)
    assert np.abs(np.asarray(image, np.float64) - want).max() <= 2


def test_normalize_options(photo):
    raw = npy_of("apply", "-k", "sobel-x", photo)[:, :, 0].astype(np.float64)
    invoke("apply", "-k", "sobel-x", photo, "--normalize", "abs", "-o", "abs.png")
    invoke("apply", "-k", "box", photo, "--normalize", "clip", "-o", "clip.png")
    magnitude = np.round(np.abs(raw) / np.abs(raw).max() * 255)  # |x| / max|x|
    assert np.abs(np.asarray(Image.open("abs.png"), np.float64) - magnitude).max() <= 1
    blurred = ops.conv2d(pixels(photo), bank("box", 3))[:, :, 0].astype(np.float64)
    assert np.abs(np.asarray(Image.open("clip.png"), np.float64) - np.round(np.clip(blurred, 0, 1) * 255)).max() <= 1


# --- options change the numbers exactly as ops would ----------------------------------------------


def test_bias_follows_its_map_when_kernels_of_several_sizes_share_passes(photo):
    """Kernels of one size run as one conv2d with the bias and ReLU fused: each map must still get
    its own bias, in the order the kernels were given."""
    image = pixels(photo)
    names = ["sobel-x", "vertical", "sobel-y"]  # 3x3, 7x7, 3x3: the two 3x3 maps share a pass
    plain = [ops.conv2d(image, bank(name, 3))[:, :, 0] for name in names]
    bias = np.float32([0.5, -30.0, 2.0])
    got = npy_of("apply", *[a for n in names for a in ("-k", n)], photo, "--bias", "0.5,-30,2", "-a", "relu")
    want = np.maximum(np.stack(plain, axis=2) + bias, 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert (got == 0).any() and (got > 0).any()
    # --channels each: one map per input channel for each kernel, the bias per kernel map
    each = npy_of("apply", "-k", "sobel-x", "-k", "box", photo, "--channels", "each", "--bias", "-1,3")
    planes = image.transpose(2, 0, 1)[:, :, :, None]
    want_each = np.concatenate([ops.conv2d(planes, bank(name, 1))[..., 0].transpose(1, 2, 0) + b
                                for name, b in (("sobel-x", -1.0), ("box", 3.0))], axis=2)
    np.testing.assert_allclose(each, want_each, rtol=1e-5, atol=1e-5)


def test_stride_padding_dilation(photo):
    image = pixels(photo)
    got = npy_of("apply", "-k", "vertical:5", photo, "-s", "2,3", "-p", "valid", "-d", "1,2")
    want = ops.conv2d(image, bank("vertical:5", 3), (2, 3), "VALID", (1, 2))
    assert got.shape == want.shape == (10, 8, 1)  # (23 - 5)//2 + 1 rows; (31 - ((5-1)*2+1))//3 + 1 columns
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    got = npy_of("apply", "-k", "sobel-x", photo, "--stride", "3", "--padding", "SAME", "--dilation", "2")
    np.testing.assert_allclose(got, ops.conv2d(image, bank("sobel-x", 3), 3, "SAME", 2), rtol=1e-5, atol=1e-6)


def test_bias_and_activation(photo):
    image = pixels(photo)
    sobel = ops.conv2d(image, np.concatenate([bank("sobel-x", 3), bank("sobel-y", 3)], axis=3))
    got = npy_of("apply", "-k", "sobel-x", "-k", "sobel-y", photo, "--bias", "0.5,-1", "-a", "relu")
    np.testing.assert_allclose(got, np.maximum(sobel + np.float32([0.5, -1]), 0), rtol=1e-5, atol=1e-6)
    assert (got == 0).any() and (got > 0).any()
    got = npy_of("apply", "-k", "sobel-x", photo, "--bias", "-0.25", "--activation", "tanh")
    np.testing.assert_allclose(got, np.tanh(sobel[:, :, :1] - 0.25), rtol=1e-5, atol=1e-6)
    result = invoke("apply", "-k", "sobel-x", photo, "--bias", "1,2,3")
    assert result.exit_code == 2 and "Error: --bias has 3 values but there is 1 feature map; give one value" in result.stderr


def test_pool_after_convolution(photo):
    conv = ops.relu(ops.conv2d(pixels(photo), bank("laplacian", 3)))
    got = npy_of("apply", "-k", "laplacian", photo, "-a", "relu", "--pool", "max")
    np.testing.assert_allclose(got, ops.max_pool2d(conv, 2), rtol=1e-6)
    assert got.shape == (11, 15, 1)
    got = npy_of("apply", "-k", "laplacian", photo, "-a", "relu", "--pool", "avg", "--pool-size", "3,2",
                 "--pool-stride", "2", "--pool-padding", "same")
    np.testing.assert_allclose(got, ops.avg_pool2d(conv, (3, 2), 2, "SAME"), rtol=1e-6)


def test_channels_each_gives_colour(photo):
    image = pixels(photo)
    invoke("apply", "-k", "gaussian:5:1", "--channels", "each", photo, "-o", "blur.png", "--normalize", "clip")
    blurred = Image.open("blur.png")
    assert blurred.mode == "RGB" and blurred.size == (31, 23)
    per_channel = np.concatenate(
        [ops.conv2d(image[:, :, c : c + 1], bank("gaussian:5:1", 1)) for c in range(3)], axis=2
    )
    got = npy_of("apply", "-k", "gaussian:5:1", "--channels", "each", photo)
    np.testing.assert_allclose(got, per_channel, rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(blurred, np.float64) - np.round(np.clip(per_channel, 0, 1) * 255)).max() <= 1


def test_channels_gray_converts_to_luminance_first(photo):
    luma = pixels(photo) @ np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, as Pillow's "L"
    got = npy_of("apply", "-k", "sobel-x", "--channels", "gray", photo)
    np.testing.assert_allclose(got[:, :, 0], ops.conv2d(luma[:, :, None], bank("sobel-x", 1))[:, :, 0],
                               rtol=1e-4, atol=1e-5)


def test_filter_bank_file_gives_one_map_per_output(photo, cwd):
    weights = np.random.default_rng(3).standard_normal((3, 3, 3, 4)).astype(np.float32)
    np.save(cwd / "keras.npy", weights)
    got = npy_of("apply", "-k", "keras.npy", photo)
    expected = naive.conv2d(pixels(photo)[None], weights)[0]  # independent of ops
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    result = invoke("apply", "-k", "keras.npy", photo, "-o", "maps")
    assert result.exit_code == 0
    assert sorted(os.listdir(cwd / "maps")) == [f"photo_keras-{k}.png" for k in range(4)]


def test_repeated_labels_do_not_overwrite_each_other(photo, cwd):
    result = invoke("apply", "-k", "1,0,-1", "-k", "-1,0,1", photo)
    assert result.exit_code == 0
    first, second = Image.open("photo_custom.png"), Image.open("photo_custom-2.png")
    assert not np.array_equal(np.asarray(first), np.asarray(second))  # mirror images of each other


# --- stdin and pipelines ------------------------------------------------------------------------------


def test_stdin_image(photo):
    result = invoke("apply", "-k", "box", "-", "-f", "npy", "-o", "-", input=photo.read_bytes())
    assert result.exit_code == 0
    np.testing.assert_array_equal(np.load(stdio.BytesIO(result.stdout_bytes)), npy_of("apply", "-k", "box", photo))
    result = invoke("apply", "-k", "box", "-", input=photo.read_bytes())
    assert result.exit_code == 0 and os.path.isfile("stdin_box.png")


def test_real_pipe_equals_one_process(photo, cwd, cli_env):
    apply = subprocess.Popen([sys.executable, "-m", "convfilter", "apply", "-k", "vertical", str(photo), "-f", "npy",
                              "-o", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=cli_env)
    pool = subprocess.run([sys.executable, "-m", "convfilter", "pool", "-", "-o", "piped.png"], stdin=apply.stdout,
                          capture_output=True, cwd=cwd, timeout=300, env=cli_env)
    apply.stdout.close()
    assert apply.wait(timeout=300) == 0 and pool.returncode == 0, pool.stderr
    assert b"wrote piped.png" in pool.stderr
    assert invoke("apply", "-k", "vertical", "--pool", "max", photo, "-o", "direct.png").exit_code == 0
    piped, direct = np.asarray(Image.open("piped.png")), np.asarray(Image.open("direct.png"))
    np.testing.assert_array_equal(piped, direct)
    pooled = ops.max_pool2d(ops.conv2d(pixels(photo), bank("vertical", 3)), 2)[:, :, 0]
    assert np.abs(piped.astype(np.float64) - minmax_8bit(pooled)).max() <= 1


# --- pool --------------------------------------------------------------------------------------------


def test_pool_command(photo):
    image = pixels(photo)
    got = npy_of("pool", photo)
    np.testing.assert_allclose(got, ops.max_pool2d(image, 2), rtol=1e-6)
    got = npy_of("pool", "--type", "avg", "--size", "3", "--stride", "2", "--padding", "same", photo)
    np.testing.assert_allclose(got, ops.avg_pool2d(image, 3, 2, "SAME"), rtol=1e-6)
    assert got.shape == (12, 16, 3)
    result = invoke("pool", "-t", "max", "--size", "2,3", photo, "-o", "small.png")
    assert result.exit_code == 0 and Image.open("small.png").size == (10, 11)


def test_pool_global_avg_prints_values(photo):
    result = invoke("pool", "--type", "global-avg", photo)
    assert result.exit_code == 0
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [r[:3] for r in rows] == [[str(photo), "global-avg-pool", str(c)] for c in range(3)]
    means = pixels(photo).mean(axis=(0, 1))  # float64
    np.testing.assert_allclose([float(r[3]) for r in rows], means, rtol=1e-6)
    result = invoke("pool", "--type", "global-max", photo)
    np.testing.assert_allclose([float(line.split("\t")[3]) for line in result.stdout.splitlines()],
                               pixels(photo).max(axis=(0, 1)), rtol=1e-6)


def test_apply_with_a_global_pool_prints_one_value_per_map(photo):
    result = invoke("apply", "-k", "box", "-k", "sobel-x", "--pool", "global-avg", photo)
    assert result.exit_code == 0
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [r[:3] for r in rows] == [[str(photo), "box", "0"], [str(photo), "sobel-x", "0"]]
    maps = ops.conv2d(pixels(photo), np.concatenate([bank("box", 3), bank("sobel-x", 3)], axis=3))
    np.testing.assert_allclose([float(r[3]) for r in rows], maps.astype(np.float64).mean(axis=(0, 1)),
                               rtol=1e-6, atol=1e-7)
    result = invoke("apply", "-k", "box", "--pool", "global-avg", photo, "-o", "means.png")
    assert result.exit_code == 2 and "stdout" in result.stderr


# --- kernels, shape, help, version ------------------------------------------------------------------


def test_kernels_lists_every_name_and_prints_a_matrix():
    result = invoke("kernels")
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.stdout.splitlines()] == list(REGISTRY)
    result = invoke("kernels", "sobel-x")
    assert result.exit_code == 0
    rows = [line.split() for line in result.stdout.splitlines() if not line.startswith("#")]
    np.testing.assert_array_equal(np.array(rows, float), [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    rows = [line.split() for line in invoke("kernels", "box:4").stdout.splitlines() if not line.startswith("#")]
    np.testing.assert_allclose(np.array(rows, float), np.full((4, 4), 1 / 16))
    result = invoke("kernels", "vertcal")
    assert result.exit_code == 2 and "did you mean 'vertical'" in result.stderr


@pytest.mark.parametrize(
    "options,window,strides,padding,dilations",
    [(["-k", "vertical"], 7, 1, "SAME", 1), (["-k", "vertical:5", "-s", "2", "-p", "valid"], 5, 2, "VALID", 1),
     (["-k", "sobel-x", "-s", "2,3", "-d", "3,2"], 3, (2, 3), "SAME", (3, 2)),
     (["-k", "box:4", "-p", "valid", "-d", "2"], 4, 1, "VALID", 2)],
)
def test_shape_numbers_equal_the_geometry(options, window, strides, padding, dilations):
    result = invoke("shape", "--size", "427x640x3", *options, "--pool", "max")
    assert result.exit_code == 0
    conv_size = output_size((427, 640), window, strides, padding, dilations)
    pool_size = output_size(conv_size, 2, 2, "VALID")
    dims = re.findall(r"\b\d+x\d+x\d+\b", result.stdout)
    assert dims == ["427x640x3", f"{conv_size[0]}x{conv_size[1]}x1", f"{pool_size[0]}x{pool_size[1]}x1"]


def test_shape_of_an_image_matches_apply(photo):
    result = invoke("shape", photo, "-k", "vertical:5", "-s", "2,3", "-p", "valid")
    assert result.exit_code == 0
    got = npy_of("apply", "-k", "vertical:5", "-s", "2,3", "-p", "valid", photo)
    assert re.findall(r"\b\d+x\d+x\d+\b", result.stdout)[1] == f"{got.shape[0]}x{got.shape[1]}x1"


@pytest.mark.parametrize("path", cli_reference.command_paths(), ids=lambda path: " ".join(path) or "convfilter")
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_everywhere_with_an_example(path, flag):
    """Every command and group, found by walking the CLI (a new command is covered without listing it)."""
    result = invoke(*path, flag)
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: ")
    assert "Examples:" in result.stdout
    assert " ".join(("convfilter", *path)) in result.stdout.split("Examples:")[1]


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


# --- failures and exit codes (real processes: main() maps the codes) ---------------------------------


def test_unknown_kernel_is_a_usage_error(tmp_path, cli_env):
    result = run("apply", "-k", "vertcal", CHINA, cwd=tmp_path, env=cli_env)
    assert result.returncode == 2
    assert "did you mean 'vertical'" in result.stderr.decode()
    assert b"Traceback" not in result.stderr and os.listdir(tmp_path) == []


def test_missing_kernel_option_and_bad_values(photo):
    assert invoke("apply", photo).exit_code == 2
    for option in (["-s", "0"], ["-s", "a"], ["-d", "1,0"], ["-p", "full"], ["--pool", "median"],
                   ["--channels", "rgb"], ["-a", "softmax"], ["--bias", "x"]):
        result = invoke("apply", "-k", "box", photo, *option)
        assert result.exit_code == 2, option
        assert "Error:" in result.stderr and "Traceback" not in result.stderr


def test_missing_file_is_one_error_line(tmp_path, cli_env):
    result = run("apply", "-k", "vertical", "missing.png", cwd=tmp_path, env=cli_env)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == ["Error: missing.png: no such file"]
    assert result.stdout == b"" and os.listdir(tmp_path) == []


def test_a_broken_input_among_good_ones(photo, cwd, cli_env):
    (cwd / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (cwd / "notes.txt").write_text("hello")
    result = run("apply", "-k", "box", photo, "broken.png", "notes.txt", CHINA, cwd=cwd, env=cli_env)
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    # several inputs are a batch: errors (and the few files written) arrive as the workers finish, then
    # the summary
    *messages, summary = lines
    errors = [line for line in messages if not line.startswith("wrote ")]
    assert sorted(set(messages) - set(errors)) == ["wrote china_box.png", "wrote photo_box.png"], lines
    assert sorted(line.split(": ")[1] for line in errors) == ["broken.png", "notes.txt"], lines
    assert all(line.startswith("Error: ") for line in errors)
    assert summary == "processed 2, failed 2, skipped 0"
    assert "Traceback" not in result.stderr.decode()
    assert {"photo_box.png", "china_box.png"} <= set(os.listdir(cwd))
    assert not any(name.startswith(("broken_", "notes_", ".")) for name in os.listdir(cwd))


def test_outputs_never_overwrite_an_input(photo, cwd):
    original = photo.read_bytes()
    result = invoke("apply", "-k", "box", photo, "-o", str(photo))
    assert result.exit_code == 1 and "would overwrite an input" in result.stderr
    result = invoke("pool", photo, "-o", "photo.png")
    assert result.exit_code == 1
    # the default name of one input's map is another input of the same run
    second = cwd / "photo_box.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(second)
    second_bytes = second.read_bytes()
    result = invoke("apply", "-k", "box", photo, second)
    assert result.exit_code == 1 and "photo_box.png" in result.stderr
    assert photo.read_bytes() == original and second.read_bytes() == second_bytes


def test_no_temporary_files_are_left(photo, cwd):
    invoke("apply", "-k", "box", "-k", "sobel-x", photo, "-o", "out")
    invoke("apply", "-k", "box", photo, "-o", "single.png")
    leftovers = [name for root, _, files in os.walk(cwd) for name in files if name.startswith(".")]
    assert leftovers == []


# --- start-up: help, kernels and shape never import numpy or Numba ------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["apply", "--help"], ["kernels"], ["kernels", "gaussian:9:2"],
                                  ["shape", "--size", "427x640", "-k", "vertical", "--pool", "max"], ["server", "--help"]])
def test_light_commands_do_not_import_numpy_or_numba(argv, tmp_path):
    code = (
        "import sys\n"
        "import convfilter.cli\n"
        f"sys.argv = ['convfilter', *{argv!r}]\n"
        "try:\n"
        "    convfilter.cli.main()\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "heavy = sorted(m for m in ('numpy', 'numba', 'PIL') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=tmp_path, timeout=120, env=ENV)
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode().splitlines()[-1] == "HEAVY []"


def test_output_with_an_extension_convfilter_cannot_write_is_a_usage_error(photo, tmp_path):
    result = invoke("apply", "-k", "vertical", photo, "-o", str(tmp_path / "result.jpg"))
    assert result.exit_code == 2 and "not '.jpg'" in result.stderr
    assert not (tmp_path / "result.jpg").exists()


def test_empty_input_file_is_named_as_empty(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    result = invoke("apply", "-k", "vertical", str(empty), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1 and f"Error: {empty}: empty file" in result.stderr


def test_skip_existing_and_npy_names_follow_the_numbered_labels(photo, cwd):
    # two matrix kernels are both "custom": the second map is custom-2, and the planner must agree
    args = ("apply", "-k", "1,0,-1", "-k", "-1,0,1", photo, "-o", "maps")
    assert invoke(*args).exit_code == 0
    (cwd / "maps" / "photo_custom-2.png").unlink()
    result = invoke(*args, "--skip-existing", "-v")
    assert result.exit_code == 0, result.stderr
    assert sorted(os.listdir(cwd / "maps")) == ["photo_custom-2.png", "photo_custom.png"]
    assert invoke("apply", "-k", "1,0,-1", "-k", "-1,0,1", "-f", "npy", photo, "-o", "arrays").exit_code == 0
    assert os.listdir(cwd / "arrays") == ["photo_custom+custom-2.npy"]
    again = invoke("apply", "-k", "1,0,-1", "-k", "-1,0,1", "-f", "npy", photo, "-o", "arrays",
                   "--skip-existing", "-v")
    assert again.exit_code == 0 and "skipped" in again.stderr and "wrote" not in again.stderr


def test_format_that_contradicts_the_output_extension_is_a_usage_error(photo, cwd):
    result = invoke("apply", "-k", "vertical", photo, "-o", "x.tif", "-f", "png")
    assert result.exit_code == 2 and "contradicts" in result.stderr
    assert not (cwd / "x.tif").exists()
    assert invoke("apply", "-k", "vertical", photo, "-o", "x.png", "-f", "png16").exit_code == 0


@pytest.mark.parametrize("template", ["{stem!r}.png", "{stem:>20}_{kernel}.{ext}", "{kernel!s}.{ext}"])
def test_name_fields_other_than_index_take_no_conversion_or_format(photo, cwd, template):
    result = invoke("apply", "-k", "vertical", photo, "-o", "out", "--name", template)
    assert result.exit_code == 2 and "plainly" in result.stderr
    assert invoke("apply", "-k", "vertical", photo, "-o", "out", "--name", "{index:03d}_{stem}.{ext}").exit_code == 0
    assert os.listdir(cwd / "out") == ["000_photo.png"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_stdout_that_cannot_be_written_is_one_error_line(tmp_path, cli_env):
    with open("/dev/full", "wb") as full:
        done = subprocess.run([sys.executable, "-m", "convfilter", "apply", "-k", "vertical", "-f", "npy",
                               "-o", "-", str(CHINA)], stdout=full, stderr=subprocess.PIPE, cwd=tmp_path,
                              timeout=120, env=cli_env)
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == ["Error: stdout: no space left on device"]


def test_stdout_closed_early_by_the_reader_is_not_a_success(tmp_path, cli_env):
    pipeline = subprocess.Popen([sys.executable, "-m", "convfilter", "apply", "-k", "vertical", "-f", "npy",
                                 "-o", "-", str(CHINA)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=tmp_path, env=cli_env)
    pipeline.stdout.read(10)
    pipeline.stdout.close()  # like '| head -c 10'
    _, err = pipeline.communicate(timeout=120)
    assert pipeline.returncode == 1, err
    assert b"Traceback" not in err and b"wrote stdout" not in err


def test_shape_names_the_image_when_a_window_does_not_fit(cwd):
    Image.new("L", (1, 1)).save(cwd / "one.png")
    result = invoke("shape", "one.png", "-k", "vertical", "--pool", "max")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: one.png: ") and "larger than" in result.stderr
    applied = invoke("apply", "-k", "vertical", "--pool", "max", "one.png")
    assert applied.exit_code == 1 and "Error: one.png: " in applied.stderr  # apply agrees


@pytest.mark.parametrize("args", [
    ("apply", "-k", "vertical", "--pool-size", "3"),
    ("apply", "-k", "vertical", "--pool", "global-avg", "--pool-stride", "2"),
    ("pool", "--type", "global-max", "--size", "5"),
    ("apply", "-k", "vertical", "-f", "npy", "--normalize", "clip"),
    ("apply", "-k", "vertical", "-o", "raw.tif", "--normalize", "abs"),
])
def test_options_that_would_do_nothing_are_usage_errors(photo, cwd, args):
    result = invoke(*args, photo)
    assert result.exit_code == 2 and "Error: " in result.stderr
    assert [p for p in os.listdir(cwd) if p != "photo.png"] == []
