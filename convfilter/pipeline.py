"""Run a :class:`~convfilter.recipe.Recipe` on one image: kernels -> conv -> bias -> activation -> pool.

This is the numeric wiring the CLI needs, kept out of the CLI so that the
batch runner and the library share it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ops
from .io import to_unit_range
from .kernels import OUT_FIRST_HINT, looks_out_first
from .recipe import Convolution, Pooling, Recipe, bias_per_map

# ITU-R 601-2 luma, the weights Pillow uses for mode "L"
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass
class FeatureMap:
    """One output of one input: a label for its file name and a (H, W, K) float32 array."""

    label: str
    data: np.ndarray


def luminance(image: np.ndarray) -> np.ndarray:
    """(H, W, 1) luma of an (H, W, C) image; 1 channel passes through, others need 3."""
    if image.shape[2] == 1:
        return image
    if image.shape[2] != 3:
        raise ValueError(f"--channels gray needs 1 or 3 channels, the input has {image.shape[2]}")
    return np.ascontiguousarray(image @ LUMA, np.float32)[:, :, None]


def filter_bank(kernel, in_channels: int, channels: str = "sum") -> np.ndarray:
    """A kernel as a (fh, fw, in_channels, out) float32 bank.

    A 2-D kernel is copied across the input channels (the book's semantics:
    one feature map that sums the channels). A 4-D bank must have
    ``in_channels`` inputs, as TensorFlow requires (a bank for 1 channel is not
    copied across 3: TensorFlow would read it as a grouped convolution); the
    error names the ``--channels`` mode that fits it. ``channels`` is the mode
    that gave ``in_channels``.
    """
    w = np.asarray(kernel.weights, dtype=np.float32)
    if w.ndim == 2:
        return np.repeat(w[:, :, None, None], in_channels, axis=2)
    if w.shape[2] != in_channels:
        raise ValueError(bank_mismatch(kernel.spec, w.shape, in_channels, channels))
    return w


def bank_mismatch(spec: str, shape: tuple[int, ...], in_channels: int, channels: str) -> str:
    """Why a (fh, fw, in, out) bank does not fit the channels that reach it, and what does."""
    n_in = shape[2]
    plural = "channel" if n_in == 1 else "channels"
    if channels == "sum":
        reach = f"the image has {in_channels}"
    else:
        how = "luminance" if channels == "gray" else "each channel alone"
        reach = f"--channels {channels} gives it 1 ({how})"
    if looks_out_first(shape, in_channels):
        fix = OUT_FIRST_HINT
    elif n_in == 1:
        fix = "use --channels gray (luminance first) or --channels each (every channel filtered alone)"
    elif channels != "sum":
        fix = f"drop --channels {channels} for an image with {n_in} channels, or use a bank for 1"
    else:
        fix = f"use a bank for {in_channels} {'channel' if in_channels == 1 else 'channels'}"
    return f"kernel '{spec}' is a bank for {n_in} input {plural} but {reach}; {fix}"


def map_labels(kernel, count: int) -> list[str]:
    return [kernel.label] if count == 1 else [f"{kernel.label}-{k}" for k in range(count)]


def unique_labels(labels: list[str]) -> list[str]:
    """Labels with repeats numbered (``custom``, ``custom-2``), so no map's file overwrites another's."""
    seen: set[str] = set()
    unique = []
    for label in labels:
        candidate, number = label, 1
        while candidate in seen:
            number += 1
            candidate = f"{label}-{number}"
        seen.add(candidate)
        unique.append(candidate)
    return unique


def kernel_labels(kernels) -> list[str]:
    """The label of every map the kernels make, in order, repeats numbered (known before any input)."""
    return unique_labels([label for k in kernels for label in map_labels(k, k.map_count)])


def convolve(image: np.ndarray, conv: Convolution, scale: float = 1.0) -> list[FeatureMap]:
    """Feature maps of an (H, W, C) image for every kernel of ``conv``, in order.

    ``image`` is float32, or samples that ``scale`` maps into [0, 1] (see
    :class:`convfilter.io.Loaded`): several channels summed by 2-D kernels (the
    default) are read as they are, anything else is made float32 first.
    """
    banks, input_scale = None, None
    if conv.channels == "sum" and image.shape[2] > 1 and image.dtype != np.float32:
        banks = [filter_bank(k, image.shape[2], conv.channels) for k in conv.kernels]
        if all(ops.sums_input_channels(w) for w in banks):
            input_scale = scale  # the channel-sum path divides each sample as it sums them
    if input_scale is None:
        image = to_unit_range(image, scale)
    if conv.channels == "gray":
        image = luminance(image)
    if conv.channels == "each":
        batch = np.ascontiguousarray(image.transpose(2, 0, 1)[:, :, :, None])  # (C, H, W, 1)
    else:
        batch = image[None]
    if banks is None:
        banks = [filter_bank(k, batch.shape[3], conv.channels) for k in conv.kernels]
    if conv.flip:  # true convolution: the kernel rotated by 180 degrees, then correlated
        banks = [np.ascontiguousarray(w[::-1, ::-1]) for w in banks]
    labels = kernel_labels(conv.kernels)
    bias = bias_per_map(conv.bias, sum(w.shape[3] for w in banks)) if conv.bias else None
    first_map = np.cumsum([0] + [w.shape[3] for w in banks])  # bank i makes maps first_map[i]..
    # one conv2d per kernel size: kernels of one size share the pass over the image, and the
    # bias and activation are applied as the kernel stores each row
    by_shape: dict[tuple[int, int], list[int]] = {}
    for index, w in enumerate(banks):
        by_shape.setdefault(w.shape[:2], []).append(index)
    outputs: list[np.ndarray | None] = [None] * len(banks)
    for indices in by_shape.values():
        stacked = np.concatenate([banks[i] for i in indices], axis=3)
        stacked_bias = None if bias is None else [b for i in indices for b in bias[first_map[i] : first_map[i + 1]]]
        # the command line warns about an out-first bank (PyTorch's layout) when it reads the file
        result = ops._conv2d(batch, stacked, conv.stride, conv.padding, conv.dilation, bias=stacked_bias,
                             activation=conv.activation, border=conv.border, input_scale=input_scale)
        start = 0
        for i in indices:
            outputs[i] = result[..., start : start + banks[i].shape[3]]
            start += banks[i].shape[3]
    planes = [out[..., k] for out in outputs for k in range(out.shape[3])]  # each (B, OH, OW)
    # each map (OH, OW, B): B = C for "each", else 1
    return [FeatureMap(label, np.ascontiguousarray(np.moveaxis(plane, 0, -1)))
            for label, plane in zip(labels, planes)]


def pool(data: np.ndarray, pooling: Pooling) -> np.ndarray:
    """Pool an (H, W, K) map with the ops function its type names; global pools give (1, 1, K)."""
    kind = pooling.kind
    if kind.function is None:
        return data
    function = getattr(ops, kind.function)
    if kind.windowed:
        return function(data, pooling.size, pooling.strides, pooling.padding)
    return function(data, keepdims=True)


# Bytes per pixel that bound the peak memory of one image (measured with /usr/bin/time on 24 MP
# photos, see docs/performance.md): what reading it holds besides its samples (Pillow's own
# image while its rows are read out, or the PNG being encoded), and per input channel (its
# samples, at most 4 bytes each), per output channel (the map's float32 plane, and its copy
# when one kernel size makes several maps) and per input channel again where the image is made
# float32 first (--channels gray or each, one channel, a 4-D bank, pooling alone).
READING_BYTES = 4
SAMPLE_BYTES = 4
MAP_BYTES = 8
FLOAT_BYTES = 8


def memory_bound(recipe: Recipe, height: int, width: int, channels: int) -> int:
    """Bytes one (height, width, channels) image needs at most through ``recipe`` (an estimate).

    ``H * W * (4 + 4*C + 8*M + 8*C if the image is made float32 first)``, where M counts the
    output channels of all maps before pooling (one per map, or C per map with ``--channels
    each``; C for pooling alone); plus, with a ``--border`` other than zero, the padded float32
    copy of the image (one channel when the kernels sum them, else C), and the padding of that
    copy beyond the image itself (large with SAME padding and a large dilation: a 7x7 kernel
    with dilation 1000 pads 3000 cells a side). 8-bit images whose channels are summed by 2-D
    kernels (the default) are filtered as they are decoded, without a float32 copy; a zero
    border pads a large image a few rows at a time.
    """
    frame, _ = padding_frame(recipe, height, width, channels)
    conv = recipe.convolution
    per_pixel = READING_BYTES + SAMPLE_BYTES * channels
    if conv is None:
        return height * width * (per_pixel + (MAP_BYTES + FLOAT_BYTES) * channels)
    per_map = channels if conv.channels == "each" else 1
    outputs = per_map * sum(k.map_count for k in conv.kernels)
    per_pixel += MAP_BYTES * outputs
    if not summed_as_decoded(conv, channels):
        per_pixel += FLOAT_BYTES * channels
    if conv.border != "CONSTANT":  # the whole padded copy (a zero border is padded in pieces)
        per_pixel += 4 * padded_channels(conv, channels)
    return height * width * per_pixel + frame


def summed_as_decoded(conv: Convolution, channels: int) -> bool:
    """Whether the kernels sum the channels of a multi-channel image, which (for 8-bit samples)
    are then filtered without a float32 copy of the image (see :func:`convolve`)."""
    return conv.channels == "sum" and channels > 1 and all(np.ndim(k.weights) == 2 for k in conv.kernels)


def padded_channels(conv: Convolution, channels: int) -> int:
    """Channels of the padded float32 copy the kernels read: one where they sum the channels (or
    ``--channels gray`` makes one), else all of them."""
    return 1 if conv.channels == "gray" or summed_as_decoded(conv, channels) else channels


def padding_frame(recipe: Recipe, height: int, width: int, channels: int) -> tuple[int, object]:
    """Bytes of the zero frame that padding adds around the image (beyond the image itself), and
    the kernel whose window needs the largest frame (None without a convolution)."""
    conv = recipe.convolution
    if conv is None:
        return 0, None
    planes = padded_channels(conv, channels)
    largest, widest = 0, None
    for kernel in conv.kernels:
        try:
            rows, cols = conv.geometry(height, width, kernel.size)
        except ValueError:  # a window larger than the image with VALID: the run says so later
            continue
        padded = (height + rows.pad_before + rows.pad_after) * (width + cols.pad_before + cols.pad_after)
        if padded - height * width > largest:
            largest, widest = padded - height * width, kernel
    return 4 * planes * largest, widest


def run(image: np.ndarray, recipe: Recipe, scale: float = 1.0) -> list[FeatureMap]:
    """All feature maps of one (H, W, C) image: float32, or samples with ``scale`` (see :func:`convolve`)."""
    if recipe.convolution is None:
        maps = [FeatureMap(recipe.pooling.label, to_unit_range(image, scale))]
    else:
        maps = convolve(image, recipe.convolution, scale)
    return [FeatureMap(m.label, pool(m.data, recipe.pooling)) for m in maps]
