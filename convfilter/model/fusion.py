"""Folding a ZeroPadding2D, a BatchNormalization and a ReLU into the convolution they surround.

When nobody asks for the convolution's or the batch norm's own output (``predict``, or
``feature_maps`` of later layers), ``conv -> BatchNormalization -> ReLU`` runs as one
convolution with scaled weights, a shifted bias and a clipped result: inference batch
norm is ``x * multiplier + shift`` per channel, so ``conv(x, w) * m + s == conv(x, w * m) + s``.
That saves two passes over the largest arrays of a MobileNet-style network. The result
differs from the layer-by-layer one by float32 rounding only (the product ``w * m`` is
rounded once instead of the sum). A ZeroPadding2D before a VALID convolution becomes that
convolution's explicit padding (the same zeros, without the padded copy: exact).
``feature_maps`` of the intermediate layers never fuses.
"""

from __future__ import annotations

import numpy as np

from .layers import (Activation, BatchNormalization, Conv2D, DepthwiseConv2D, Layer, ReLU, SeparableConv2D,
                     ZeroPadding2D, _conv, _depthwise)


def _relu_limit(layer: Layer):
    """``(True, max or None)`` for a plain ReLU (clipped or not), else None."""
    if isinstance(layer, ReLU) and layer.negative_slope == 0 and layer.threshold == 0:
        return True, layer.max_value
    if isinstance(layer, Activation) and layer.activation in ("relu", "relu6"):
        return True, 6.0 if layer.activation == "relu6" else None
    return None


class FusedConv(Layer):
    """A Conv2D or DepthwiseConv2D with a folded batch norm and a (clipped) ReLU, named after
    the last layer it stands for."""

    def __init__(self, conv, norm: BatchNormalization | None, relu, name: str, padding=None):
        self.name, self.kind, self.config = name, f"{conv.kind}+fused", {}
        self.conv = conv
        self.padding = conv.padding if padding is None else padding
        depthwise = isinstance(conv, DepthwiseConv2D)
        kernel, bias = conv.weights["depthwise_kernel" if depthwise else "kernel"], conv.weights.get("bias")
        if norm is not None:
            multiplier = norm.multiplier
            # output channel k of a depthwise kernel (fh, fw, C, M) is k = c * M + m
            kernel = kernel * (multiplier.reshape(kernel.shape[2:]) if depthwise else multiplier)
            bias = (0 if bias is None else bias) * multiplier + norm.shift
        self.kernel = np.ascontiguousarray(kernel, np.float32)
        self.bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
        self.relu, self.max_value = relu if relu else (False, None)

    def __call__(self, inputs):
        conv = self.conv
        # ReLU6 (MobileNet's) is applied by the convolution as it stores its output; another
        # max_value is one more pass
        six = self.max_value is not None and float(self.max_value) == 6.0
        activation = ("relu6" if six else "relu") if self.relu else "linear"
        run = _depthwise if isinstance(conv, DepthwiseConv2D) else _conv
        out = run(inputs[0], self.kernel, conv.strides, self.padding, conv.dilation, self.bias, activation)
        if self.max_value is not None and not six:
            np.minimum(out, np.float32(self.max_value), out=out)
        return out


def fuse(nodes: list, keep: set[str]) -> list:
    """``nodes`` with each ``[ZeroPadding2D] -> conv -> [BatchNormalization] -> [ReLU]`` chain whose
    inner outputs nobody reads (not in ``keep``, one consumer each) replaced by one FusedConv node."""
    from .graph import Node

    consumers: dict[str, list] = {}
    for node in nodes:
        for source in node.inputs:
            consumers.setdefault(source, []).append(node)

    def sole_consumer(name: str):
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in keep else None

    absorbed: set[str] = set()
    padded: dict[str, tuple] = {}  # conv name -> (its ZeroPadding2D's pads, that layer's inputs)
    for node in nodes:
        following = sole_consumer(node.layer.name)
        if isinstance(node.layer, ZeroPadding2D) and following is not None and _fusable(following.layer) \
                and following.layer.padding == "VALID":
            padded[following.layer.name] = (node.layer.pad, node.inputs)
            absorbed.add(node.layer.name)  # becomes the padding of the convolution after it
    fused = []
    for node in nodes:
        layer = node.layer
        if layer.name in absorbed:
            continue
        if not _fusable(layer):
            fused.append(node)
            continue
        chain_end, norm, relu = layer.name, None, None
        following = sole_consumer(chain_end)
        if following is not None and isinstance(following.layer, BatchNormalization):
            norm, chain_end = following.layer, following.layer.name
            following = sole_consumer(chain_end)
        if following is not None and _relu_limit(following.layer):
            relu, chain_end = _relu_limit(following.layer), following.layer.name
        pads, inputs = padded.get(layer.name, (None, node.inputs))
        if norm is None and relu is None and pads is None:
            fused.append(node)
            continue
        absorbed.update(n for n in (norm and norm.name, relu and chain_end) if n)
        fused.append(Node(FusedConv(layer, norm, relu, chain_end, pads), inputs))
    return fused


def _fusable(layer: Layer) -> bool:
    """A Conv2D or DepthwiseConv2D without an activation of its own."""
    return isinstance(layer, (Conv2D, DepthwiseConv2D)) and not isinstance(layer, SeparableConv2D) \
        and layer.activation == "linear"
