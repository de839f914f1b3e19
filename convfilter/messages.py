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
    """One line for the user about a failed input (no traceback; a class name only where unexpected)."""
    if isinstance(exc, MemoryError):
        text = " ".join(str(exc).split())  # ours says how much; numpy's names the array
        if text.startswith("not enough memory"):
            return text
        return f"not enough memory ({text or 'for this image'})"
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{os_error_text(exc)}{where}"
    text = " ".join(str(exc).split())
    if isinstance(exc, (ValueError, OSError)):  # ours, or a library's about the file: the words say it
        return text or type(exc).__name__
    # anything else is unexpected (a bug here or in a library): the class name helps the report
    return shorten(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


WORDS_LIMIT = 200  # characters of an image library's words in a message; the --report keeps them all


def shorten(text: str, limit: int = WORDS_LIMIT) -> str:
    """``text`` on one line of at most ``limit`` characters, cut at a word with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit - 4]
    space = cut.rfind(" ")
    if space > limit // 2:  # a word boundary not too far back (else one long word is cut)
        cut = cut[:space]
    return cut.rstrip(" ,;:(") + " ..."
