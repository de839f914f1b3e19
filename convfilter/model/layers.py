"""The Keras layers convfilter runs, each built from its Keras config and computed with ``ops``.

A layer knows three things: the variables it expects (names and shapes, from its config and
its input shape), its output shape for an input shape (per sample, without the batch axis;
``None`` for a spatial size not known yet), and how to compute its output from float32 NHWC
arrays. Inference only: Dropout is the identity and BatchNormalization uses the moving
statistics, as Keras' ``model.predict`` does.
"""

from __future__ import annotations

import weakref

import numpy as np

from .. import ops
from ..conv_paths import quiet_arithmetic
from ..geometry import axis, normalize_padding
from ..threads import run_bands
from .files import ModelError

Shape = tuple  # per-sample shape, e.g. (H, W, C) with H, W possibly None, or (F,)


# --- activations (Keras names) ---------------------------------------------------------------

def _sigmoid(x):
    return (0.5 * (np.tanh(0.5 * x) + 1.0)).astype(np.float32)


def _softmax(x):
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _elu(x, alpha=1.0):
    return np.where(x > 0, x, np.float32(alpha) * np.expm1(np.minimum(x, 0)))


def _hard_sigmoid(x):
    return np.clip(x / np.float32(6) + np.float32(0.5), 0, 1)


SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946

ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": ops.relu,
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softmax": _softmax,
    "swish": lambda x: x * _sigmoid(x),
    "silu": lambda x: x * _sigmoid(x),
    "elu": _elu,
    "selu": lambda x: np.float32(SELU_SCALE) * _elu(x, SELU_ALPHA),
    "softplus": lambda x: np.log1p(np.exp(-np.abs(x))) + np.maximum(x, np.float32(0)),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "hard_sigmoid": _hard_sigmoid,
    "hard_silu": lambda x: x * _hard_sigmoid(x),
    "hard_swish": lambda x: x * _hard_sigmoid(x),
    "leaky_relu": lambda x: np.where(x >= 0, x, np.float32(0.2) * x),
    "exponential": np.exp,
}


def activation_name(value, layer: str) -> str:
    """The activation key for a Keras config value (a name, or a serialized function)."""
    if value is None:
        return "linear"
    if isinstance(value, dict):  # {"class_name": "function", "config": "relu", ...}
        value = value.get("config", value.get("class_name"))
    name = str(value).lower()
    if name not in ACTIVATIONS:
        raise ModelError(f"layer '{layer}': activation '{value}' is not supported; "
                         f"supported: {', '.join(ACTIVATIONS)}")
    return name


def activate(x: np.ndarray, name: str) -> np.ndarray:
    return x if name == "linear" else np.asarray(ACTIVATIONS[name](x), dtype=np.float32)


# --- helpers ---------------------------------------------------------------------------------

def _pair(value, what: str, layer: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ModelError(f"layer '{layer}': {what} {value!r} is not a number or a pair")


def _matmul_last(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` over the last axis of ``x``, float32: numpy's BLAS on the band threads, in bands
    of output columns, BLAS held to one thread in each (see :func:`_dense_band`)."""
    flat = x.reshape(-1, x.shape[-1])
    out = np.empty((flat.shape[0], w.shape[-1]), np.float32)
    run_bands(_dense_band, (flat, w, out), w.shape[-1], flat.size * w.shape[-1], blas=True)
    return out.reshape(*x.shape[:-1], w.shape[-1])


@quiet_arithmetic  # inf * 0 is NaN without a warning, as in the convolutions' bands
def _dense_band(flat, w, out, start, stop) -> None:
    """Output columns ``start .. stop`` of :func:`_matmul_last`. Not one product on BLAS's own
    threads: its bits would depend on their count, and its idle threads spin for about 0.1 s
    after it, on the CPUs the next layers' bands need."""
    np.matmul(flat, w[:, start:stop], out=out[:, start:stop])


def _spatial(shape: Shape, layer) -> tuple:
    if len(shape) != 3:
        raise ModelError(f"layer '{layer.name}' ({layer.kind}) needs an image-shaped (H, W, C) input, "
                         f"got {_text(shape)}")
    return shape


def _text(shape: Shape) -> str:
    return "x".join("?" if v is None else str(v) for v in shape)


def _window_out(size, window, stride, padding, dilation, layer, what) -> int | None:
    if size is None:
        return None
    try:
        return axis(size, window, stride, padding, dilation).out
    except ValueError:
        raise ModelError(
            f"layer '{layer.name}' ({layer.kind}): its {what} {(window - 1) * dilation + 1} is larger than "
            f"its input ({size}) with padding VALID; use a larger input image") from None


class Layer:
    """A layer of the model: built from ``config``, given weights by :meth:`set_weights`."""

    kind = ""
    #: True for layers whose output is worth viewing by default (convolutions and pools)
    shows_maps = False

    def __init__(self, name: str, config: dict):
        self.name = name
        self.config = config
        self.weights: dict[str, np.ndarray] = {}
        fmt = config.get("data_format")
        if fmt not in (None, "channels_last"):
            raise ModelError(f"layer '{name}' ({self.kind}): data_format '{fmt}' is not supported; "
                             "convfilter runs channels_last (NHWC) models")

    # shapes and weights
    def output_shape(self, shapes: list[Shape]) -> Shape:
        return shapes[0]

    def weight_spec(self, shapes: list[Shape]) -> list[tuple[str, tuple]]:
        """The variables this layer expects, ``(name, shape)`` in Keras' order."""
        return []

    def set_weights(self, values: dict[str, np.ndarray]) -> None:
        self.weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in values.items()}

    @property
    def parameters(self) -> int:
        return int(sum(v.size for v in self.weights.values()))

    def describe(self) -> str:
        """A short account of the layer's options for the summary."""
        return ""

    def __call__(self, inputs: list[np.ndarray]) -> np.ndarray:
        return inputs[0]


class InputLayer(Layer):
    kind = "InputLayer"

    def __init__(self, name, config):
        super().__init__(name, config)
        shape = config.get("batch_shape") or config.get("batch_input_shape")
        if shape is not None:
            shape = shape[1:]
        else:
            shape = config.get("input_shape") or config.get("shape")
        if shape is None:
            raise ModelError(f"input '{name}' has no shape in the model config")
        self.shape = tuple(None if v is None else int(v) for v in shape)

    def output_shape(self, shapes):
        return self.shape


class Rescaling(Layer):
    kind = "Rescaling"

    def __init__(self, name, config):
        super().__init__(name, config)
        self.scale = np.asarray(config.get("scale", 1.0), np.float32)
        self.offset = np.asarray(config.get("offset", 0.0), np.float32)

    def describe(self):
        def text(value):
            return f"{float(value):.6g}" if value.ndim == 0 else str([float(f"{v:.6g}") for v in value])
        return f"x * {text(self.scale)} + {text(self.offset)}"

    def __call__(self, inputs):
        return inputs[0] * self.scale + self.offset


class ZeroPadding2D(Layer):
    kind = "ZeroPadding2D"

    def __init__(self, name, config):
        super().__init__(name, config)
        pad = config.get("padding", 1)
        if isinstance(pad, int):
            pad = ((pad, pad), (pad, pad))
        elif all(isinstance(p, int) for p in pad):
            pad = ((pad[0], pad[0]), (pad[1], pad[1]))
        self.pad = (tuple(int(v) for v in pad[0]), tuple(int(v) for v in pad[1]))

    def output_shape(self, shapes):
        h, w, c = _spatial(shapes[0], self)
        (t, b), (l, r) = self.pad
        return (None if h is None else h + t + b, None if w is None else w + l + r, c)

    def describe(self):
        (t, b), (l, r) = self.pad
        return f"top {t} bottom {b} left {l} right {r}"

    def __call__(self, inputs):
        return np.pad(inputs[0], ((0, 0), *self.pad, (0, 0)))


class _Windowed(Layer):
    """Shared by convolutions and pools: a window, strides, padding and dilation."""

    def __init__(self, name, config, window_key="kernel_size"):
        super().__init__(name, config)
        self.window = _pair(config.get(window_key), window_key, name)
        strides = config.get("strides")
        self.strides = self.window if strides is None and window_key == "pool_size" else _pair(
            strides if strides is not None else 1, "strides", name)
        self.padding = normalize_padding(config.get("padding", "valid"))
        self.dilation = _pair(config.get("dilation_rate", 1), "dilation_rate", name)

    def _spatial_out(self, shape, what="window"):
        h, w, c = _spatial(shape, self)
        return (_window_out(h, self.window[0], self.strides[0], self.padding, self.dilation[0], self, what),
                _window_out(w, self.window[1], self.strides[1], self.padding, self.dilation[1], self, what), c)

    def describe(self):
        text = f"{self.window[0]}x{self.window[1]} {self.padding.lower()}"
        if self.strides != (1, 1):
            text += f" stride {self.strides[0]},{self.strides[1]}"
        if self.dilation != (1, 1):
            text += f" dilation {self.dilation[0]},{self.dilation[1]}"
        return text


class Conv2D(_Windowed):
    kind = "Conv2D"
    shows_maps = True

    def __init__(self, name, config):
        super().__init__(name, config)
        self.filters = int(config["filters"])
        self.use_bias = bool(config.get("use_bias", True))
        self.activation = activation_name(config.get("activation"), name)
        if int(config.get("groups", 1)) != 1:
            raise ModelError(f"layer '{name}' (Conv2D): groups={config['groups']} is not supported (only 1)")

    def output_shape(self, shapes):
        h, w, _ = self._spatial_out(shapes[0], "kernel")
        return (h, w, self.filters)

    def weight_spec(self, shapes):
        spec = [("kernel", (*self.window, _spatial(shapes[0], self)[2], self.filters))]
        return spec + [("bias", (self.filters,))] if self.use_bias else spec

    def describe(self):
        return f"{self.filters} filters {super().describe()}, {self.activation}"

    def __call__(self, inputs):
        kernel, bias = self.weights["kernel"], self.weights.get("bias")
        return _conv(inputs[0], kernel, self.strides, self.padding, self.dilation, bias, self.activation)


# Keras activations that ops applies as it stores each row or tile of a convolution's output.
FUSED_ACTIVATIONS = ("relu", "relu6")


# The kernels that a convolution has run with, by identity: conv2d refuses a kernel with a NaN or
# an infinity, so one that returned is finite, and the model's kernels are its own float32
# arrays, never written after loading. The check reads every weight, which a layer's call
# would pay again and again (a 3x3x512x512 kernel: 0.4-0.7 ms, a fifth of that layer's call on
# a 7x7 map).
_finite_kernels: dict[int, weakref.ref] = {}


def _conv(x, kernel, strides, padding, dilation, bias, activation) -> np.ndarray:
    """Conv2D with bias and activation, by ops.conv2d (its cost model picks the path: a 1x1
    kernel is a matrix product over the channels); the kernel checked for NaN and infinity
    on its first call only."""
    fused = activation if activation in FUSED_ACTIVATIONS else None
    key = id(kernel)
    known = _finite_kernels.get(key)
    finite = known is not None and known() is kernel
    out = ops._conv2d(x, kernel, strides, padding, dilation, bias=bias, activation=fused, filters_finite=finite)
    if not finite and isinstance(kernel, np.ndarray) and kernel.dtype == np.float32:
        _finite_kernels[key] = weakref.ref(kernel, lambda _, key=key: _finite_kernels.pop(key, None))
    return out if fused else activate(out, activation)


class DepthwiseConv2D(_Windowed):
    kind = "DepthwiseConv2D"
    shows_maps = True

    def __init__(self, name, config):
        super().__init__(name, config)
        self.multiplier = int(config.get("depth_multiplier", 1))
        self.use_bias = bool(config.get("use_bias", True))
        self.activation = activation_name(config.get("activation"), name)

    def output_shape(self, shapes):
        h, w, c = self._spatial_out(shapes[0], "kernel")
        return (h, w, c * self.multiplier)

    def weight_spec(self, shapes):
        channels = _spatial(shapes[0], self)[2]
        spec = [("depthwise_kernel", (*self.window, channels, self.multiplier))]
        return spec + [("bias", (channels * self.multiplier,))] if self.use_bias else spec

    def describe(self):
        return f"x{self.multiplier} per channel {super().describe()}, {self.activation}"

    def __call__(self, inputs):
        return _depthwise(inputs[0], self.weights["depthwise_kernel"], self.strides, self.padding, self.dilation,
                          self.weights.get("bias") if self.use_bias else None, self.activation)


def _depthwise(x, kernel, strides, padding, dilation, bias, activation) -> np.ndarray:
    """DepthwiseConv2D with bias and activation, fused into ops.depthwise_conv2d where it can."""
    fused = activation if activation in FUSED_ACTIVATIONS else None
    out = ops.depthwise_conv2d(x, kernel, strides, padding, dilation, bias=bias, activation=fused)
    return out if fused else activate(out, activation)


class SeparableConv2D(DepthwiseConv2D):
    kind = "SeparableConv2D"

    def __init__(self, name, config):
        super().__init__(name, config)
        self.filters = int(config["filters"])

    def output_shape(self, shapes):
        h, w, _ = super().output_shape(shapes)
        return (h, w, self.filters)

    def weight_spec(self, shapes):
        channels = _spatial(shapes[0], self)[2]
        spec = [("depthwise_kernel", (*self.window, channels, self.multiplier)),
                ("pointwise_kernel", (1, 1, channels * self.multiplier, self.filters))]
        return spec + [("bias", (self.filters,))] if self.use_bias else spec

    def describe(self):
        return f"{self.filters} filters, {super().describe()}"

    def __call__(self, inputs):
        depthwise = ops.depthwise_conv2d(inputs[0], self.weights["depthwise_kernel"], self.strides,
                                         self.padding, self.dilation)
        return _conv(depthwise, self.weights["pointwise_kernel"], (1, 1), "VALID", (1, 1),
                     self.weights.get("bias"), self.activation)


class _Pool(_Windowed):
    shows_maps = True
    pool = None

    def __init__(self, name, config):
        super().__init__(name, config, window_key="pool_size")

    def output_shape(self, shapes):
        return self._spatial_out(shapes[0], "pool window")

    def __call__(self, inputs):
        return type(self).pool(inputs[0], self.window, self.strides, self.padding)


class MaxPooling2D(_Pool):
    kind = "MaxPooling2D"
    pool = staticmethod(ops.max_pool2d)


class AveragePooling2D(_Pool):
    kind = "AveragePooling2D"
    pool = staticmethod(ops.avg_pool2d)


class _GlobalPool(Layer):
    shows_maps = True
    pool = None

    def __init__(self, name, config):
        super().__init__(name, config)
        self.keepdims = bool(config.get("keepdims", False))

    def output_shape(self, shapes):
        c = _spatial(shapes[0], self)[2]
        return (1, 1, c) if self.keepdims else (c,)

    def __call__(self, inputs):
        return type(self).pool(inputs[0], keepdims=self.keepdims)


class GlobalAveragePooling2D(_GlobalPool):
    kind = "GlobalAveragePooling2D"
    pool = staticmethod(ops.global_avg_pool2d)


class GlobalMaxPooling2D(_GlobalPool):
    kind = "GlobalMaxPooling2D"
    pool = staticmethod(ops.global_max_pool2d)


class BatchNormalization(Layer):
    """Inference: ``(x - moving_mean) / sqrt(moving_variance + epsilon) * gamma + beta``."""

    kind = "BatchNormalization"

    def __init__(self, name, config):
        super().__init__(name, config)
        axes = config.get("axis", -1)
        axes = axes if isinstance(axes, list) else [axes]
        if axes not in ([-1], [3]):
            raise ModelError(f"layer '{name}' (BatchNormalization): axis {config.get('axis')} is not "
                             "supported (only the channels axis, -1)")
        self.epsilon = float(config.get("epsilon", 1e-3))
        self.center = bool(config.get("center", True))
        self.scale = bool(config.get("scale", True))

    def weight_spec(self, shapes):
        c = (shapes[0][-1],)
        names = ["gamma"] * self.scale + ["beta"] * self.center + ["moving_mean", "moving_variance"]
        return [(n, c) for n in names]

    def set_weights(self, values):
        super().set_weights(values)
        # as tf.nn.batch_normalization: x * inv + (beta - mean * inv), inv = gamma / sqrt(var + eps)
        inv = np.float32(1) / np.sqrt(self.weights["moving_variance"] + np.float32(self.epsilon))
        if self.scale:
            inv = inv * self.weights["gamma"]
        shift = -self.weights["moving_mean"] * inv
        if self.center:
            shift = self.weights["beta"] + shift
        self.multiplier, self.shift = inv.astype(np.float32), shift.astype(np.float32)

    def describe(self):
        return f"epsilon {self.epsilon:g}"

    def __call__(self, inputs):
        return inputs[0] * self.multiplier + self.shift


class Activation(Layer):
    kind = "Activation"

    def __init__(self, name, config):
        super().__init__(name, config)
        self.activation = activation_name(config.get("activation"), name)

    def describe(self):
        return self.activation

    def __call__(self, inputs):
        return activate(inputs[0], self.activation)


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0) -> np.ndarray:
    """Keras' ``relu`` with all its options: ``x`` above ``threshold`` (clipped at ``max_value``),
    ``negative_slope * (x - threshold)`` below it."""
    zero = np.float32(0)
    if threshold != 0:
        out = x * (x > np.float32(threshold))
    else:
        out = ops.relu(x)
    if max_value is not None:
        out = np.clip(out, zero, np.float32(max_value))
    if negative_slope != 0:
        out = out - np.float32(negative_slope) * np.maximum(np.float32(threshold) - x, zero)
    return out.astype(np.float32)


class ReLU(Layer):
    kind = "ReLU"

    def __init__(self, name, config):
        super().__init__(name, config)
        self.max_value = config.get("max_value")
        self.negative_slope = float(config.get("negative_slope", 0.0) or 0.0)
        self.threshold = float(config.get("threshold", 0.0) or 0.0)

    def describe(self):
        parts = [f"max {self.max_value:g}"] if self.max_value is not None else []
        parts += [f"slope {self.negative_slope:g}"] if self.negative_slope else []
        parts += [f"threshold {self.threshold:g}"] if self.threshold else []
        return ", ".join(parts)

    def __call__(self, inputs):
        return relu(inputs[0], self.negative_slope, self.max_value, self.threshold)


class LeakyReLU(Layer):
    kind = "LeakyReLU"

    def __init__(self, name, config):
        super().__init__(name, config)
        # Keras 3 calls it negative_slope (default 0.3), Keras 2 alpha
        self.slope = float(config.get("negative_slope", config.get("alpha", 0.3)))

    def describe(self):
        return f"slope {self.slope:g}"

    def __call__(self, inputs):
        x = inputs[0]
        return np.where(x >= 0, x, np.float32(self.slope) * x)


class Dropout(Layer):
    """The identity at inference."""

    kind = "Dropout"


class Flatten(Layer):
    kind = "Flatten"

    def output_shape(self, shapes):
        size = 1
        for v in shapes[0]:
            size = None if v is None or size is None else size * v
        return (size,)

    def __call__(self, inputs):
        x = inputs[0]
        return x.reshape(x.shape[0], -1)


class Dense(Layer):
    kind = "Dense"

    def __init__(self, name, config):
        super().__init__(name, config)
        self.units = int(config["units"])
        self.use_bias = bool(config.get("use_bias", True))
        self.activation = activation_name(config.get("activation"), name)

    def output_shape(self, shapes):
        features = shapes[0][-1]
        kernel = self.weights.get("kernel")
        if kernel is not None and features is not None and features != kernel.shape[0]:
            raise ModelError(f"layer '{self.name}' (Dense) takes {kernel.shape[0]} features, not {features}: "
                             "the model needs the input size it was trained on")
        return (*shapes[0][:-1], self.units)

    def weight_spec(self, shapes):
        spec = [("kernel", (shapes[0][-1], self.units))]
        return spec + [("bias", (self.units,))] if self.use_bias else spec

    def describe(self):
        return f"{self.units} units, {self.activation}"

    def __call__(self, inputs):
        out = _matmul_last(inputs[0], self.weights["kernel"])
        if self.use_bias:
            out += self.weights["bias"]
        return activate(out, self.activation)


class Add(Layer):
    kind = "Add"

    def output_shape(self, shapes):
        if len(shapes) < 2 or any(s != shapes[0] for s in shapes[1:]):
            raise ModelError(f"layer '{self.name}' (Add) needs two or more inputs of one shape, got "
                             f"{', '.join(_text(s) for s in shapes)}")
        return shapes[0]

    def __call__(self, inputs):
        out = inputs[0] + inputs[1]
        for x in inputs[2:]:
            out += x
        return out


class Concatenate(Layer):
    kind = "Concatenate"

    def __init__(self, name, config):
        super().__init__(name, config)
        self.axis = int(config.get("axis", -1))
        if self.axis == 0:
            raise ModelError(f"layer '{name}' (Concatenate): axis 0 is the batch axis; not supported")

    def _axis(self, rank):
        return self.axis - 1 if self.axis > 0 else rank + self.axis

    def output_shape(self, shapes):
        rank = len(shapes[0])
        k = self._axis(rank)
        if any(len(s) != rank for s in shapes) or not 0 <= k < rank:
            raise ModelError(f"layer '{self.name}' (Concatenate): inputs {', '.join(_text(s) for s in shapes)} "
                             f"cannot be joined on axis {self.axis}")
        for s in shapes[1:]:
            if any(a != b for i, (a, b) in enumerate(zip(s, shapes[0])) if i != k):
                raise ModelError(f"layer '{self.name}' (Concatenate): inputs "
                                 f"{', '.join(_text(s) for s in shapes)} differ off the joined axis")
        joined = [s[k] for s in shapes]
        return (*shapes[0][:k], None if None in joined else sum(joined), *shapes[0][k + 1:])

    def __call__(self, inputs):
        return np.concatenate(inputs, axis=self._axis(inputs[0].ndim - 1) + 1)


LAYERS = {cls.kind: cls for cls in (
    InputLayer, Rescaling, ZeroPadding2D, Conv2D, DepthwiseConv2D, SeparableConv2D, MaxPooling2D,
    AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, BatchNormalization, Activation, ReLU,
    LeakyReLU, Dropout, Flatten, Dense, Add, Concatenate)}

# names Keras also uses for the same classes
ALIASES = {"MaxPool2D": "MaxPooling2D", "AvgPool2D": "AveragePooling2D", "GlobalAvgPool2D": "GlobalAveragePooling2D",
           "GlobalMaxPool2D": "GlobalMaxPooling2D", "Convolution2D": "Conv2D", "SeparableConvolution2D":
           "SeparableConv2D"}


def build(class_name: str, name: str, config: dict) -> Layer:
    """The layer object for a Keras layer config; ModelError for a layer convfilter does not run."""
    cls = LAYERS.get(ALIASES.get(class_name, class_name))
    if cls is None:
        raise ModelError(f"layer '{name}' of type {class_name} is not supported; supported layers: "
                         f"{', '.join(LAYERS)}")
    try:
        return cls(name, config)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ModelError):
            raise
        raise ModelError(f"layer '{name}' ({class_name}): unexpected config ({exc!r})") from None
