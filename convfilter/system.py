"""What this machine offers the process: its usable CPUs.

Pure Python, so that the batch driver can size its workers before numpy and
Numba load.
"""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPUs this process may run on (affinity-aware where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1
