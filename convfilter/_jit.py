"""Private Numba kernels.

They assume valid, C-contiguous float32 arrays and preallocated outputs:
``convfilter.ops`` checks and converts everything before calling them. They
never validate, print or allocate anything the caller did not ask for.
"""

from __future__ import annotations

from ._numba_cache import configure_cache

# False only when no folder at all can hold the cache: compile in every process instead
CACHE = configure_cache() is not False

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402


@njit(cache=CACHE, nogil=True)
def pad_planar(x, pad_top, pad_left, out):
    """Copy NHWC ``x`` into the zeroed planar (N, C, Hp, Wp) ``out`` at an offset."""
    n_img, height, width, channels = x.shape
    out[:] = 0.0
    for n in range(n_img):
        for r in range(height):
            for q in range(width):
                for c in range(channels):
                    out[n, c, pad_top + r, pad_left + q] = x[n, r, q, c]


@njit(cache=CACHE, nogil=True)
def correlate_planar(xp, w, sh, sw, dh, dw, out):
    """Direct cross-correlation of a padded planar input.

    ``out[n, f, i, j] = sum_{c,u,v} w[f, c, u, v] * xp[n, c, i*sh + u*dh, j*sw + v*dw]``

    The innermost loop runs along an output row, so it is contiguous (and
    vectorised) for unit column stride.
    """
    n_img, channels = xp.shape[0], xp.shape[1]
    n_out, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    out_h, out_w = out.shape[2], out.shape[3]
    out[:] = 0.0
    for n in range(n_img):
        for f in range(n_out):
            for i in range(out_h):
                row = out[n, f, i]
                for c in range(channels):
                    for u in range(kh):
                        src = xp[n, c, i * sh + u * dh]
                        for v in range(kw):
                            weight = w[f, c, u, v]
                            offset = v * dw
                            for j in range(out_w):
                                row[j] += weight * src[j * sw + offset]


@njit(cache=CACHE, nogil=True)
def planar_to_nhwc(src, out):
    """Transpose (N, F, H, W) into (N, H, W, F)."""
    n_img, n_out, height, width = src.shape
    for n in range(n_img):
        for i in range(height):
            for j in range(width):
                for f in range(n_out):
                    out[n, i, j, f] = src[n, f, i, j]


@njit(cache=CACHE, nogil=True)
def max_pool(x, ph, pw, sh, sw, pad_top, pad_left, out):
    """Max over each window; cells outside the image are ignored (never zeros)."""
    n_img, height, width, channels = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    for n in range(n_img):
        for i in range(out_h):
            r0 = i * sh - pad_top
            r1 = min(r0 + ph, height)
            r0 = max(r0, 0)
            for j in range(out_w):
                q0 = j * sw - pad_left
                q1 = min(q0 + pw, width)
                q0 = max(q0, 0)
                dst = out[n, i, j]
                dst[:] = -np.inf
                for r in range(r0, r1):
                    for q in range(q0, q1):
                        cell = x[n, r, q]
                        for c in range(channels):
                            if cell[c] > dst[c]:
                                dst[c] = cell[c]


@njit(cache=CACHE, nogil=True)
def avg_pool(x, ph, pw, sh, sw, pad_top, pad_left, out):
    """Mean over each window, dividing by the number of cells inside the image."""
    n_img, height, width, channels = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    acc = np.zeros(channels, dtype=np.float64)
    for n in range(n_img):
        for i in range(out_h):
            r0 = i * sh - pad_top
            r1 = min(r0 + ph, height)
            r0 = max(r0, 0)
            for j in range(out_w):
                q0 = j * sw - pad_left
                q1 = min(q0 + pw, width)
                q0 = max(q0, 0)
                acc[:] = 0.0
                for r in range(r0, r1):
                    for q in range(q0, q1):
                        cell = x[n, r, q]
                        for c in range(channels):
                            acc[c] += cell[c]
                inv = 1.0 / ((r1 - r0) * (q1 - q0))
                dst = out[n, i, j]
                for c in range(channels):
                    dst[c] = acc[c] * inv
