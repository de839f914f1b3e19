"""``convfilter model summary|apply|predict`` as a user runs them: real model files, real images,
outputs read back. The models are the Keras fixtures of test_model.py (TensorFlow's outputs
beside them), so the numbers a command prints are checked against TensorFlow too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("h5py")

from convfilter.cli import cli  # noqa: E402

MODELS = Path(__file__).parent / "fixtures" / "models"


def run(*args, cwd=None, input=None):
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(cli, [str(a) for a in args], input=input)
    with runner.isolated_filesystem(temp_dir=cwd):
        return runner.invoke(cli, [str(a) for a in args], input=input)


def digits_reference():
    with np.load(MODELS / "digits.npz") as data:
        return data["inputs/0"], {k.split("/", 2)[2]: data[k] for k in data.files if k.startswith("outputs/")}


def write_digits(folder: Path, count: int = 3) -> list[Path]:
    """The first fixture digits as .npy files (exactly what TensorFlow saw) and as 8-bit PNGs."""
    x, _ = digits_reference()
    paths = []
    for i in range(count):
        npy = folder / f"digit{i}.npy"
        np.save(npy, x[i])
        png = folder / f"digit{i}.png"
        Image.fromarray((x[i, :, :, 0] * 255 / 16).round().astype(np.uint8)).save(png)
        paths += [npy, png]
    return paths


# --- summary ---------------------------------------------------------------------------------

def test_summary_lists_layers_shapes_params_and_arithmetic():
    result = run("model", "summary", MODELS / "digits.keras")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Model: digits_cnn, input 8x8x1 (fixed size)"
    conv1 = next(line for line in lines if line.startswith("conv1 "))
    assert conv1.split()[:4] == ["conv1", "Conv2D", "8x8x16", "160"]
    assert "(8 - 3 + 1 + 1) // 1 + 1 = 8" in conv1
    probs = next(line for line in lines if line.startswith("probs "))
    assert probs.split()[:4] == ["probs", "Dense", "10", "1290"]
    assert lines[-1] == "Total parameters: 6,090"  # 160 + 4640 + 1290


def test_summary_with_size_for_a_fully_convolutional_model():
    result = run("model", "summary", MODELS / "mobilenet.h5", "--size", "224x224")
    assert result.exit_code == 0, result.output
    conv1 = next(line for line in result.output.splitlines() if line.startswith("conv1 "))
    assert "112x112x8" in conv1 and "(224 - 3 + 0 + 1) // 2 + 1 = 112" in conv1
    default = run("model", "summary", MODELS / "mobilenet.h5")
    assert "?x?x8" in default.output and "any height and width" in default.output


def test_summary_size_that_does_not_fit_is_a_usage_error():
    result = run("model", "summary", MODELS / "digits.keras", "--size", "9x8")
    assert result.exit_code == 2
    assert "takes 8x8x1 (HxWxC) inputs, not 9x8x1" in result.output


@pytest.mark.parametrize("name, message", [
    ("unsupported.keras", "layer 'upsample' of type UpSampling2D is not supported; supported layers: InputLayer"),
    ("unsupported.weights.h5", "holds weights without a model config"),
    ("absent.keras", "no such file"),
])
def test_bad_model_is_one_error_line_and_exit_2(name, message):
    for command in (["summary", MODELS / name], ["predict", MODELS / name, MODELS / "digits.npz"],
                    ["apply", MODELS / name, MODELS / "digits.npz"]):
        result = run("model", *command)
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and message in errors[0] and name in errors[0]


# --- predict ---------------------------------------------------------------------------------

def test_predict_prints_tensorflow_classes(tmp_path):
    paths = write_digits(tmp_path)
    _, outputs = digits_reference()
    result = run("model", "predict", MODELS / "digits.h5", *paths[::2], "--top", "3")
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.output.splitlines()]
    assert len(rows) == 9
    for i in range(3):
        mine = rows[3 * i: 3 * i + 3]
        want = np.argsort(-outputs["probs"][i])[:3]
        assert [r[0] for r in mine] == [str(paths[2 * i])] * 3
        assert [int(r[1]) for r in mine] == [1, 2, 3]
        assert [int(r[2]) for r in mine] == list(want)
        assert [r[3] for r in mine] == [str(k) for k in want]
        np.testing.assert_allclose([float(r[4]) for r in mine], outputs["probs"][i][want], rtol=1e-4, atol=1e-6)


def test_predict_images_at_the_scale_the_model_was_trained_on(tmp_path):
    """The digits were trained on 0-16 values: a PNG of them at 0-255 needs --scale 16 to match."""
    paths = write_digits(tmp_path, 2)
    _, outputs = digits_reference()
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"digit {k}" for k in range(10)) + "\n")
    result = run("model", "predict", MODELS / "digits.keras", paths[1], paths[3], "--top", "1",
                 "--scale", "16", "--labels", labels)
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.output.splitlines()]
    assert [r[3] for r in rows] == [f"digit {outputs['probs'][i].argmax()}" for i in range(2)]


def test_predict_bad_image_fails_alone(tmp_path):
    paths = write_digits(tmp_path, 1)
    (tmp_path / "big.png").write_bytes((MODELS.parent.parent.parent / "docs" / "images" / "stride_1.png").read_bytes())
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    np.save(tmp_path / "four.npy", np.zeros((8, 8, 4), np.float32))
    result = run("model", "predict", MODELS / "digits.keras", tmp_path / "broken.png", tmp_path / "big.png",
                 tmp_path / "four.npy", paths[0], "--top", "1")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert sum(line.startswith("Error:") for line in lines) == 3
    assert any("the model takes 8x8 inputs, the input is" in line and "--resize" in line for line in lines)
    assert any("four.npy: the model takes 1 channel(s), the input has 4" in line for line in lines)
    assert any(line.startswith(f"{paths[0]}\t1\t") for line in lines)
    resized = run("model", "predict", MODELS / "digits.keras", tmp_path / "big.png", "--resize")
    assert resized.exit_code == 0 and resized.output.count("\t") == 5 * 4


def test_predict_needs_a_vector_output():
    result = run("model", "predict", MODELS / "activations.keras", MODELS / "digits.npz")
    assert result.exit_code == 2
    assert "the model's output is ?x?x4" in result.output or "output is 4x3x4" in result.output


# --- apply -----------------------------------------------------------------------------------

def test_apply_writes_each_conv_and_pool_layer_as_tensorflow_computed_it(tmp_path):
    paths = write_digits(tmp_path, 2)
    _, outputs = digits_reference()
    result = run("model", "apply", MODELS / "digits.keras", paths[0], paths[2], "-f", "npy", "-o", tmp_path / "maps")
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert written == sorted(f"digit{i}_{layer}.npy" for i in range(2) for layer in ("conv1", "pool1", "conv2", "pool2"))
    for i in range(2):
        for layer in ("conv1", "pool1", "conv2", "pool2"):
            got = np.load(tmp_path / "maps" / f"digit{i}_{layer}.npy")
            want = outputs[layer][i]
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())


def test_apply_vectors_and_chosen_layers(tmp_path):
    with np.load(MODELS / "functional.npz") as data:
        x, gap, probs = data["inputs/0"][0], data["outputs/0/gap"][0], data["outputs/0/probs"][0]
    np.save(tmp_path / "in.npy", x)
    result = run("model", "apply", MODELS / "functional.h5", tmp_path / "in.npy", "--layers", "probs,gap",
                 "-f", "npy", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(tmp_path / "out" / "in_gap.npy"), gap, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "in_probs.npy"), probs, atol=1e-6)
    assert np.load(tmp_path / "out" / "in_probs.npy").shape == (4,)
    unknown = run("model", "apply", MODELS / "functional.h5", tmp_path / "in.npy", "--layers", "gap,nope")
    assert unknown.exit_code == 2 and "no layer 'nope' in the model" in unknown.output


def test_apply_png_is_a_grid_of_the_layer_channels(tmp_path):
    paths = write_digits(tmp_path, 1)
    result = run("model", "apply", MODELS / "digits.keras", paths[1], "--scale", "16", "-o", tmp_path / "maps",
                 "--layers", "conv1,probs")
    assert result.exit_code == 0, result.output
    conv1 = Image.open(tmp_path / "maps" / "digit0_conv1.png")
    assert conv1.mode == "RGB" and conv1.width > 4 * 8 and conv1.height > 4 * 8  # 16 tiles of 8x8, 4 a row
    assert Image.open(tmp_path / "maps" / "digit0_probs.png").width >= 10
    one = run("model", "apply", MODELS / "digits.keras", paths[1], "--scale", "16", "-o", tmp_path / "one",
              "--montage", "--with-input", "--layers", "all")
    assert one.exit_code == 0, one.output
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["digit0_digits_montage.png"]


def test_apply_batch_with_a_bad_image_and_resume(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_digits(folder, 2)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    np.save(tmp_path / "wide.npy", np.zeros((8, 9, 1), np.float32))
    report = tmp_path / "report.jsonl"
    # a folder gives its images (the .npy files in it are taken for outputs of an earlier run)
    result = run("model", "apply", MODELS / "digits.keras", folder, tmp_path / "wide.npy", "-o", tmp_path / "maps",
                 "--jobs", "2", "--report", report, "--layers", "pool2")
    assert result.exit_code == 1
    assert "broken.png" in result.output and "wide.npy: the model takes 8x8 inputs, the input is 8x9" in result.output
    names = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert names == ["digit0_pool2.png", "digit1_pool2.png"]
    assert len(report.read_text().splitlines()) == 4
    again = run("model", "apply", MODELS / "digits.keras", folder, "-o", tmp_path / "maps", "--skip-existing",
                "--layers", "pool2")
    assert "skipped" in again.output


def test_apply_takes_the_input_options_of_apply_such_as_accept_truncated(tmp_path):
    digit = write_digits(tmp_path, 1)[1]
    whole = digit.read_bytes()
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(whole[: len(whole) - 30])  # the end of the pixel data and IEND are gone
    refused = run("model", "apply", MODELS / "digits.keras", truncated, "-o", tmp_path / "refused", "--layers", "pool2")
    assert refused.exit_code == 1 and "cut.png" in refused.output
    accepted = run("model", "apply", MODELS / "digits.keras", truncated, "-o", tmp_path / "maps", "--layers", "pool2",
                   "--accept-truncated")
    assert accepted.exit_code == 0, accepted.output
    assert "Warning: " in accepted.output and "truncated" in accepted.output
    assert (tmp_path / "maps" / "cut_pool2.png").exists()
