"""What a new user meets: the rules for -o, names and kernels, and the exact messages and exit codes.

Each test runs the command line on real files under tmp_path (click's CliRunner, or a real
subprocess where a terminal is needed) and pins the whole message, so that a change of wording
is a deliberate one.
"""

import os
import pty
import subprocess
import sys
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import CHECKOUT_ENV, picture
from PIL import Image

from convfilter import conv2d
from convfilter import io as cfio
from convfilter.cli import cli


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """Two small RGB images, a and b, in a working folder of their own."""
    monkeypatch.chdir(tmp_path)
    for seed, name in enumerate(("a", "b")):
        picture(tmp_path / f"{name}.png", seed, size=(12, 16))
    return tmp_path


def usage_error(result, message):
    """One line on stderr, exit code 2, nothing on stdout."""
    assert (result.exit_code, result.stderr, result.stdout) == (2, f"Error: {message}\n", "")


# 1. -o: a rule that does not depend on how many outputs there are


def test_output_without_an_extension_is_a_folder_whatever_the_count(cwd):
    result = invoke("apply", "-k", "vertical", "a.png", "-o", "result")
    assert result.exit_code == 0 and result.stderr == f"wrote {os.path.join('result', 'a_vertical.png')}\n"
    assert os.listdir(cwd / "result") == ["a_vertical.png"]
    result = invoke("apply", "-k", "vertical", "a.png", "-o", "single.png")
    assert result.exit_code == 0 and (cwd / "single.png").is_file()


def test_output_with_an_extension_convfilter_does_not_write_is_a_usage_error(cwd):
    usage_error(invoke("apply", "-k", "vertical", "a.png", "-o", "newname.txt"),
                "-o 'newname.txt': convfilter writes .png, .tif or .npy files; write 'newname.txt/' for a folder")
    assert not (cwd / "newname.txt").exists()
    usage_error(invoke("apply", "-k", "vertical", "a.png", "-o", "out.jpg"),
                "convfilter writes .png, .tif or .npy files, not '.jpg'; change the extension of -o (or end it "
                "with '/' for a folder)")
    assert invoke("apply", "-k", "vertical", "a.png", "-o", "newname.txt/").exit_code == 0
    assert os.listdir(cwd / "newname.txt") == ["a_vertical.png"]


# 2. an existing file as -o for several inputs: one line, exit 2, nothing read


def test_an_existing_file_is_not_a_folder(cwd):
    (cwd / "afile").write_text("keep me")
    # 'missing.png' would fail if anything were read; stdin would be read for '-'
    result = invoke("apply", "-k", "vertical", "a.png", "b.png", "missing.png", "-", "-o", "afile", input="x")
    usage_error(result, "-o 'afile' is an existing file, not a folder; give a folder (e.g. -o maps/) or a file "
                        "name ending in .png, .tif or .npy")
    assert (cwd / "afile").read_text() == "keep me"
    assert sorted(os.listdir(cwd)) == ["a.png", "afile", "b.png"]


# 3. several outputs for stdout or one file: say what works


def test_several_inputs_for_stdout_say_what_works(cwd):
    usage_error(invoke("apply", "-k", "vertical", "a.png", "b.png", "-f", "npy", "-o", "-"),
                "-o - writes one input's data to stdout, and 2 inputs were given; give -o a folder (e.g. -o "
                "maps/), or run one command per input")


def test_several_maps_for_stdout_or_one_file_say_what_works(cwd):
    usage_error(invoke("apply", "-k", "vertical", "-k", "sobel-x", "a.png", "-o", "-"),
                "2 maps cannot all go to stdout as png; give -o a folder (e.g. -o maps/), -f npy (all maps in "
                "one array) or --montage (one picture)")
    usage_error(invoke("apply", "-k", "vertical", "-k", "sobel-x", "a.png", "-o", "x.tif"),
                "2 maps cannot all go to the file 'x.tif'; give -o a folder (e.g. -o maps/) or a .npy name "
                "(all maps in one array)")
    usage_error(invoke("apply", "-k", "vertical", "a.png", "b.png", "-o", "x.png"),
                "2 inputs cannot all go to the file 'x.png'; give -o a folder (e.g. -o maps/)")
    assert invoke("apply", "-k", "vertical", "-k", "sobel-x", "a.png", "-f", "npy", "-o", "-").exit_code == 0


# 4. messages name only the options that were given


@pytest.mark.parametrize("options,message", [
    (["-k", "vertical", "--bias", "1,2"], "--bias has 2 values but there is 1 feature map; give one value"),
    (["-k", "vertical", "-k", "sobel-x", "-k", "box", "--bias", "1,2"],
     "--bias has 2 values but there are 3 feature maps; give 1 value or 3"),
])
def test_bias_counts_are_checked_before_any_input(cwd, options, message):
    result = invoke("apply", *options, "missing.png")
    assert result.exit_code == 2 and result.stderr.endswith(f"Error: {message}\n"), result.stderr


@pytest.mark.parametrize("options,message", [
    (["--columns", "3"], "--columns shapes a montage; add --montage"),
    (["--with-input"], "--with-input shapes a montage; add --montage"),
    (["--with-input", "--columns", "3"], "--with-input and --columns shape a montage; add --montage"),
])
def test_montage_options_without_montage_name_what_was_given(cwd, options, message):
    result = invoke("apply", "-k", "vertical", *options, "a.png")
    assert result.exit_code == 2 and result.stderr.endswith(f"Error: {message}\n"), result.stderr


@pytest.mark.parametrize("options,message", [
    (["--montage", "-f", "npy"], "--montage draws 8-bit PNGs; it does not apply to -f npy"),
    (["--colormap", "viridis", "-f", "tiff"], "--colormap draws 8-bit PNGs; it does not apply to -f tiff"),
    (["--montage", "--colormap", "diverging", "-o", "m.npy"],
     "--montage and --colormap draw 8-bit PNGs; they do not apply to -o 'm.npy' (npy)"),
])
def test_drawing_options_with_raw_formats_name_what_was_given(cwd, options, message):
    usage_error(invoke("apply", "-k", "vertical", "a.png", *options), message)


# 5. outputs are named after what they show, so runs showing different things never collide


def test_montages_of_different_runs_have_different_names(cwd):
    assert invoke("apply", "-k", "vertical", "-k", "horizontal", "a.png", "--montage").exit_code == 0
    assert invoke("apply", "-k", "sobel-x", "a.png", "--montage").exit_code == 0
    assert invoke("pool", "a.png", "--montage").exit_code == 0
    assert invoke("pool", "a.png").exit_code == 0
    assert invoke("apply", "-k", "vertical", "-k", "horizontal", "a.png", "-f", "npy").exit_code == 0
    assert sorted(os.listdir(cwd)) == ["a.png", "a_max-pool.png", "a_max-pool_montage.png", "a_sobel-x_montage.png",
                                       "a_vertical+horizontal.npy", "a_vertical+horizontal_montage.png", "b.png"]


def test_a_bank_counts_once_in_the_name_of_its_stack(cwd):
    np.save(cwd / "keras.npy", np.ones((3, 3, 3, 40), np.float32))
    assert invoke("apply", "-k", "keras.npy", "-k", "box", "a.png", "-f", "npy", "-o", "out/").exit_code == 0
    assert os.listdir(cwd / "out") == ["a_keras+box.npy"]
    assert np.load(cwd / "out" / "a_keras+box.npy").shape == (12, 16, 41)


# 6. a bank for one input channel on an RGB image: the CLI and the library follow TensorFlow's rule


def test_a_bank_for_one_channel_is_not_copied_across_rgb(cwd):
    np.save(cwd / "gray_bank.npy", np.ones((3, 3, 1, 8), np.float32))
    result = invoke("apply", "-k", "gray_bank.npy", "a.png")
    assert result.exit_code == 1
    assert result.stderr == ("Error: a.png: kernel 'gray_bank.npy' is a bank for 1 input channel but the image has 3; "
                             "use --channels gray (luminance first) or --channels each (every channel filtered "
                             "alone)\n")
    with pytest.raises(ValueError, match=r"^filters expect 1 input channel but the input has 3; use filters of "
                                         r"shape \(3, 3, 3, 8\)$"):
        conv2d(np.zeros((12, 16, 3)), np.ones((3, 3, 1, 8)))
    result = invoke("apply", "-k", "gray_bank.npy", "--channels", "gray", "a.png", "-o", "maps/")
    assert result.exit_code == 0 and len(os.listdir(cwd / "maps")) == 8


def test_a_bank_for_three_channels_under_channels_gray_says_what_fits(cwd):
    np.save(cwd / "rgb_bank.npy", np.ones((3, 3, 3, 2), np.float32))
    result = invoke("apply", "-k", "rgb_bank.npy", "--channels", "gray", "a.png")
    assert result.exit_code == 1
    assert result.stderr == ("Error: a.png: kernel 'rgb_bank.npy' is a bank for 3 input channels but --channels "
                             "gray gives it 1 (luminance); drop --channels gray for an image with 3 channels, or "
                             "use a bank for 1\n")


# 7. one size rule for every kernel: odd or even, as TensorFlow takes both


def test_even_sizes_work_for_every_kernel_and_identity_stays_the_identity(cwd):
    for spec in ("vertical:4", "horizontal:2", "identity:4", "box:4", "diagonal:4", "1,2;3,4"):
        assert invoke("apply", "-k", spec, "a.png", "-f", "npy", "-o", "even/").exit_code == 0, spec
    image = np.asarray(Image.open(cwd / "a.png"), np.float32) / 255
    same = np.load(cwd / "even" / "a_identity-4.npy")
    np.testing.assert_allclose(same[:, :, 0], image.sum(axis=2), rtol=1e-6)  # channels summed, not shifted
    line = np.load(cwd / "even" / "a_vertical-4.npy")[:, :, 0]
    padded = np.pad(image.sum(axis=2), ((1, 2), (0, 0)))  # SAME: 1 row above, the odd one below
    np.testing.assert_allclose(line, sum(padded[u : u + 12] for u in range(4)), rtol=1e-5)


# 8. shape: several kernels are one layer


def test_shape_shows_kernels_of_two_sizes_as_one_layer():
    result = invoke("shape", "--size", "427x640x3", "-k", "vertical", "-k", "sobel-x", "--pool", "max")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[3:] == [
        "stage                        HxWxC      axis  arithmetic                        padding",
        "input                        427x640x3",
        "conv layer, 2 maps           427x640x2",
        "  7x7 SAME stride 1                     H     (427 - 7 + 3 + 3) // 1 + 1 = 427  3 top, 3 bottom",
        "    vertical                            W     (640 - 7 + 3 + 3) // 1 + 1 = 640  3 left, 3 right",
        "  3x3 SAME stride 1                     H     (427 - 3 + 1 + 1) // 1 + 1 = 427  1 top, 1 bottom",
        "    sobel-x                             W     (640 - 3 + 1 + 1) // 1 + 1 = 640  1 left, 1 right",
        "max pool 2x2 VALID stride 2  213x320x2  H     (427 - 2 + 0 + 0) // 2 + 1 = 213  none",
        "                                        W     (640 - 2 + 0 + 0) // 2 + 1 = 320  none",
    ]


def test_shape_of_one_layer_whose_maps_differ_in_size_pools_each_size():
    result = invoke("shape", "--size", "20x30x1", "-k", "vertical", "-k", "sobel-x", "-p", "valid", "--pool", "max")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()[5:]
    assert lines[0].split() == ["conv", "layer,", "2", "maps", "maps", "of", "different", "sizes"]
    assert [line.split()[0] for line in lines[1:]] == ["7x7", "vertical", "3x3", "sobel-x", "max", "after", "max",
                                                       "after"]


# 9. binary data is not written to a terminal


def test_binary_stdout_to_a_terminal_is_refused(cwd):
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "convfilter", "apply", "-k", "vertical", "a.png", "-o", "-"],
                              stdout=follower, stderr=subprocess.PIPE, text=True, cwd=cwd, env=CHECKOUT_ENV,
                              timeout=300)
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 2
    assert done.stderr == ("Error: -o - writes binary png data, and stdout is a terminal; redirect it "
                                    "(> out.png), pipe it (| convfilter pool - ...), or give -o a file name\n")


# 10. global pools: the help and the output agree, and the label is spelled as the option


def test_pool_help_and_global_output_agree(cwd):
    help_text = " ".join(invoke("pool", "--help").stdout.split()).replace("- ", "-")  # unwrapped
    assert "tab-separated: input, map (global-max-pool or global-avg-pool), channel, value" in help_text
    result = invoke("pool", "--type", "global-avg", "a.png")
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [row[:3] for row in rows] == [["a.png", "global-avg-pool", str(c)] for c in range(3)]


# 11. labels keep what the user wrote, built-in names are normalised


def test_labels_keep_file_names_and_normalise_builtin_names(cwd):
    np.save(cwd / "bank_bad.npy", np.ones((3, 3, 3, 1), np.float32))
    assert invoke("apply", "-k", "Vertical", "-k", "Gaussian:5:1", "-k", "bank_bad.npy", "a.png").exit_code == 0
    assert sorted(os.listdir(cwd)) == ["a.png", "a_bank_bad.png", "a_gaussian-5-1.png", "a_vertical.png", "b.png",
                                       "bank_bad.npy"]


# 12. a batch names what it wrote, up to a handful of files


def test_a_batch_names_a_handful_of_files(cwd):
    result = invoke("apply", "-k", "vertical", "a.png", "b.png", "-o", "maps/", "-j", "1")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [f"wrote {os.path.join('maps', 'a_vertical.png')}",
                                          f"wrote {os.path.join('maps', 'b_vertical.png')}",
                                          "processed 2, failed 0, skipped 0"]
    kernels = [part for k in ("vertical", "horizontal", "sobel-x", "sobel-y", "box") for part in ("-k", k)]
    result = invoke("apply", *kernels, "a.png", "b.png", "-o", "many/", "-j", "1")  # 10 files: too many to list
    assert result.exit_code == 0 and result.stderr.splitlines() == ["processed 2, failed 0, skipped 0"]
    assert len(os.listdir(cwd / "many")) == 10


# 13. the memory error names the dilation; shapes in the other layout get a hint


def test_memory_error_names_the_dilation(cwd, monkeypatch):
    monkeypatch.setattr(cfio, "available_memory", lambda: 8 * 10**9)
    result = invoke("apply", "-k", "vertical", "-d", "100000", "a.png")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: a.png: not enough memory: a 16x12 image with 3 channel(s) needs about 1440.1 GB through these options, "
        "8.0 GB are available; 1440.1 GB of it is the padding around the image for the 7x7 kernel "
        "'vertical' spread to 600001x600001 pixels by --dilation 100000; a smaller --dilation needs less\n")


def test_channels_first_inputs_and_out_first_filters_get_a_hint():
    with pytest.raises(ValueError) as info:
        conv2d(np.zeros((1, 3, 30, 40)), np.ones((3, 3, 3, 1)))
    assert str(info.value) == (
        "filters expect 3 input channels but the input has 40; the input (1, 3, 30, 40) looks channels-first "
        "(N, C, H, W); inputs here are (N, H, W, C), as TensorFlow's: np.transpose(input, (0, 2, 3, 1)) converts it")
    with pytest.raises(ValueError) as info, warnings.catch_warnings():
        warnings.simplefilter("error")  # the error says it; no warning on top
        conv2d(np.zeros((1, 30, 40, 3)), np.ones((8, 3, 5, 5)))
    assert str(info.value) == (
        "filters expect 5 input channels but the input has 3; filters (8, 3, 5, 5): the shape looks like PyTorch's "
        "(out, in, kh, kw); filters here are (fh, fw, in, out), as TensorFlow's: np.transpose(filters, (2, 3, 1, 0)) "
        "converts them")
    # (8, 3, 3, 3) fits an RGB input either way: it runs, with a warning
    with pytest.warns(UserWarning, match=r"^filters of shape \(8, 3, 3, 3\) are read as \(fh, fw, in, out\), 3 maps "
                                         r"of 8x3 kernels; if they are PyTorch's"):
        assert conv2d(np.zeros((30, 40, 3)), np.ones((8, 3, 3, 3))).shape == (30, 40, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a square TensorFlow bank is not questioned
        conv2d(np.zeros((30, 40, 3)), np.ones((3, 3, 3, 3)))
        conv2d(np.zeros((30, 40, 3)), np.ones((3, 3, 3, 1)))


def test_an_out_first_kernel_file_is_pointed_out_once(cwd):
    np.save(cwd / "torch.npy", np.ones((8, 3, 3, 3), np.float32))
    result = invoke("apply", "-k", "torch.npy", "a.png", "-o", "maps/")
    assert result.exit_code == 0
    assert result.stderr.splitlines()[0] == (
        "Warning: kernel 'torch.npy' (8, 3, 3, 3) is read as (fh, fw, in, out), 3 maps of 8x3 kernels; if it is "
        "PyTorch's (out, in, kh, kw), save np.transpose(weights, (2, 3, 1, 0)) instead")
    assert not any("UserWarning" in line for line in result.stderr.splitlines())
