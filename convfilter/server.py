"""The per-user server that runs ``convfilter`` commands with everything already loaded.

:func:`main` imports numpy, Pillow, click and Numba, loads every kernel and
then waits on a Unix socket in a private folder (see :mod:`convfilter.client`
for where, and what the client sends). It never listens on TCP, answers
only its own user (``SO_PEERCRED``) and starts no thread, so that each
command can run in a child forked from it: the child takes over the
client's stdin/stdout/stderr, working folder, environment, umask, CPU
affinity and priority, runs the click command exactly as the process would
have, and reports the exit code. A client with other resource limits,
another cgroup, mount namespace or groups is told to run in-process.

The server exits after ``CONVFILTER_SERVER_IDLE`` seconds (default 900)
without a command, on ``convfilter server stop`` or on SIGTERM; commands
running at that moment finish. The functions at the bottom (:func:`status`,
:func:`start`, :func:`stop`) serve ``convfilter server`` and import the
standard library only.
"""

from __future__ import annotations

import errno
import fcntl
import marshal
import os
import select
import signal
import socket
import struct
import sys
import time

from . import client
from ._signals import forget_raised, install_held
from .client import Channel, send_message

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
CHILD_SIGNALS = STOP_SIGNALS | {signal.SIGCHLD}
REQUEST_TIMEOUT = 5.0  # a client that does not send its whole request within this is dropped
STOP_TIMEOUT = 10.0
START_TIMEOUT = 600.0  # an empty kernel cache compiles everything first
# An idle server looks this often whether its package's files are still those it started with:
# after an upgrade to another version (whose clients look for a server under another name) or
# an uninstall, it ends then rather than at its idle exit.
CHECK_SECONDS = 30.0


def idle_seconds(environ=os.environ) -> float:
    """``CONVFILTER_SERVER_IDLE`` as a positive number of seconds, else the default."""
    try:
        value = float(environ.get(client.IDLE_VARIABLE, ""))
    except ValueError:
        return client.DEFAULT_IDLE
    return value if value > 0 else client.DEFAULT_IDLE


# --- start-up ----------------------------------------------------------------------------------


def warm() -> None:
    """Import every module a command may need and load (or compile) every kernel.

    BLAS is told to use one thread, so that no thread exists when children
    are forked (the kernels never use BLAS; a child gets the client's
    environment for its own threads).
    """
    import gc
    import importlib
    import pkgutil

    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    from ._numba_cache import skip_scipy_blas_probe

    skip_scipy_blas_probe()
    import convfilter
    from PIL import Image

    for module in pkgutil.walk_packages(convfilter.__path__, "convfilter."):
        if module.name.rpartition(".")[2] not in ("__main__", "server", "dask_executor"):  # (Dask: on use)
            importlib.import_module(module.name)
            _end_if_stopped()
    Image.init()  # every Pillow format plugin
    from .cli import make_all_options

    make_all_options()  # (else each child would make the options of its command again)
    import difflib  # noqa: F401  (click's parser imports it on every short option, e.g. -k)
    from .ops import warm_up

    _end_if_stopped()
    warm_up(between=_end_if_stopped)
    gc.collect()
    gc.freeze()  # children's collections skip these objects: fewer pages copied


def main() -> None:
    """Run the server of this installation until it is idle, stopped or terminated."""
    identity = client.identity()  # before warming up changes the environment
    source = client.source_stamp()  # before importing: the code loaded is at least this new
    if len(sys.argv) > 1 and sys.argv[1] != client.socket_name(identity):
        return  # started for another installation or start-up than this interpreter gives
    path = client.folder_path()
    try:
        folder = client.open_folder(path, create=True)
    except client.UnsafeFolder:
        return
    name = client.socket_name(identity)
    lock = os.open(client.lock_path(path, name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another server of this installation is starting or running
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())  # for `server stop` and `status` while warming up
    idle = idle_seconds()
    # Stopped while warming up: end now (there is no socket yet). Through install_held: a plain
    # handler's SystemExit raised inside one of llvmlite's callbacks while Numba compiles is
    # swallowed there, and the server went on warming up and then served.
    for signum in STOP_SIGNALS:
        install_held(signum, _stop_warming, raises=SystemExit)
    warm()
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # until the accept loop takes them
    forget_raised(SystemExit)  # (the commands' children install handlers of their own)
    _end_if_stopped()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address = client.through(folder, name)
    try:
        os.unlink(address)  # left by a server that was killed: we hold the lock, so it is stale
    except FileNotFoundError:
        pass
    listener.bind(address)
    os.chmod(address, 0o600)
    listener.listen(128)
    Server(listener, folder, lock, os.path.join(path, name), idle, identity, source).serve()


_stopped_warming = False


def _stop_warming(signum, frame):
    """A stop while warming up: end now. The SystemExit can still be lost (swallowed by a
    library's ``except BaseException`` or ``except:`` around an import, say), so the stop is
    also noted, and :func:`_end_if_stopped` ends the warm-up at its next step and before the
    server would serve."""
    global _stopped_warming
    _stopped_warming = True
    raise SystemExit(0)


def _end_if_stopped() -> None:
    if _stopped_warming:
        raise SystemExit(0)


class Server:
    """The accept loop: one forked child per command; status and stop answered directly.

    A spare child is forked ahead, while the server is idle, and waits on a
    socket pair: a command is handed to it (the client's connection and
    descriptors), so the client never waits for a fork.
    """

    def __init__(self, listener: socket.socket, folder: int, lock: int, path: str, idle: float,
                 identity: dict, source: int):
        self.listener, self.folder, self.lock, self.path, self.idle = listener, folder, lock, path, idle
        self.identity = _as_sent(identity)
        self.source = source
        self.inode = os.stat(client.through(folder, os.path.basename(path))).st_ino
        self.started = time.time()
        self.last_request = time.monotonic()
        self.requests = 0
        self.children_cpu = 0.0  # seconds of CPU the finished commands used
        self.children: set[int] = set()  # running commands
        self.spare: tuple[int, socket.socket] | None = None  # (pid, our end of its socket pair)
        self.stopping = False
        self.wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def serve(self) -> None:
        signal.set_wakeup_fd(self.wake_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes select through the pipe
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._stop)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # (a stop sent since warm-up ends now)
        try:
            while not self.stopping:
                self._reap()
                if not self.children and time.monotonic() - self.last_request >= self.idle:
                    break
                if self.spare is None and not self.children:
                    # (not while a command runs: forking this big process would take CPU from it)
                    self._fork_spare()
                timeout = min(CHECK_SECONDS, max(0.0, self.idle - (time.monotonic() - self.last_request)))
                ready, _, _ = select.select([self.listener, self.wake_read], [], [],
                                            None if self.children else timeout)
                if not ready and installation_changed(self.source):
                    break
                if self.wake_read in ready:
                    while _drain(self.wake_read):
                        pass
                if self.listener in ready and not self.stopping:
                    self._accept()
        finally:
            self._remove_socket()
            if self.spare is not None:
                self.spare[1].close()  # the spare sees the end of its socket pair and exits

    def _stop(self, signum, frame) -> None:
        self.stopping = True

    def _reap(self) -> None:
        if self.spare is not None and os.waitpid(self.spare[0], os.WNOHANG)[0]:
            self.spare[1].close()  # killed while waiting: fork another
            self.spare = None
        for pid in list(self.children):
            try:
                done, _, usage = os.wait4(pid, os.WNOHANG)
                self.children_cpu += usage.ru_utime + usage.ru_stime
            except ChildProcessError:
                done = pid
            if done:
                self.children.discard(pid)
                self.last_request = time.monotonic()

    def _remove_socket(self) -> None:
        try:
            address = client.through(self.folder, os.path.basename(self.path))
            if os.stat(address).st_ino == self.inode:  # not a newer server's socket
                os.unlink(address)
        except OSError:
            pass
        self.listener.close()

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        fds: list[int] = []
        try:
            credentials = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _, uid, _ = struct.unpack("3i", credentials)
            if uid != os.getuid():
                return
            conn.settimeout(REQUEST_TIMEOUT)
            channel = Channel(conn)
            request, fds = channel.receive(max_fds=4)
            operation = request and request.get("op")
            if operation == "status":
                send_message(conn, self.status())
            elif operation == "stop":
                send_message(conn, {"pid": os.getpid()})
                self.stopping = True
            elif operation == "run" and len(fds) == 4:
                self.last_request = time.monotonic()
                refusal = self.refusal(request)
                if refusal:
                    send_message(conn, {"in_process": refusal})
                else:
                    self._hand_over(conn, request, fds)
        except (OSError, ValueError):
            pass
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()

    def refusal(self, request: dict) -> str | None:
        """Why this client must run the command in its own process, or None.

        A client whose package files are newer than this server's (an edited
        checkout) also stops the server: the next command starts a new one.
        """
        if request.get("identity") != self.identity:
            return "another installation or start-up"
        if request.get("source") != self.source:
            self.stopping = request.get("source", 0) > self.source
            return "the package's files changed since the server started"
        if request.get("context") != _as_sent(client.context()):
            return "other limits, cgroup, namespace or groups"
        return None

    def status(self) -> dict:
        return {"pid": os.getpid(), "version": client.__version__, "socket": self.path,
                "package": client.PACKAGE_DIR, "uptime": time.time() - self.started,
                "requests": self.requests, "running": len(self.children), "idle": self.idle,
                "cpu": time.process_time() + self.children_cpu}

    def _hand_over(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        """Give the command to the spare child (forked now if there is none)."""
        if self.spare is None:
            self._fork_spare()
        pid, pair = self.spare
        self.spare = None
        try:
            send_message(pair, request, [conn.fileno(), *fds])
        finally:
            pair.close()
        self.children.add(pid)
        self.requests += 1

    def _fork_spare(self) -> None:
        ours, theirs = socket.socketpair()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, CHILD_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    ours.close()
                    self._close_in_child()
                    code = Child.wait_for_command(theirs)
                finally:
                    os._exit(code)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        theirs.close()
        self.spare = (pid, ours)

    def _close_in_child(self) -> None:
        """The child keeps nothing of the server: socket, lock (else it would outlive the server), pipe."""
        signal.set_wakeup_fd(-1)
        self.listener.close()
        for fd in (self.folder, self.lock, self.wake_read, self.wake_write):
            os.close(fd)


def installation_changed(source: int) -> bool:
    """Whether the package's files differ from those of ``source`` (:func:`client.source_stamp`),
    or are gone."""
    try:
        return client.source_stamp() != source
    except OSError:  # the package folder was removed (uninstalled)
        return True


def _drain(fd: int) -> bool:
    try:
        return bool(os.read(fd, 512))
    except BlockingIOError:
        return False


# --- one command in a forked child -----------------------------------------------------------


class Child:
    """Becomes the client's process (descriptors, folder, environment...) and runs its command."""

    def __init__(self, conn: socket.socket, channel: Channel, request: dict, fds: list[int]):
        self.conn, self.channel, self.request = conn, channel, request
        # move the descriptors above 2, so that placing them on 0, 1 and 2 never closes one of them
        self.fds = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in fds]
        for fd in fds:
            os.close(fd)
        fds.clear()

    @classmethod
    def wait_for_command(cls, pair: socket.socket) -> int:
        """The spare's life: wait for a command (or the server's end), run it; the exit code.

        Signals keep their default actions while waiting (SIGTERM ends a
        spare at once) and are held from the command's arrival until it runs.
        """
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, CHILD_SIGNALS)
        prepare_memory()
        request, fds = Channel(pair).receive(max_fds=5)
        signal.pthread_sigmask(signal.SIG_BLOCK, CHILD_SIGNALS)
        pair.close()
        if request is None or len(fds) != 5:
            return 0
        conn = socket.socket(fileno=fds[0])
        conn.settimeout(None)  # blocking (the server's accepted connection had a time limit)
        return cls(conn, Channel(conn), request, fds[1:]).run()

    def run(self) -> int:
        """Take over the client's CPU affinity and priority (else refuse) and run the command."""
        try:
            os.sched_setaffinity(0, self.request["affinity"])
            os.setpriority(os.PRIO_PROCESS, 0, self.request["nice"])
        except (OSError, KeyError, TypeError):
            send_message(self.conn, {"in_process": "its CPU affinity or priority cannot be taken over"})
            return 0
        os.setpgid(0, 0)  # the client signals this group as a terminal signals a job
        # No time limit on the go-ahead: the client either sends it or, having given up waiting
        # for this reply, closes its end.
        send_message(self.conn, {"pid": os.getpid()})
        go, _ = self.channel.receive()
        if not go or not go.get("go"):
            return 0  # the client gave up waiting and runs the command itself
        self.become_client()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, CHILD_SIGNALS)
        code = run_command(self.request["argv"])
        try:
            send_message(self.conn, {"exit": code})
        except OSError:
            pass
        return code

    def become_client(self) -> None:
        stdin, stdout, stderr, cwd = self.fds
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
        os.fchdir(cwd)
        for fd in self.fds:
            os.close(fd)
        os.umask(self.request["umask"])
        os.environ.clear()
        os.environ.update(self.request["environ"])
        sys.argv = ["convfilter", *self.request["argv"]]
        reopen_stdio()
        import warnings

        warnings._filters_mutated()  # warnings the server has shown once show again


MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD = -3, -1  # mallopt() parameters (glibc's malloc.h)
HEAP_BLOCKS = 32 << 20  # blocks up to this size come from the heap (glibc's largest threshold)


def prepare_memory() -> None:
    """Let the command reuse the memory it frees instead of mapping in new pages for every array.

    glibc gives each large block (an image's arrays) pages of its own, mapped
    on allocation and unmapped when freed, so every array of a new process
    costs a page fault per 4 KB: about a fifth of one photo's faults repeat
    pages freed earlier in the same command. Here blocks up to
    ``HEAP_BLOCKS`` come from the heap, which is not trimmed back below
    twice that. Allocation sizes and results are unchanged. (Touching the
    memory ahead, while the spare waits, saved another third of the faults
    when commands came one by one, but cost more CPU than it saved and slowed
    back-to-back commands on a busy machine.) Not glibc: nothing is done.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(MALLOC_MMAP_THRESHOLD, HEAP_BLOCKS)
    mallopt(MALLOC_TRIM_THRESHOLD, 2 * HEAP_BLOCKS)


def _as_sent(value):
    """``value`` as the client's message carries it."""
    return marshal.loads(marshal.dumps(value))


def reopen_stdio() -> None:
    """``sys.stdin``/``stdout``/``stderr`` on descriptors 0-2, set up as Python sets them at start-up.

    Encoding and errors are the server's (its locale variables are the
    client's: they are part of the identity); stdout is line-buffered on a
    terminal, stderr always.
    """
    import io

    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        previous = getattr(sys, name)
        raw = io.FileIO(fd, "rb" if fd == 0 else "wb", closefd=False)
        raw.name = f"<{name}>"
        buffered = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
        text = io.TextIOWrapper(buffered, encoding=previous.encoding, errors=previous.errors, newline="\n",
                                line_buffering=fd == 2 or raw.isatty(), write_through=previous.write_through)
        text.mode = "r" if fd == 0 else "w"
        setattr(sys, name, text)
        setattr(sys, f"__{name}__", text)


def run_command(argv: list[str]) -> int:
    """Run the click command, then end as the interpreter would (threads, atexit, flushing)."""
    import atexit
    import threading
    import traceback

    from .cli import main as cli_main

    try:
        cli_main(argv)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    threading._shutdown()  # what the interpreter does at exit: wait for non-daemon threads
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception as exc:  # as the interpreter reports a failed flush at exit
            if stream is sys.stdout:
                code = 120
            try:
                sys.stderr.write(f"Exception ignored in: {stream!r}\n"
                                 + "".join(traceback.format_exception_only(type(exc), exc)))
                sys.stderr.flush()
            except Exception:
                pass
    return code


def _exit_code(value) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    try:
        sys.stderr.write(f"{value}\n")
    except Exception:
        pass
    return 1


# --- `convfilter server start|stop|status` (standard library only) ----------------------------


def _ask(operation: str, environ) -> dict | None:
    """Send one request to the running server; its reply, or None when none answers."""
    sock = client.connect(client.identity(environ), environ)
    if sock is None:
        return None
    try:
        send_message(sock, {"op": operation})
        reply, _ = Channel(sock).receive()
        return reply
    except (OSError, ValueError):
        return None
    finally:
        sock.close()


def status(environ=os.environ) -> dict | None:
    """The running server's status (pid, version, socket, uptime, requests...), or None."""
    return _ask("status", environ)


def start(environ=os.environ) -> tuple[dict, bool]:
    """Start the server unless it runs; wait until it answers. ``(status, started now)``.

    Raises :class:`client.UnsafeFolder`, or RuntimeError when it could not start.
    """
    info = status(environ)
    if info is not None:
        return info, False
    path = client.folder_path(environ)
    folder = client.open_folder(path, create=True)
    os.close(folder)
    process = client.spawn_server(environ)
    name = client.socket_name(client.identity(environ))
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        info = status(environ)
        if info is not None:
            return info, True
        if process.poll() is not None and not client.server_starting_or_running(path, name):
            break
        time.sleep(0.05)
    raise RuntimeError(f"the server did not start (exit status {process.poll()})")


def warming_up(environ=os.environ) -> int | None:
    """The pid of this installation's server while it warms up (it has no socket yet), or None.

    The server writes its pid into its lock file once it holds the lock; the
    pid counts only while the lock is held and that process is the server
    started for this socket name.
    """
    path = client.folder_path(environ)
    try:
        folder = client.open_folder(path, create=False)
    except client.UnsafeFolder:
        return None
    if folder is None:
        return None
    os.close(folder)
    name = client.socket_name(client.identity(environ))
    deadline = time.monotonic() + 1.0  # (a server that has just taken the lock writes its pid next)
    while client.server_starting_or_running(path, name):
        try:
            with open(client.lock_path(path, name)) as handle:
                pid = int(handle.read() or 0)
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if pid and name.encode() in handle.read().split(b"\0"):
                    return pid
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)
    return None


class StillRunning(RuntimeError):
    """The server's process outlived ``STOP_TIMEOUT`` after it was asked to stop."""


def stop(environ=os.environ) -> int | None:
    """Ask the server to exit (one still warming up is terminated) and wait until its process is
    gone; its pid, or None if none ran. Raises :class:`StillRunning` when it is still there
    ``STOP_TIMEOUT`` seconds later."""
    reply = _ask("stop", environ)
    if reply:
        pid = reply["pid"]
    else:
        pid = warming_up(environ)
        if pid is None:
            return None
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return pid
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _alive(pid):
        raise StillRunning(f"the convfilter server (pid {pid}) is still running {STOP_TIMEOUT:g} s "
                           "after it was asked to stop")
    return pid


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to collect it has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError as exc:
            return exc.errno == errno.EPERM
        return True
