"""What the test files share: the real command in a subprocess, small real images, a folder tree,
and a convfilter server that never touches the user's own folders and never outlives the session.

Plain helpers are imported by the test files (``from conftest import run_convfilter``); the
fixtures (``cwd``, ``photo``, ``tree``) reach every test by name.

Every subprocess inherits ``XDG_RUNTIME_DIR`` pointing at a temporary folder, so a server
started by a test (on purpose, or by a command that found none) has its socket there. By default
``CONVFILTER_SERVER=off``: commands run in their own process unless a test asks for the server
(the ``cli_env`` fixture runs a test both ways). ``CONVFILTER_TEST_SERVER=1 pytest`` instead runs
every subprocess of the suite through servers (started as users get them: by the first command).
At the end of the session every server whose environment names that folder is stopped.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_images"
# Processes the tests start that import this file again (Dask or spawned workers unpickling a
# test's function) share the session's folder instead of leaving one of their own behind.
RUNTIME = os.environ.get("CONVFILTER_TEST_RUNTIME") or tempfile.mkdtemp(prefix="convfilter-test-run-")
OWNS_RUNTIME = "CONVFILTER_TEST_RUNTIME" not in os.environ
os.environ["CONVFILTER_TEST_RUNTIME"] = RUNTIME
THROUGH_SERVERS = os.environ.get("CONVFILTER_TEST_SERVER") == "1"
os.environ["XDG_RUNTIME_DIR"] = RUNTIME
# Dask's schedulers, workers and clients (in this process and the commands it starts) keep their
# scratch space and lock files there too, not in the shared temporary folder
os.environ["DASK_TEMPORARY_DIRECTORY"] = os.path.join(RUNTIME, "dask")
if THROUGH_SERVERS:
    os.environ.pop("CONVFILTER_SERVER", None)
else:
    os.environ["CONVFILTER_SERVER"] = "off"
# subprocesses run this checkout's package, however (or whether) it is installed
CHECKOUT_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
# A suite started with SIGINT ignored (a background job of a non-interactive shell, nohup) would
# pass that on to every command it starts, and the tests of Ctrl-C would find it ignored, as a
# command run in the background rightly does. The commands start as a terminal starts them: a
# handler (not an ignored signal) is reset to the default in the processes this one starts.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)



def _docs_script(name: str):
    """A script of docs/ (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# writes docs/reference.md; its command_paths() walks every command, so tests cover new ones too
cli_reference = _docs_script("cli_reference")

GOOD = ["a.jpg", "b.png", "sub/c.jpg", "sub/deeper/d.png"]
BROKEN = ["sub/trunc.jpg", "garbage.png"]


def run_convfilter(*args, cwd, text: bool = True, timeout: float = 120, **options) -> subprocess.CompletedProcess:
    """Run ``python -m convfilter ARGS`` in a real subprocess in ``cwd``, capturing its output.

    ``options`` go to :func:`subprocess.run` (``env``, ``input``, ``stdin``, ``preexec_fn``...).
    """
    return subprocess.run([sys.executable, "-m", "convfilter", *map(str, args)], cwd=cwd, capture_output=True,
                          text=text, timeout=timeout, **options)


def picture(path: Path, seed: int, size=(24, 32)) -> None:
    """A seeded noise RGB image at ``path`` (its format from the extension), folders created."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def files_under(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), to compare whole output trees."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    """A fresh working folder for the test (outputs without -o land here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def photo(cwd) -> Path:
    """A small smooth RGB photo with texture: 23x31, so every stride and pool has leftovers."""
    rows, cols = np.mgrid[0:23, 0:31]
    rng = np.random.default_rng(5)
    rgb = np.stack([rows * 10, cols * 8, (rows * cols) % 256], axis=2) + rng.integers(0, 20, (23, 31, 3))
    path = cwd / "photo.png"
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    """Good images in nested folders, a truncated JPEG, a garbage PNG, a text file, an empty folder."""
    root = tmp_path / "tree"
    for seed, name in enumerate(GOOD):
        picture(root / name, seed)
    whole = (root / "a.jpg").read_bytes()
    (root / "sub" / "trunc.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    (root / "notes.txt").write_text("a text file, not an image\n")
    (root / "empty").mkdir()
    return root


def server_processes(runtime: str = RUNTIME) -> list[int]:
    """Pids of convfilter servers started with this runtime folder (warming up or serving)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"convfilter.server" in command and f"XDG_RUNTIME_DIR={runtime}".encode() in environ:
            found.append(int(entry))
    return found


def stop_servers(runtime: str = RUNTIME) -> None:
    """SIGTERM (the server's own clean stop), then SIGKILL what still runs after 10 s."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        pids = server_processes(runtime)
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if running(pid)]
            time.sleep(0.05)


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet collected by its parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(autouse=True)
def fresh_plans():
    """Each test starts and ends without the plans worked out once per shape (see
    ``conv_paths.forget_plans``): a test that changes a threshold gets plans made by it, and
    leaves none made by it behind."""
    def forget():
        conv_paths = sys.modules.get("convfilter.conv_paths")
        if conv_paths is not None:
            conv_paths.forget_plans()

    forget()
    yield
    forget()


@pytest.fixture(scope="session", autouse=True)
def no_server_outlives_the_session():
    yield
    stop_servers()


def pytest_unconfigure(config):
    """The folder goes at the very end, also when no test ran (a mistyped test id)."""
    if OWNS_RUNTIME:
        shutil.rmtree(RUNTIME, ignore_errors=True)


@pytest.fixture(scope="session")
def server_env():
    """The environment of a client whose server is up (started now, warm, in the test folder)."""
    env = {key: value for key, value in CHECKOUT_ENV.items() if key != "CONVFILTER_SERVER"}
    started = run_convfilter("server", "start", cwd=ROOT, env=env, timeout=900)
    assert started.returncode == 0, started.stderr
    yield env
    run_convfilter("server", "stop", cwd=ROOT, env=env)


def requests_served(env) -> int:
    """The ``requests`` line of ``convfilter server status``."""
    done = run_convfilter("server", "status", cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return int(next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("requests")))


@pytest.fixture(params=["server", "in-process"])
def cli_env(request):
    """Run the test twice: through a warm server (checked to have served it), and with
    ``CONVFILTER_SERVER=off``."""
    if request.param == "in-process":
        yield {**CHECKOUT_ENV, "CONVFILTER_SERVER": "off"}
        return
    env = request.getfixturevalue("server_env")
    before = requests_served(env)
    yield env
    assert requests_served(env) > before, "the commands of this test did not go through the server"
