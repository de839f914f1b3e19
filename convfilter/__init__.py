"""convfilter: image filtering with convolution kernels and pooling, TensorFlow-exact.

The numpy API lives in :mod:`convfilter.ops` and is re-exported here lazily,
so that importing the package (and running ``convfilter --help``) does not
import numpy or Numba::

    from convfilter import conv2d, max_pool2d
"""

__version__ = "0.1.0"

_OPS = {
    "conv2d",
    "depthwise_conv2d",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool2d",
    "global_max_pool2d",
    "bias_add",
    "relu",
    "activate",
}

__all__ = sorted(_OPS | {"output_size", "pad", "load_model", "__version__"})


TYPE_CHECKING = False  # (not typing's: importing typing costs every command milliseconds)
if TYPE_CHECKING:  # what the lazy attributes below are, for type checkers and editors
    from .borders import pad  # noqa: F401
    from .geometry import output_size  # noqa: F401
    from .ops import (  # noqa: F401
        activate, avg_pool2d, bias_add, conv2d, depthwise_conv2d, global_avg_pool2d, global_max_pool2d, max_pool2d,
        relu,
    )


def __getattr__(name: str):
    if name in _OPS:
        from . import ops

        return getattr(ops, name)
    if name == "pad":  # numpy only: no Numba to import
        from .borders import pad

        return pad
    if name == "load_model":
        from .model import load_model

        return load_model
    if name == "output_size":
        from .geometry import output_size

        return output_size
    raise AttributeError(f"module 'convfilter' has no attribute {name!r}")
