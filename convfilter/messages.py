"""How convfilter names inputs and failures for the user, in one place.

Pure Python: the CLI, the batch driver and the workers share these.
"""

from __future__ import annotations

STDIO = "-"  # the path that means stdin (an input) or stdout (an output)
STDIN_NAME = "stdin"  # how messages, reports and output names call stdin


def display_name(source: str) -> str:
    """``source`` as messages and reports name it (``stdin`` for ``-``)."""
    return STDIN_NAME if source == STDIO else source


def os_error_text(exc: OSError) -> str:
    """An OS error as a lower-case phrase for ``Error: FILE: ...`` ("no such file or directory")."""
    return (exc.strerror or str(exc)).lower()


def error_message(exc: BaseException) -> str:
    """One line for the user about a failed input (no traceback, no class names)."""
    if isinstance(exc, MemoryError):
        text = " ".join(str(exc).split())  # ours says how much; numpy's names the array
        if text.startswith("not enough memory"):
            return text
        return f"not enough memory ({text or 'for this image'})"
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{os_error_text(exc)}{where}"
    return " ".join(str(exc).split()) or type(exc).__name__
