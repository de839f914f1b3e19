"""Choose where Numba keeps compiled kernels before Numba is imported.

The cache goes to a per-user folder (``$XDG_CACHE_HOME/convfilter/numba``,
else ``~/.cache/convfilter/numba``, else a private temporary folder), not
beside the package: files that Numba writes into an installed package are
not in pip's record, so ``pip uninstall`` would leave a ``convfilter/``
folder behind that shadows a later editable install (``pip install .`` then
``pip install -e .`` broke exactly so). Numba names each cache file after the
full path of its source, so several installs share the folder safely.

A ``NUMBA_CACHE_DIR`` the user set is kept when it can be written (and
ignored otherwise, since Numba would fail). When no folder at all can be
written, the package's own ``__pycache__`` is the last resort, and failing
that the kernels are compiled without a cache.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile

# Numba colours its compiler messages through colorama when that is installed (mkdocs-material
# brings it), and colorama then writes a terminal reset to the terminal when the process exits:
# a stray escape sequence after our last line. convfilter shows no Numba messages: turn it off
# before anything here imports Numba.
os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
JIT_SOURCE = os.path.join(PACKAGE_DIR, "_jit.py")


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
    """Set ``NUMBA_CACHE_DIR`` to a writable per-user folder (see the module docstring).

    Returns the folder chosen, None when the user's ``NUMBA_CACHE_DIR`` or Numba's
    own choice (beside the package) is kept, or False when no folder can be
    written at all: the kernels must then be compiled without a cache
    (``cache=False``), since Numba would refuse to define them.
    """
    user_dir = os.environ.get("NUMBA_CACHE_DIR")
    if user_dir:
        if _writable_dir(user_dir):
            return None
        del os.environ["NUMBA_CACHE_DIR"]
    for path in candidate_dirs():
        if _writable_dir(path):
            _set_numba_cache_dir(path)
            return path
    _set_numba_cache_dir(None)
    if _writable_dir(os.path.join(PACKAGE_DIR, "__pycache__")):
        return None
    return False


def jit_cache_folder() -> str | None:
    """The folder where Numba keeps the compiled kernels of ``_jit`` (chosen as the kernels'
    import chooses it), or None when they cannot be cached; Numba is not imported."""
    if configure_cache() is False:
        return None
    base = os.environ.get("NUMBA_CACHE_DIR")
    if not base:  # Numba's own choice: beside the source
        return os.path.join(PACKAGE_DIR, "__pycache__")
    # as Numba's cache locators name it: the source folder's name and the SHA-1 of its path
    return os.path.join(base, f"{os.path.basename(PACKAGE_DIR)}_{hashlib.sha1(PACKAGE_DIR.encode()).hexdigest()}")


def _set_numba_cache_dir(path: str | None) -> None:
    if path is not None:
        os.environ["NUMBA_CACHE_DIR"] = path
    numba = sys.modules.get("numba")
    if numba is not None:  # imported already: its config has read the environment
        numba.config.CACHE_DIR = path or ""


_skip_blas_probe = False


def skip_scipy_blas_probe() -> None:
    """Load Numba's numpy support without its scipy BLAS probe; for whole processes only (the CLI).

    When scipy is installed, ``numba.np.arraymath`` imports ``scipy.linalg``
    (0.15-0.4 s) only to learn whether ``np.dot`` can be compiled; the
    kernels never use it. Hiding ``scipy.linalg.cython_blas`` for that one
    import skips the probe. The library never calls this: in a user's
    process it would turn off ``np.dot`` in the user's own Numba code.

    Numba is not imported here: many runs never need it (see ``_backend``).
    The skip happens in :func:`before_numba_import`, if and when the kernels load.
    """
    global _skip_blas_probe
    _skip_blas_probe = True


def before_numba_import() -> None:
    """Called before the kernels (and so Numba) are imported: applies :func:`skip_scipy_blas_probe`."""
    if not _skip_blas_probe or "numba.np.arraymath" in sys.modules or "scipy.linalg.cython_blas" in sys.modules:
        return
    sys.modules["scipy.linalg.cython_blas"] = None  # makes "import scipy.linalg.cython_blas" fail
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        del sys.modules["scipy.linalg.cython_blas"]
