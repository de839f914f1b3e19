"""Choose where Numba keeps compiled kernels before Numba is imported.

Numba caches beside the source (``convfilter/__pycache__``) when that folder
is writable. A package installed read-only, with an unwritable home as well,
makes Numba raise at import ("no locator available"). So when the package
folder is not writable and the user has not set a writable ``NUMBA_CACHE_DIR``,
point Numba at the first writable per-user cache folder (XDG), else a private
temporary folder. Compilation then still works; only the cache is elsewhere.
When nothing at all can be written, the kernels are compiled without a cache.
"""

from __future__ import annotations

import os
import sys
import tempfile

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _writable_dir(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def candidate_dirs() -> list[str]:
    """Per-user cache folders to try, most preferred first."""
    dirs = []
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        dirs.append(os.path.join(xdg, "convfilter", "numba"))
    home = os.path.expanduser("~")
    if home and home != "~":
        dirs.append(os.path.join(home, ".cache", "convfilter", "numba"))
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    dirs.append(os.path.join(tempfile.gettempdir(), f"convfilter-{uid}", "numba"))
    return dirs


def configure_cache() -> str | None | bool:
    """Set ``NUMBA_CACHE_DIR`` if Numba could not cache beside the package.

    Returns the folder chosen, None when Numba's own choice is kept, or False when
    no folder can be written at all: the kernels must then be compiled without a
    cache (``cache=False``), since Numba would refuse to define them.
    A ``NUMBA_CACHE_DIR`` that cannot be written is ignored (Numba would fail too).
    """
    user_dir = os.environ.get("NUMBA_CACHE_DIR")
    if user_dir:
        if _writable_dir(user_dir):
            return None
        del os.environ["NUMBA_CACHE_DIR"]
    if _writable_dir(os.path.join(PACKAGE_DIR, "__pycache__")):
        _set_numba_cache_dir(None)
        return None
    for path in candidate_dirs():
        if _writable_dir(path):
            _set_numba_cache_dir(path)
            return path
    _set_numba_cache_dir(None)
    return False


def _set_numba_cache_dir(path: str | None) -> None:
    if path is not None:
        os.environ["NUMBA_CACHE_DIR"] = path
    numba = sys.modules.get("numba")
    if numba is not None:  # imported already: its config has read the environment
        numba.config.CACHE_DIR = path or ""


    return None


def skip_scipy_blas_probe() -> None:
    """Load Numba's numpy support without its scipy BLAS probe; for whole processes only (the CLI).

    When scipy is installed, ``numba.np.arraymath`` imports ``scipy.linalg``
    (0.15-0.4 s) only to learn whether ``np.dot`` can be compiled; the
    kernels never use it. Hiding ``scipy.linalg.cython_blas`` for that one
    import skips the probe. The library never calls this: in a user's
    process it would turn off ``np.dot`` in the user's own Numba code.
    """
    if "numba.np.arraymath" in sys.modules or "scipy.linalg.cython_blas" in sys.modules:
        return
    sys.modules["scipy.linalg.cython_blas"] = None  # makes "import scipy.linalg.cython_blas" fail
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        del sys.modules["scipy.linalg.cython_blas"]
