"""Folding a BatchNormalization and a ReLU into the convolution before them.

When nobody asks for the convolution's or the batch norm's own output (``predict``, or
``feature_maps`` of later layers), ``conv -> BatchNormalization -> ReLU`` runs as one
convolution with scaled weights, a shifted bias and a clipped result: inference batch
norm is ``x * multiplier + shift`` per channel, so ``conv(x, w) * m + s == conv(x, w * m) + s``.
That saves two passes over the largest arrays of a MobileNet-style network. The result
differs from the layer-by-layer one by float32 rounding only (the product ``w * m`` is
rounded once instead of the sum). ``feature_maps`` of the intermediate layers never fuses.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from .layers import Activation, BatchNormalization, Conv2D, DepthwiseConv2D, Layer, ReLU, SeparableConv2D, _conv


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

    def __init__(self, conv, norm: BatchNormalization | None, relu, name: str):
        self.name, self.kind, self.config = name, f"{conv.kind}+fused", {}
        self.conv = conv
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
        if isinstance(conv, DepthwiseConv2D):
            out = ops.depthwise_conv2d(inputs[0], self.kernel, conv.strides, conv.padding, conv.dilation)
            if self.bias is not None:
                out += self.bias
            if self.relu:
                np.maximum(out, 0, out=out)
        else:
            out = _conv(inputs[0], self.kernel, conv.strides, conv.padding, conv.dilation, self.bias,
                        "relu" if self.relu else "linear")
        if self.max_value is not None:
            np.minimum(out, np.float32(self.max_value), out=out)
        return out


def fuse(nodes: list, keep: set[str]) -> list:
    """``nodes`` with each ``conv -> [BatchNormalization] -> [ReLU]`` chain whose inner outputs
    nobody reads (not in ``keep``, one consumer each) replaced by one FusedConv node."""
    from .graph import Node

    consumers: dict[str, list] = {}
    for node in nodes:
        for source in node.inputs:
            consumers.setdefault(source, []).append(node)

    def sole_consumer(name: str):
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in keep else None

    absorbed: set[str] = set()
    fused = []
    for node in nodes:
        layer = node.layer
        if layer.name in absorbed:
            continue
        if not isinstance(layer, (Conv2D, DepthwiseConv2D)) or isinstance(layer, SeparableConv2D) \
                or layer.activation != "linear":
            fused.append(node)
            continue
        chain_end, norm, relu = layer.name, None, None
        following = sole_consumer(chain_end)
        if following is not None and isinstance(following.layer, BatchNormalization):
            norm, chain_end = following.layer, following.layer.name
            following = sole_consumer(chain_end)
        if following is not None and _relu_limit(following.layer):
            relu, chain_end = _relu_limit(following.layer), following.layer.name
        if norm is None and relu is None:
            fused.append(node)
            continue
        absorbed.update(n for n in (norm and norm.name, relu and chain_end) if n)
        fused.append(Node(FusedConv(layer, norm, relu, chain_end), node.inputs))
    return fused
