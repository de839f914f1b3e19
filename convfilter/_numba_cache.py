"""Choose where Numba keeps compiled kernels before Numba is imported.

Numba caches beside the source (``convfilter/__pycache__``) when that folder
is writable. A package installed read-only, with an unwritable home as well,
makes Numba raise at import ("no locator available"). So when the package
folder is not writable and the user has not set ``NUMBA_CACHE_DIR``, point
Numba at the first writable per-user cache folder (XDG), else a private
temporary folder. Compilation then still works; only the cache is elsewhere.
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


def configure_cache() -> str | None:
    """Set ``NUMBA_CACHE_DIR`` if Numba could not cache beside the package.

    Returns the folder chosen, or None when Numba's own choice is kept.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    if _writable_dir(os.path.join(PACKAGE_DIR, "__pycache__")):
        return None
    for path in candidate_dirs():
        if _writable_dir(path):
            os.environ["NUMBA_CACHE_DIR"] = path
            numba = sys.modules.get("numba")
            if numba is not None:  # imported already: its config has read the environment
                numba.config.CACHE_DIR = path
            return path
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
