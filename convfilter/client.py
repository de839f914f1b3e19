"""The ``convfilter`` command: hand the command to a warm server, or run it in this process.

Importing numpy, Pillow and Numba and loading the compiled kernels takes
about half a second, more than the work on one image. A per-user server
(:mod:`convfilter.server`) keeps all of that loaded and forks one child per
command. This module imports the standard library only, and of it only what
Python has loaded anyway plus ``_socket`` (no ``socket``, ``signal``, ``json``
or ``re``: each would add milliseconds to every command): it connects to
the server of this exact installation, passes the command line, the
working folder, the environment, the umask and the stdin/stdout/stderr
descriptors themselves, forwards signals to the child and exits with its
exit code. Messages are :mod:`marshal` data, which both ends have built in;
the server takes them only from its own user (``SO_PEERCRED``), who could
run any code anyway.

When no server can be used the command runs in this process, as it always
did, and a server is started in the background for the next command. Light
commands (``--help``, ``--version``, ``kernels``, ``shape``, ``server``,
``warmup``) always run here: they never wait on anything slow.
"""

from __future__ import annotations

import _signal
import marshal
import os
import sys

from . import __version__

SERVER_VARIABLE = "CONVFILTER_SERVER"  # "off" (or 0/no/false): always run in this process
IDLE_VARIABLE = "CONVFILTER_SERVER_IDLE"  # seconds without a command before the server exits
DEFAULT_IDLE = 900.0
REPLY_TIMEOUT = 10.0  # a server that does not take the command within this runs it here instead
LIGHT_COMMANDS = {"kernels", "shape", "server", "warmup"}
LIGHT_OPTIONS = {"-h", "--help", "-V", "--version"}
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Variables read once at start-up (by Python, locale or Numba): a server started with other
# values would not behave like this process, so they are part of the server's identity.
STARTUP_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONUNBUFFERED",
                     "LC_ALL", "LC_CTYPE", "LANG")
# convfilter reads these itself when it needs them (and sets the cache folder and the plain
# messages for Numba)
RUNTIME_NUMBA_VARIABLES = ("NUMBA_NUM_THREADS", "NUMBA_CACHE_DIR", "NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING")
# What the kernel enforces per process; a client with other limits runs here, so they hold.
LIMITS = ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_RSS", "RLIMIT_STACK", "RLIMIT_MEMLOCK", "RLIMIT_FSIZE",
          "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_NPROC")
FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
EXIT_LOST = 1


class UnsafeFolder(Exception):
    """The socket folder exists but is not private to this user: it is never used."""


# --- what must match between client and server -----------------------------------------------


def supported() -> bool:
    """Fork, Unix sockets, descriptor passing and peer credentials (Linux)."""
    try:
        import _socket
    except ImportError:
        return False
    return (hasattr(os, "fork") and hasattr(_socket, "AF_UNIX") and hasattr(_socket, "SCM_RIGHTS")
            and hasattr(_socket, "SO_PEERCRED") and hasattr(_socket.socket, "sendmsg"))


def disabled(environ=os.environ) -> bool:
    return environ.get(SERVER_VARIABLE, "").strip().lower() in ("off", "0", "no", "false")


def is_light(argv: list[str]) -> bool:
    """Commands that are fast without the server, so never wait for one."""
    words = argv[: argv.index("--")] if "--" in argv else argv
    if not words or LIGHT_OPTIONS.intersection(words):
        return True
    return words[0] in LIGHT_COMMANDS


def identity(environ=os.environ) -> dict:
    """This installation (version, package folder, interpreter) and how Python was started."""
    return {
        "version": __version__,
        "package": PACKAGE_DIR,
        "executable": os.path.realpath(sys.executable),
        "prefix": sys.prefix,
        "flags": list(sys.flags),
        "options": [list(sys.warnoptions), sorted(map(str, sys._xoptions.items()))],
        "environment": sorted((name, value) for name, value in environ.items()
                              if name in STARTUP_VARIABLES
                              or (name.startswith("NUMBA_") and name not in RUNTIME_NUMBA_VARIABLES)),
    }


def source_stamp() -> int:
    """The newest modification time of the package's Python files, so that a server never runs
    code older than the client's (an edited checkout)."""
    newest, folders = 0, [PACKAGE_DIR]
    while folders:
        for entry in os.scandir(folders.pop()):
            if entry.name.endswith(".py"):
                newest = max(newest, entry.stat().st_mtime_ns)
            elif entry.is_dir() and entry.name != "__pycache__":
                folders.append(entry.path)
    return newest


def context() -> dict:
    """What a child of the server cannot take over from the client: if it differs, run here."""
    root = os.stat("/")
    return {
        "limits": _read("/proc/self/limits") or _limits(),
        "cgroup": _read("/proc/self/cgroup"),
        "mount_namespace": _readlink("/proc/self/ns/mnt"),
        "root": [root.st_dev, root.st_ino],
        "user": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), sorted(os.getgroups())],
    }


def _limits() -> dict:
    """The resource limits, where ``/proc`` cannot tell them."""
    import resource

    return {name: list(resource.getrlimit(getattr(resource, name))) for name in LIMITS
            if hasattr(resource, name)}


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


# --- where the socket lives ------------------------------------------------------------------


def folder_path(environ=os.environ) -> str:
    """``$XDG_RUNTIME_DIR/convfilter``, else ``$XDG_CACHE_HOME/convfilter/server`` (or ``~/.cache``)."""
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "convfilter")
    cache = environ.get("XDG_CACHE_HOME")
    if not (cache and os.path.isabs(cache)):
        cache = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "convfilter", "server")


def socket_name(ident: dict) -> str:
    """One socket per installation and start-up: ``convfilter-VERSION-CHECKSUM.sock``."""
    return f"convfilter-{__version__}-{checksum(repr(sorted(ident.items())).encode()):08x}.sock"


def checksum(data: bytes) -> int:
    """32-bit FNV-1a of ``data`` (``zlib.crc32`` would load a library for a few hundred bytes)."""
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def open_folder(path: str, create: bool) -> int | None:
    """A descriptor of the private socket folder, or None when it does not exist (and not ``create``).

    The folder must be a real folder (not a symlink) owned by this user with
    no access for anyone else (0700); otherwise :class:`UnsafeFolder`. The
    sockets are reached through this descriptor (``/proc/self/fd/N/NAME``),
    so the folder checked is the folder used.
    """
    if create:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnsafeFolder(f"{path}: {exc.strerror} (a symlink or not a folder?)") from None
    info = os.fstat(fd)
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        os.close(fd)
        raise UnsafeFolder(f"{path} must belong to you with mode 0700 (it has owner uid {info.st_uid}, "
                           f"mode {info.st_mode & 0o777:04o}); remove it or fix it")
    return fd


def through(folder_fd: int, name: str) -> str:
    """The path of ``name`` inside the open folder: short (socket paths are limited to ~100 bytes)."""
    return f"/proc/self/fd/{folder_fd}/{name}"


# --- messages: a length, then marshal data, descriptors attached to the first bytes ----------


def send_message(sock, message: dict, fds: list[int] = ()) -> None:
    """Send ``message`` (plain data: dicts, lists, strings, numbers) and pass ``fds`` with it."""
    import _socket

    data = marshal.dumps(message)  # strings with lone surrogates (odd file names) go through as they are
    frame = len(data).to_bytes(4, "big") + data
    sent = 0
    if fds:
        rights = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)  # C ints
        sent = sock.sendmsg([frame], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
    if sent < len(frame):  # (never an empty send: the reader may have taken it all and gone)
        sock.sendall(frame[sent:])


class Channel:
    """Reads length-prefixed messages (and descriptors sent with them) from a stream socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def receive(self, max_fds: int = 0) -> tuple[dict | None, list[int]]:
        """The next message and its descriptors; ``(None, [])`` at the end of the stream."""
        fds: list[int] = []
        while True:
            if len(self.buffer) >= 4:
                size = int.from_bytes(self.buffer[:4], "big")
                if len(self.buffer) >= 4 + size:
                    data, self.buffer = self.buffer[4:4 + size], self.buffer[4 + size:]
                    return marshal.loads(data), fds
            if max_fds and not fds:
                import socket  # (the server's side: it has everything loaded)

                chunk, received, _, _ = socket.recv_fds(self.sock, 1 << 16, max_fds)
                fds = list(received)
            else:
                chunk = self.sock.recv(1 << 16)
            if not chunk:
                for fd in fds:
                    os.close(fd)
                return None, []
            self.buffer += chunk


def connect(ident: dict, environ=os.environ):
    """A connection to this installation's server, or None if there is none (or it is not safe)."""
    try:
        folder = open_folder(folder_path(environ), create=False)
    except UnsafeFolder:
        return None
    if folder is None:
        return None
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(REPLY_TIMEOUT)
        sock.connect(through(folder, socket_name(ident)))
    except OSError:
        sock.close()
        return None
    finally:
        os.close(folder)
    return sock  # a bare ``_socket.socket``: ``socket.socket`` would import enum, selectors...


# --- the client --------------------------------------------------------------------------------


class Forwarder:
    """Signal handlers that pass SIGINT/SIGTERM/SIGHUP on to the child once its pid is known.

    SIGINT and SIGHUP go to the child's process group, as a terminal sends
    them to a whole foreground job (workers included); SIGTERM to the child
    only, as ``kill`` would.
    """

    def __init__(self):
        self.child: int | None = None
        self.pending: list[int] = []
        self.received: list[int] = []
        self.previous = {}
        for name in FORWARDED_SIGNALS:
            signum = getattr(_signal, name, None)
            if signum is not None:
                self.previous[signum] = _signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        self.received.append(signum)
        if self.child is None:
            self.pending.append(signum)
        else:
            self._send(signum)

    def _send(self, signum):
        try:
            if signum == _signal.SIGTERM:
                os.kill(self.child, signum)
            else:
                os.killpg(self.child, signum)
        except ProcessLookupError:
            pass

    def start(self, child: int) -> None:
        self.child = child
        for signum in self.pending:
            self._send(signum)
        self.pending.clear()

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            _signal.signal(signum, handler)


def run_through_server(argv: list[str], environ=os.environ) -> int | None:
    """Run the command in the server and return its exit code, or None to run it in this process.

    None means that nothing was done: no server, a server that refused (other
    limits or cgroup), or one that did not answer in time. Once the server
    has taken the command, its end is reported here whatever happens.
    """
    ident = identity(environ)
    try:
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        cwd = os.open(".", os.O_PATH | os.O_CLOEXEC)
    forwarder = Forwarder()
    sock = None
    try:
        mask = os.umask(0o022)
        os.umask(mask)
        request = {"op": "run", "identity": ident, "source": source_stamp(), "context": context(),
                   "argv": list(argv),
                   "environ": dict(environ), "umask": mask, "affinity": sorted(os.sched_getaffinity(0)),
                   "nice": os.getpriority(os.PRIO_PROCESS, 0)}
        sock = connect(ident, environ)  # only now: the server waits for the request once connected
        if sock is None:
            return None
        send_message(sock, request, [0, 1, 2, cwd])
        os.close(cwd)
        cwd = None
        channel = Channel(sock)
        reply, _ = channel.receive()
        if not reply or "pid" not in reply:
            return None  # refused, or the server went away before taking the command
        # The child waits for this go-ahead without a time limit (it sees our end if we give up
        # first), so from here on the command runs there, never twice.
        sock.settimeout(None)
        send_message(sock, {"go": True})
        forwarder.start(reply["pid"])
        try:
            end, _ = channel.receive()
        except OSError:
            end = None
        if end is not None and "exit" in end:
            return end["exit"]
        if _signal.SIGHUP in forwarder.received:  # the child died of the hang-up: so does this process
            forwarder.restore()
            os.kill(os.getpid(), _signal.SIGHUP)
        os.write(2, b"Error: the convfilter server stopped before the command finished; run it again "
                    b"(CONVFILTER_SERVER=off runs it without the server)\n")
        return EXIT_LOST
    except (OSError, ValueError):  # timed out or refused before the command was taken
        return None
    finally:
        if cwd is not None:
            os.close(cwd)
        if sock is not None:
            sock.close()
        forwarder.restore()
        for signum in forwarder.pending:  # arrived before any child: this process takes them
            os.kill(os.getpid(), signum)


def lock_path(folder: str, name: str) -> str:
    return os.path.join(folder, name.removesuffix(".sock") + ".lock")


def server_starting_or_running(folder: str, name: str) -> bool:
    """Whether a server holds this installation's lock (it takes it before warming up)."""
    import fcntl

    try:
        fd = os.open(lock_path(folder, name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def spawn_server(environ=os.environ):
    """Start this installation's server, fully detached; the ``subprocess.Popen``, or None if not started.

    New session, working folder ``/``, every descriptor on ``/dev/null``:
    it never holds a caller's pipe or terminal open.
    """
    import subprocess

    paths = [os.path.abspath(p or ".") for p in sys.path]
    cwd, parent = os.getcwd(), os.path.dirname(PACKAGE_DIR)
    # a `python -m` in some folder has that folder first: keep it only if it holds this package
    paths = [p for p in paths if p != cwd or p == parent]
    if parent not in paths:
        paths.insert(0, parent)
    code = f"import sys; sys.path[:] = {paths!r}; from convfilter.server import main; main()"
    command = [sys.executable, *subprocess._args_from_interpreter_flags(), "-c", code,
               socket_name(identity(environ))]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd="/", env=dict(environ), close_fds=True,
                            start_new_session=True)


def start_for_next_time(environ=os.environ) -> None:
    """Start a server in the background unless one is there or starting (or its folder is unsafe)."""
    try:
        path = folder_path(environ)
        folder = open_folder(path, create=True)
        if folder is not None:
            os.close(folder)
        if not server_starting_or_running(path, socket_name(identity(environ))):
            spawn_server(environ)
    except (OSError, UnsafeFolder):
        pass


def run_in_process(argv: list[str]) -> None:
    from .cli import main as cli_main

    cli_main(argv)


def main(argv: list[str] | None = None) -> None:
    """The console script and ``python -m convfilter`` (``argv`` None: this process's arguments).

    When the server ran the command of this process, the process ends at
    once with its exit code: it has nothing left to write or clean up, and
    the interpreter's shutdown would add a few milliseconds to every command.
    """
    own = argv is None
    argv = sys.argv[1:] if own else list(argv)
    use_server = supported() and not disabled() and not is_light(argv)
    if use_server:
        code = run_through_server(argv)
        if code is not None:
            if own:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except (OSError, ValueError):
                        pass
                os._exit(code)
            sys.exit(code)
    try:
        run_in_process(argv)
    finally:
        if use_server:
            start_for_next_time()
