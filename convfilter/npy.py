"""The ``.npy`` format's facts convfilter needs before numpy allocates anything.

An array's shape is read from its header first, so that a damaged or hostile
header cannot make numpy allocate gigabytes (images, kernel files and
``convfilter shape`` all check it).
"""

from __future__ import annotations

MAGIC = b"\x93NUMPY"


def declared_shape(source) -> tuple[int, ...] | None:
    """The shape a ``.npy`` header declares, nothing of the data read.

    ``source`` is a path or a binary stream positioned at the header. A path is
    mapped (which also checks that the file holds the data it declares); a
    stream is read and put back where it was. Returns None for a stream whose
    header version numpy's readers do not know (numpy checks it when loading).
    Raises what numpy raises for a file that is not a ``.npy`` array.
    """
    import numpy as np

    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        return np.load(source, mmap_mode="r", allow_pickle=False).shape
    start = source.tell()
    version = np.lib.format.read_magic(source)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read_header is None:
        source.seek(start)
        return None
    shape, _, _ = read_header(source)
    source.seek(start)
    return shape
