"""Keras models run by convfilter against TensorFlow's own outputs.

The fixtures in ``tests/fixtures/models/`` are real Keras files and TensorFlow's output of
every layer for fixed inputs, written by ``tests/fixtures/make_models.py`` (which needs
TensorFlow; these tests do not). ``depthwise_conv2d`` is checked against the plain loops in
``tests/naive.py``.
"""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

import naive  # noqa: E402
from convfilter import load_model, ops  # noqa: E402
from convfilter.model import ModelError, SUPPORTED_LAYERS  # noqa: E402

MODELS = Path(__file__).parent / "fixtures" / "models"
NAMES = ["sequential", "functional", "mobilenet", "activations", "digits"]
FORMATS = ["keras", "h5"]
TOLERANCE = 1e-5  # of the largest magnitude in each TensorFlow output


def reference(name: str) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """[(input batch, {layer: TensorFlow output})] for a fixture."""
    with np.load(MODELS / f"{name}.npz") as data:
        arrays = dict(data)
    cases, i = [], 0
    while f"inputs/{i}" in arrays:
        prefix = f"outputs/{i}/"
        outputs = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        cases.append((arrays[f"inputs/{i}"], outputs))
        i += 1
    return cases


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == np.float32, what
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(float(np.abs(want).max()), np.finfo(np.float32).tiny)
    error = float(np.abs(got.astype(np.float64) - want).max())
    assert error <= TOLERANCE * scale, f"{what}: off by {error:.3g}, {error / scale:.3g} of the magnitude {scale:.3g}"


# --- exactness against TensorFlow ------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", NAMES)
def test_every_layer_matches_tensorflow(name, fmt):
    model = load_model(MODELS / f"{name}.{fmt}")
    for x, outputs in reference(name):
        assert set(model.layers) == set(outputs)
        maps = model.feature_maps(x)
        assert list(maps) == model.layers
        for layer, want in outputs.items():
            assert_close(maps[layer], want, f"{name}.{fmt} layer {layer} on input {x.shape}")


@pytest.mark.parametrize("name", NAMES)
def test_each_layer_alone_and_predict_match_tensorflow(name):
    """Asked for one layer, the model fuses the batch norms and ReLUs it need not show."""
    model = load_model(MODELS / f"{name}.keras")
    for x, outputs in reference(name):
        assert_close(model.predict(x), outputs[model.output_layer], f"{name} predict")
        for layer in model.layers:
            assert_close(model.feature_maps(x, [layer])[layer], outputs[layer], f"{name} layer {layer} alone")


def test_mobilenet_blocks_are_fused_for_predict():
    from convfilter.model.fusion import FusedConv

    model = load_model(MODELS / "mobilenet.keras")
    plan = model._plan(frozenset([model.output_layer]))
    fused = [node.layer.name for node in plan if isinstance(node.layer, FusedConv)]
    assert "block1_depthwise_relu" in fused and "conv1_relu" in fused and "block1_project_bn" in fused
    assert len(plan) < len(model.layers)


def test_a_layers_kernel_is_checked_for_nan_on_its_first_call_only(monkeypatch):
    from convfilter.model import layers

    checks = []
    correlate = ops.correlate

    def recording(*args, **kwargs):
        checks.append(kwargs.get("check_bank") is not None)
        return correlate(*args, **kwargs)

    monkeypatch.setattr(ops, "correlate", recording)
    monkeypatch.setattr(layers, "_finite_kernels", {})
    model = load_model(MODELS / "mobilenet.keras")
    (x, outputs), = reference("mobilenet")[:1]
    first = model.predict(x)
    convolutions = len(checks)
    assert convolutions > 0 and all(checks)
    assert np.array_equal(model.predict(x), first)  # the same kernels, no longer checked
    assert len(checks) == 2 * convolutions and not any(checks[convolutions:])
    assert_close(first, outputs[model.output_layer], "mobilenet predict")


def test_a_kernel_with_nan_is_refused_at_every_call_not_remembered():
    from convfilter.model.layers import _conv

    x = np.ones((1, 5, 5, 64), np.float32)
    kernel = np.full((3, 3, 64, 64), 0.01, np.float32)
    kernel[1, 2, 3, 4] = np.nan
    for activation in ("relu", "linear", "relu"):
        with pytest.raises(ValueError, match="NaN or infinity"):
            _conv(x, kernel, (1, 1), "SAME", (1, 1), None, activation)
    kernel[1, 2, 3, 4] = 0.5
    assert np.isfinite(_conv(x, kernel, (1, 1), "SAME", (1, 1), None, "relu")).all()


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_the_models_relu_gives_the_bits_of_np_maximum_and_leaves_its_input(backend):
    from convfilter.model.layers import ACTIVATIONS, relu

    x = np.random.default_rng(3).standard_normal((2, 9, 11, 5)).astype(np.float32)
    x.flat[:8] = [np.nan, -0.0, 0.0, -np.inf, np.inf, -1e-45, 1e-45, -3.0]
    before = x.copy()
    ops.set_backend(backend)
    try:
        for got in (ACTIVATIONS["relu"](x), relu(x), relu(x.astype(np.float64))):
            want = np.maximum(x, np.float32(0))
            assert got.dtype == np.float32 and got.shape == x.shape
            assert np.array_equal(got.view(np.int32), want.view(np.int32))
    finally:
        ops.set_backend("auto")
    assert np.array_equal(x.view(np.int32), before.view(np.int32))


@pytest.mark.parametrize("fmt", FORMATS)
def test_trained_digits_model_predicts_as_tensorflow(fmt):
    model = load_model(MODELS / f"digits.{fmt}")
    (x, outputs), = reference("digits")
    probabilities = model.predict(x)
    want = outputs[model.output_layer]
    assert_close(probabilities, want, "digits predictions")
    assert np.array_equal(probabilities.argmax(axis=1), want.argmax(axis=1))
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_every_supported_layer_kind_is_in_a_fixture():
    kinds = set()
    for name in NAMES:
        config = json.loads(zipfile.ZipFile(MODELS / f"{name}.keras").read("config.json"))
        kinds |= {entry["class_name"] for entry in config["config"]["layers"]}
    assert set(SUPPORTED_LAYERS) <= kinds


def test_layers_in_order_and_one_image_without_batch_axis():
    model = load_model(MODELS / "sequential.keras")
    assert model.layers[:3] == ["rescale", "conv_same_relu", "conv_valid_stride"]
    assert model.input_shape == (13, 11, 3) and model.fixed_size == (13, 11) and model.channels == 3
    (x, outputs), = reference("sequential")
    single = model.predict(x[1])
    assert single.shape == (5,)
    assert_close(single, outputs["probs"][1], "one image")
    maps = model.feature_maps(x[0], layers=["max_valid", "conv_dilated"])
    assert list(maps) == ["max_valid", "conv_dilated"]
    assert_close(maps["conv_dilated"], outputs["conv_dilated"][0], "conv_dilated")


def test_fully_convolutional_model_takes_any_size():
    model = load_model(MODELS / "mobilenet.keras")
    assert model.fixed_size is None
    shapes = model.output_shapes((13, 30, 3))
    assert shapes["conv1"] == (7, 15, 8) and shapes["block2_pad"] == (8, 16, 24)
    assert shapes["separable_stride"] == (1, 3, 6) and shapes["probs"] == (5,)
    assert model.output_shapes()["conv1"] == (None, None, 8)


def test_wrong_input_size_or_channels_is_a_clear_error():
    model = load_model(MODELS / "digits.keras")
    with pytest.raises(ModelError, match=r"takes 8x8x1 \(HxWxC\) inputs, not 9x8x1"):
        model.predict(np.zeros((9, 8, 1), np.float32))
    with pytest.raises(ModelError, match="not 8x8x3"):
        model.predict(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="no layer 'nope'"):
        model.feature_maps(np.zeros((8, 8, 1)), layers=["conv1", "nope"])
    small = load_model(MODELS / "mobilenet.keras")
    with pytest.raises(ModelError, match=r"'separable_stride' \(SeparableConv2D\).*larger than its input"):
        small.predict(np.zeros((8, 8, 3), np.float32))


# --- bad model files -------------------------------------------------------------------------

def test_unsupported_layer_named_with_its_type_and_the_supported_list():
    with pytest.raises(ModelError) as info:
        load_model(MODELS / "unsupported.keras")
    message = str(info.value)
    assert "'upsample'" in message and "UpSampling2D" in message and "Conv2D" in message
    assert "DepthwiseConv2D" in message


def test_weights_without_config():
    with pytest.raises(ModelError, match="weights without a model config"):
        load_model(MODELS / "unsupported.weights.h5")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_files(tmp_path, fmt, keep):
    data = (MODELS / f"sequential.{fmt}").read_bytes()
    path = tmp_path / f"cut.{fmt}"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelError, match="truncated or damaged"):
        load_model(path)


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "not a Keras model file"),
    (b"just some text", "not a Keras model file"),
])
def test_non_keras_files(tmp_path, content, message):
    path = tmp_path / "model.keras"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        load_model(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        load_model(tmp_path / "absent.keras")
    with pytest.raises(ModelError, match="directory"):
        load_model(tmp_path)


def rewrite_keras(source: Path, target: Path, edit_config=None, drop=()) -> None:
    """Copy a .keras archive, editing its config and leaving out members."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.namelist():
            if item in drop:
                continue
            data = old.read(item)
            if item == "config.json" and edit_config:
                config = json.loads(data)
                edit_config(config)
                data = json.dumps(config).encode()
            new.writestr(item, data)


def test_zip_that_is_not_a_keras_model(tmp_path):
    path = tmp_path / "other.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ModelError, match="without config.json"):
        load_model(path)
    rewrite_keras(MODELS / "sequential.keras", path, drop=("model.weights.h5",))
    with pytest.raises(ModelError, match="no model.weights.h5"):
        load_model(path)


def test_weight_shape_that_does_not_match_the_layer(tmp_path):
    def more_filters(config):
        layer = config["config"]["layers"][2]
        assert layer["config"]["name"] == "conv_same_relu"
        layer["config"]["filters"] = 9

    path = tmp_path / "edited.keras"
    rewrite_keras(MODELS / "sequential.keras", path, more_filters)
    with pytest.raises(ModelError, match=r"'conv_same_relu' \(Conv2D\): weight 'kernel' has shape "
                                         r"\(3, 3, 3, 8\) but the layer needs \(3, 3, 3, 9\)"):
        load_model(path)

    def no_bias(config):
        config["config"]["layers"][2]["config"]["use_bias"] = False

    rewrite_keras(MODELS / "sequential.keras", path, no_bias)
    with pytest.raises(ModelError, match="holds 2 weight arrays, the layer's config needs 1"):
        load_model(path)


def test_unsupported_option_is_named(tmp_path):
    def channels_first(config):
        config["config"]["layers"][2]["config"]["data_format"] = "channels_first"

    path = tmp_path / "edited.keras"
    rewrite_keras(MODELS / "sequential.keras", path, channels_first)
    with pytest.raises(ModelError, match="'conv_same_relu' \\(Conv2D\\): data_format 'channels_first'"):
        load_model(path)

    def gelu(config):
        config["config"]["layers"][2]["config"]["activation"] = "gelu"

    rewrite_keras(MODELS / "sequential.keras", path, gelu)
    with pytest.raises(ModelError, match="activation 'gelu' is not supported; supported: linear, relu"):
        load_model(path)


def test_h5_weight_shape_mismatch(tmp_path):
    path = tmp_path / "edited.h5"
    shutil.copy(MODELS / "functional.h5", path)
    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["name"] == "probs":
                layer["config"]["units"] = 3
        handle.attrs["model_config"] = json.dumps(config)
    with pytest.raises(ModelError, match=r"'probs' \(Dense\): weight 'kernel' has shape \(20, 4\)"):
        load_model(path)


def keras2_style(config: dict) -> None:
    """Rewrite a Keras 3 functional config the way Keras 2 wrote it (list inbound nodes)."""
    for layer in config["config"]["layers"]:
        nodes = []
        for node in layer["inbound_nodes"]:
            tensors = []

            def collect(value):
                if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
                    history = value["config"]["keras_history"]
                    tensors.append([history[0], history[1], history[2], {}])
                elif isinstance(value, list):
                    for item in value:
                        collect(item)
            collect(node["args"])
            nodes.append(tensors)
        layer["inbound_nodes"] = nodes
        if layer["class_name"] == "LeakyReLU":
            layer["config"]["alpha"] = layer["config"].pop("negative_slope")


def test_keras2_style_h5(tmp_path):
    path = tmp_path / "keras2.h5"
    shutil.copy(MODELS / "functional.h5", path)
    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        keras2_style(config)
        handle.attrs["model_config"] = json.dumps(config)
        # Keras 2 named the variables "layer/kernel:0"
        for group in handle["model_weights"].values():
            names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
            for name in names:
                group.move(name, name + ":0")
            if names:
                group.attrs["weight_names"] = [(n + ":0").encode() for n in names]
    model = load_model(path)
    (x, outputs), = reference("functional")
    assert_close(model.predict(x), outputs["probs"], "keras 2 style")
    assert_close(model.feature_maps(x, ["leaky"])["leaky"], outputs["leaky"], "alpha")


def test_missing_h5py_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ModelError, match=r"needs h5py: pip install 'convfilter\[keras\]'"):
        load_model(MODELS / "sequential.keras")


# --- ops.depthwise_conv2d ---------------------------------------------------------------------

@pytest.mark.parametrize("shape, window, multiplier, strides, padding, dilations", [
    ((1, 5, 5, 1), (3, 3), 1, (1, 1), "SAME", (1, 1)),
    ((2, 7, 6, 3), (3, 3), 2, (2, 2), "SAME", (1, 1)),
    ((1, 8, 9, 4), (2, 3), 1, (1, 2), "VALID", (1, 1)),
    ((1, 9, 8, 2), (3, 2), 3, (1, 1), "SAME", (2, 2)),
    ((2, 6, 7, 5), (1, 1), 2, (2, 1), "VALID", (1, 1)),
    ((1, 1, 1, 3), (3, 3), 1, (1, 1), "SAME", (1, 1)),
    ((1, 11, 10, 3), (5, 4), 1, (3, 2), "SAME", (1, 1)),
])
def test_depthwise_conv2d_against_loops(shape, window, multiplier, strides, padding, dilations):
    rng = np.random.default_rng(7)
    x = rng.normal(size=shape).astype(np.float32)
    w = rng.normal(size=(*window, shape[3], multiplier)).astype(np.float32)
    got = ops.depthwise_conv2d(x, w, strides, padding, dilations)
    want = naive.depthwise_conv2d(x, w, strides, padding, dilations)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_depthwise_conv2d_single_image_and_errors():
    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(4, 4, 2)
    w = np.zeros((3, 3, 2, 1), np.float32)
    w[1, 1] = 1  # identity per channel
    np.testing.assert_array_equal(ops.depthwise_conv2d(x, w), x)
    with pytest.raises(ValueError, match="filter expects 3 input channels but the input has 2"):
        ops.depthwise_conv2d(x, np.ones((3, 3, 3, 1)))
    with pytest.raises(ValueError, match="larger than the 4x4 input with padding=VALID"):
        ops.depthwise_conv2d(x, np.ones((5, 5, 2, 1)), padding="VALID")
    with pytest.raises(ValueError, match="4-D"):
        ops.depthwise_conv2d(x, np.ones((3, 3, 2)))


def test_a_large_dense_layer_runs_in_bands_with_the_same_bits_on_any_thread_count():
    from convfilter.model.layers import _matmul_last

    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 4, 2000)).astype(np.float32)  # 8 rows of 2000 features
    w = rng.standard_normal((2000, 3000)).astype(np.float32)  # 48 million multiply-adds: several bands
    results = []
    for threads in (1, 2):
        ops.set_num_threads(threads)
        try:
            results.append(_matmul_last(x, w))
        finally:
            ops.set_num_threads(None)
    np.testing.assert_array_equal(results[0], results[1])
    assert results[0].shape == (2, 4, 3000) and results[0].dtype == np.float32
    exact = x.astype(np.float64) @ w.astype(np.float64)
    assert np.abs(results[0] - exact).max() <= 1e-5 * np.abs(exact).max()
