"""Ctrl-C and SIGTERM held back while a few lines of code must run whole.

The command line turns Ctrl-C and SIGTERM into exceptions. One raised at the wrong instruction
can leave the process in a state that no ``finally`` repairs: just after fd 2 was redirected
into the capture file of :class:`convfilter._stderr.LibraryStderr`, or while it was being given
back, it left fd 2 there, and everything the process said afterwards (the summary, "Error:
interrupted") vanished into the file, about once in ten interrupted runs.

Python runs signal handlers in the main thread, between instructions. A handler installed with
:func:`install_held` only notes a signal that arrives while the main thread is inside
:func:`signals_held`, and acts on it (raises) as the outermost such block ends. Masking the
signal in the main thread (``pthread_sigmask``) is not enough: another thread then receives it,
and the main thread still runs the handler at its next instruction.

A handler's exception can also land inside a finalizer (an object's ``__del__`` run by the
garbage collector, e.g. one of llvmlite's while Numba loads a kernel): Python prints it as
"Exception ignored in ..." with a traceback and goes on, and the signal is lost. The handlers
installed here therefore come with a ``sys.unraisablehook`` that sends such a signal again,
to be acted on at the next instruction outside the finalizer, and prints nothing.

Standard library only, and light: the command line imports it for every command.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

_actions: dict = {}  # signal number -> what its handler does outside a held block
_raised: dict = {}  # exception type a handler raises -> its signal number
_held = 0  # depth of held blocks in the main thread
_pending: list = []  # signals that arrived inside one
_previous_hook = None


def install_held(signum, action, raises: type | None = None) -> None:
    """Make ``action(signum, frame)`` the handler of ``signum``, held back inside
    :func:`signals_held` (call from the main thread, as ``signal.signal``). ``raises``: the
    exception ``action`` raises, sent again as the signal when a finalizer swallowed it."""
    global _previous_hook
    _actions[signum] = action
    if raises is not None:
        _raised[raises] = signum
        if sys.unraisablehook is not _resend_swallowed:
            _previous_hook = sys.unraisablehook
            sys.unraisablehook = _resend_swallowed

    def handler(number, frame):
        if _held:
            _pending.append(number)
            return
        action(number, frame)

    signal.signal(signum, handler)


def forget_raised(raises: type) -> None:
    """No longer send ``raises`` again as a signal when a finalizer swallows it (for a handler
    that :func:`install_held` installed and that has since been replaced)."""
    _raised.pop(raises, None)


RESEND_AFTER = 0.001  # seconds: the finalizer and the hook have returned by then


def _resend_swallowed(unraisable) -> None:
    """``sys.unraisablehook``: a handler's exception raised inside a finalizer is sent again as
    its signal, from a timer thread (sent from here, its handler would run inside this hook, whose
    own exceptions Python swallows too); anything else goes to the hook there was before."""
    number = _raised.get(type(unraisable.exc_value))
    if number is None:
        _previous_hook(unraisable)
        return
    timer = threading.Timer(RESEND_AFTER, os.kill, (os.getpid(), number))
    timer.daemon = True
    timer.start()


class signals_held:
    """Inside the block, a signal whose handler came from :func:`install_held` waits; the first
    that arrived is acted on (its exception raised) as the outermost block ends. In other threads
    the block does nothing: handlers never run there."""

    def __enter__(self) -> None:
        global _held
        self.main = threading.current_thread() is threading.main_thread()
        if self.main:
            _held += 1

    def __exit__(self, *exc_info) -> None:
        global _held
        if not self.main:
            return
        _held -= 1
        if not _held and _pending:
            number = _pending[0]
            _pending.clear()
            _actions[number](number, None)
