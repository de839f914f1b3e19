"""Slow, obviously-correct references written straight from the formulas in docs/semantics.md.

Independent of convfilter: plain Python loops over numpy arrays, no shared helpers.
"""

import math

import numpy as np


def same_pads(size, window, stride, dilation=1):
    out = math.ceil(size / stride)
    effective = (window - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return out, total // 2


def conv2d(x, w, strides=(1, 1), padding="SAME", dilations=(1, 1)):
    """z[n,i,j,k] = sum_u sum_v sum_c xpad[n, i*sh+u*dh, j*sw+v*dw, c] * w[u,v,c,k], in float64."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n_img, height, width, channels = x.shape
    fh, fw, _, n_out = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    if padding.upper() == "SAME":
        oh, top = same_pads(height, fh, sh, dh)
        ow, left = same_pads(width, fw, sw, dw)
    else:
        oh = (height - (fh - 1) * dh - 1) // sh + 1
        ow = (width - (fw - 1) * dw - 1) // sw + 1
        top = left = 0
    z = np.zeros((n_img, oh, ow, n_out))
    for n in range(n_img):
        for i in range(oh):
            for j in range(ow):
                for k in range(n_out):
                    total = 0.0
                    for u in range(fh):
                        for v in range(fw):
                            r = i * sh + u * dh - top
                            q = j * sw + v * dw - left
                            if 0 <= r < height and 0 <= q < width:
                                for c in range(channels):
                                    total += x[n, r, q, c] * w[u, v, c, k]
                    z[n, i, j, k] = total
    return z


def pool2d(x, ksize, strides, padding, reduce):
    """Pool with windows clipped to the image (TF: padding cells never count)."""
    x = np.asarray(x, np.float64)
    n_img, height, width, channels = x.shape
    (ph, pw), (sh, sw) = ksize, strides
    if padding.upper() == "SAME":
        oh, top = same_pads(height, ph, sh)
        ow, left = same_pads(width, pw, sw)
    else:
        oh = (height - ph) // sh + 1
        ow = (width - pw) // sw + 1
        top = left = 0
    z = np.zeros((n_img, oh, ow, channels))
    for n in range(n_img):
        for i in range(oh):
            for j in range(ow):
                r0, q0 = i * sh - top, j * sw - left
                window = x[n, max(r0, 0) : r0 + ph, max(q0, 0) : q0 + pw, :]
                z[n, i, j] = reduce(window.reshape(-1, channels), axis=0)
    return z


def depthwise_conv2d(x, w, strides=(1, 1), padding="SAME", dilations=(1, 1)):
    """Output channel c*M + m is input channel c correlated with w[:, :, c, m], in float64."""
    channels, multiplier = w.shape[2], w.shape[3]
    maps = [conv2d(x[..., c:c + 1], w[:, :, c:c + 1, m:m + 1], strides, padding, dilations)
            for c in range(channels) for m in range(multiplier)]
    return np.concatenate(maps, axis=-1)


def max_over_blocks(values, block: int):
    """Each output replaced by the largest value of its ``block`` x ``block`` block (blocks start
    at even rows and columns of the NHWC ``values``): the magnitude Winograd's rounding scales
    with, since a block's outputs share one transformed input patch."""
    if block == 1:
        return values
    n, h, w, f = values.shape
    padded = np.pad(values, ((0, 0), (0, -h % block), (0, -w % block), (0, 0)))
    peaks = padded.reshape(n, padded.shape[1] // block, block, padded.shape[2] // block, block, f).max(axis=(2, 4))
    return np.repeat(np.repeat(peaks, block, 1), block, 2)[:, :h, :w]
