"""The warm server behind the ``convfilter`` command, in real processes, as a user meets it.

Each test that needs a server of its own gives it its own runtime folder (``own_runtime``) and
stops it; ``server_env`` (conftest) is one warm server shared by the session.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import (CHECKOUT_ENV, ROOT, requests_served, run_convfilter, running, server_processes,
                      stop_servers)

CHINA = ROOT / "sample_images" / "china.jpg"
HEAVY = ("numpy", "numba", "PIL", "click")


def convfilter(*args, env, cwd=ROOT, **options) -> subprocess.CompletedProcess:
    """``python -m convfilter ARGS`` with ``env``; bytes out unless ``text=True``."""
    options.setdefault("text", False)
    options.setdefault("timeout", 300)
    return run_convfilter(*args, cwd=cwd, env=env, **options)


def noise_images(folder: Path, count: int, size=(120, 160), seed=3) -> list[str]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        name = f"img{index:02d}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / name)
        names.append(name)
    return names


def wait_for(condition, timeout=120.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def status_of(env) -> dict:
    done = convfilter("server", "status", env=env, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(line.split(None, 1) for line in done.stdout.splitlines())


@pytest.fixture
def own_runtime(tmp_path):
    """A client environment with a runtime folder (and so servers) of this test only."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {key: value for key, value in CHECKOUT_ENV.items() if key != "CONVFILTER_SERVER"}
    env["XDG_RUNTIME_DIR"] = str(runtime)
    yield env
    stop_servers(str(runtime))
    assert server_processes(str(runtime)) == []


def start_server(env) -> dict:
    done = convfilter("server", "start", env=env, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return status_of(env)


# --- the client -------------------------------------------------------------------------------


def test_the_client_decides_with_the_standard_library_only(server_env, tmp_path):
    """Through the server the client never imports numpy, Numba, Pillow or click; without one it
    has imported none of them when it decides to run in-process."""
    code = (
        "import sys\n"
        "from convfilter import client\n"
        "heavy = lambda: sorted(m for m in %r if m in sys.modules)\n"
        "client.run_in_process = lambda argv: print('IN-PROCESS', heavy())\n"
        "try:\n"
        "    client.main(['apply', '-k', 'vertical', %r, '-o', 'out.png'])\n"
        "finally:\n"
        "    print('HEAVY', heavy())\n" % (HEAVY, str(CHINA))
    )
    through = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=server_env, capture_output=True,
                             text=True, timeout=120)
    assert through.returncode == 0, through.stderr
    assert through.stdout == "HEAVY []\n" and through.stderr == "wrote out.png\n"
    assert (tmp_path / "out.png").exists()
    alone = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**server_env, "CONVFILTER_SERVER": "off"},
                           capture_output=True, text=True, timeout=120)
    assert alone.stdout.splitlines() == ["IN-PROCESS []", "HEAVY []"], alone.stderr


def test_through_the_server_the_client_loads_only_its_own_modules_and_the_socket_library(server_env, tmp_path):
    """Every module the client imports costs each command its import time: beyond what the
    interpreter has loaded when it starts, it needs only its package and ``_socket``."""
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from convfilter import client\n"
        "try:\n"
        "    client.main(['apply', '-k', 'vertical', %r, '-o', 'out.png'])\n"
        "finally:\n"
        "    print('ADDED', sorted(set(sys.modules) - before))\n" % str(CHINA)
    )
    through = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=server_env, capture_output=True,
                             text=True, timeout=120)
    assert through.returncode == 0, through.stderr
    assert through.stdout == "ADDED ['_socket', 'convfilter', 'convfilter.client']\n", through.stderr


def test_sixteen_concurrent_clients_equal_sixteen_in_process_runs(server_env, tmp_path):
    names = noise_images(tmp_path / "in", 16)
    outputs = {}
    for mode, env in (("server", server_env), ("off", {**server_env, "CONVFILTER_SERVER": "off"})):
        before = requests_served(server_env)
        done = subprocess.run(
            ["xargs", "-P", "16", "-I", "{}", sys.executable, "-m", "convfilter", "apply", "-k", "sobel-x",
             "-k", "gaussian:5:1", "in/{}", "-o", f"{mode}/"],
            input="\n".join(names) + "\n", cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        served = requests_served(server_env) - before
        assert served == (16 if mode == "server" else 0)
        outputs[mode] = ({p.name: p.read_bytes() for p in (tmp_path / mode).iterdir()},
                         sorted(done.stderr.replace(f"{mode}/", "").splitlines()))
    assert len(outputs["server"][0]) == 32
    assert outputs["server"] == outputs["off"]


def command_child(server_pid: int, cwd: Path) -> int:
    """The server's child running the command started in ``cwd`` (the spare child waits in '/')."""
    def find():
        for pid in children_of(server_pid):
            try:
                if os.readlink(f"/proc/{pid}/cwd") == str(cwd):
                    return pid
            except OSError:
                pass
        return None

    wait_for(find, what="the server's child running the command")
    return find()


@pytest.mark.parametrize("signum, code, message", [(signal.SIGINT, 130, "Error: interrupted"),
                                                   (signal.SIGTERM, 143, "Error: terminated")],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_client_stops_the_command_in_the_server(own_runtime, tmp_path, signum, code, message):
    pid = int(start_server(own_runtime)["pid"])
    names = noise_images(tmp_path, 40, size=(400, 600))
    client = subprocess.Popen([sys.executable, "-m", "convfilter", "apply", "--jobs", "1", "-v", "-k",
                               "gaussian:9:2", "-k", "sobel-x", *names, "-o", "out/"], cwd=tmp_path,
                              env=own_runtime, stderr=subprocess.PIPE, text=True)
    first = client.stderr.readline()
    assert first.startswith("wrote "), first
    child = command_child(pid, tmp_path)
    client.send_signal(signum)
    rest = client.stderr.read()
    assert client.wait(timeout=60) == code, rest
    assert rest.splitlines()[-1] == message and "Traceback" not in rest
    wait_for(lambda: not running(child), timeout=30, what="the child to end")
    written = sorted(os.listdir(tmp_path / "out"))
    assert 0 < len(written) < 2 * len(names)
    assert not [name for name in written if name.startswith(".")], written  # no temporary file
    for name in written:
        with Image.open(tmp_path / "out" / name) as image:
            image.load()
    assert running(pid), "the server itself goes on"


def test_a_terminal_shows_the_progress_bar_through_the_server(own_runtime, tmp_path):
    start_server(own_runtime)
    names = noise_images(tmp_path, 30, size=(300, 400))
    screens = {}
    for mode, env in (("server", own_runtime), ("off", {**own_runtime, "CONVFILTER_SERVER": "off"})):
        main, terminal = pty.openpty()
        process = subprocess.Popen([sys.executable, "-m", "convfilter", "apply", "--jobs", "1", "-k", "sobel-x",
                                    *names, "-o", f"{mode}/"], cwd=tmp_path, env=env, stdin=terminal,
                                   stdout=terminal, stderr=terminal)
        os.close(terminal)
        screen = b""
        while True:
            ready, _, _ = select.select([main], [], [], 120)
            assert ready, "no output from the terminal"
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the terminal's last holder closed it
                break
            if not chunk:
                break
            screen += chunk
        os.close(main)
        assert process.wait(timeout=60) == 0, screen
        screens[mode] = screen.decode()
    for screen in screens.values():
        assert "\r[" in screen and "] 30/30 " in screen and "\x1b[K" in screen  # the bar, drawn
        assert screen.endswith("processed 30, failed 0, skipped 0\r\n")
    assert (sorted(os.listdir(tmp_path / "server")) == sorted(os.listdir(tmp_path / "off")))


def test_the_server_has_one_thread_and_unix_sockets_only(server_env):
    pid = int(status_of(server_env)["pid"])
    assert os.listdir(f"/proc/{pid}/task") == [str(pid)]  # forks are safe: no other thread exists
    sockets = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    sockets = {link[len("socket:["):-1] for link in sockets if link.startswith("socket:[")}
    unix = {line.split()[6] for line in Path("/proc/net/unix").read_text().splitlines()[1:]}
    assert sockets and sockets <= unix


def test_relative_paths_and_the_thread_count_come_from_the_client(own_runtime, tmp_path):
    pid = int(start_server(own_runtime)["pid"])
    (tmp_path / "work").mkdir()
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (1500, 2000), dtype=np.uint8)).save(tmp_path / "big.png")
    most = {}
    for threads in ("1", "3"):
        client = subprocess.Popen([sys.executable, "-m", "convfilter", "apply", "-k", "gaussian:15:3",
                                   "../big.png", "-o", f"maps-{threads}/"], cwd=tmp_path / "work",
                                  env={**own_runtime, "CONVFILTER_NUM_THREADS": threads}, stderr=subprocess.PIPE)
        child = command_child(pid, tmp_path / "work")
        counts = [1]
        while client.poll() is None:
            try:
                counts.append(len(os.listdir(f"/proc/{child}/task")))
            except FileNotFoundError:
                break
            time.sleep(0.002)
        assert client.wait(timeout=120) == 0, client.stderr.read()
        assert client.stderr.read() == f"wrote maps-{threads}/big_gaussian-15-3.png\n".encode()
        most[threads] = max(counts)
    assert most["1"] == 1 and most["3"] >= 3, most
    alone = convfilter("apply", "-k", "gaussian:15:3", "../big.png", "-o", "alone/", cwd=tmp_path / "work",
                       env={**own_runtime, "CONVFILTER_NUM_THREADS": "3", "CONVFILTER_SERVER": "off"})
    assert alone.returncode == 0
    assert (tmp_path / "work" / "alone" / "big_gaussian-15-3.png").read_bytes() == \
        (tmp_path / "work" / "maps-3" / "big_gaussian-15-3.png").read_bytes()


# --- which server, and when not ----------------------------------------------------------------


def socket_name(env) -> str:
    code = "from convfilter import client; print(client.socket_name(client.identity()))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_server_of_another_version_is_never_used(server_env, tmp_path):
    """A client of version 9.9.9 finds no server under its own name, and the server of this version,
    even when reached under its name, refuses it: the command runs in the client."""
    ours = socket_name(server_env)
    code = (
        "import convfilter\n"
        "convfilter.__version__ = '9.9.9'\n"
        "from convfilter import client\n"
        "ident = client.identity()\n"
        "assert ident['version'] == '9.9.9' and client.socket_name(ident) != %r\n"
        "assert client.run_through_server(['apply', '-k', 'vertical', %r]) is None\n"
        "client.socket_name = lambda ident: %r\n"
        "assert client.connect(ident) is not None\n"
        "assert client.run_through_server(['apply', '-k', 'vertical', %r]) is None\n"
        % (ours, str(CHINA), ours, str(CHINA))
    )
    before = requests_served(server_env)
    done = subprocess.run([sys.executable, "-c", code], env=server_env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert requests_served(server_env) == before and os.listdir(tmp_path) == []


def test_a_server_of_another_start_up_is_refused_even_under_our_socket_name(own_runtime, tmp_path):
    other_env = {**own_runtime, "PYTHONPATH": own_runtime["PYTHONPATH"] + os.pathsep + str(tmp_path / "elsewhere")}
    other = start_server(other_env)
    ours = socket_name(own_runtime)
    assert Path(other["socket"]).name != ours
    folder = Path(own_runtime["XDG_RUNTIME_DIR"]) / "convfilter"
    os.rename(other["socket"], folder / ours)
    done = convfilter("apply", "-k", "vertical", CHINA, "-o", "out.png", env=own_runtime, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == b"wrote out.png\n"
    if (folder / ours).exists():  # unless a server of ours, started by that command, took the name
        os.rename(folder / ours, other["socket"])
        assert status_of(other_env)["requests"] == "0"


def test_a_client_with_other_limits_runs_in_its_own_process(server_env, tmp_path):
    """RLIMIT_FSIZE holds only in the client's own process: the server's child would write the file."""
    import resource

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))

    before = requests_served(server_env)
    done = convfilter("apply", "-k", "vertical", CHINA, "-o", "out.png", env=server_env, cwd=tmp_path,
                      preexec_fn=limit_file_size, text=True)
    assert done.returncode == 1 and done.stderr.startswith("Error: "), done.stderr
    assert "too large" in done.stderr.lower(), done.stderr
    assert not (tmp_path / "out.png").exists()
    assert requests_served(server_env) == before  # asked, refused: run in the client


def test_a_server_killed_mid_command_is_one_error_line(own_runtime, tmp_path):
    pid = int(start_server(own_runtime)["pid"])
    names = noise_images(tmp_path, 40, size=(400, 600))
    client = subprocess.Popen([sys.executable, "-m", "convfilter", "apply", "--jobs", "1", "-v", "-k", "sobel-x",
                               *names, "-o", "out/"], cwd=tmp_path, env=own_runtime, stderr=subprocess.PIPE,
                              text=True)
    assert client.stderr.readline().startswith("wrote ")
    child = command_child(pid, tmp_path)
    os.kill(pid, signal.SIGKILL)
    os.kill(child, signal.SIGKILL)
    rest = client.stderr.read()
    assert client.wait(timeout=60) == 1
    last = rest.splitlines()[-1]
    assert last.startswith("Error: the convfilter server stopped before the command finished"), rest
    assert "Traceback" not in rest
    for path in (tmp_path / "out").iterdir():
        if not path.name.startswith("."):  # a hidden .part file may stay: SIGKILL allows no clean-up
            with Image.open(path) as image:
                image.load()


def test_server_stop_lets_running_commands_finish_and_leaves_nothing(own_runtime, tmp_path):
    info = start_server(own_runtime)
    names = noise_images(tmp_path, 20, size=(300, 400))
    client = subprocess.Popen([sys.executable, "-m", "convfilter", "apply", "--jobs", "1", "-v", "-k", "sobel-x",
                               *names, "-o", "out/"], cwd=tmp_path, env=own_runtime, stderr=subprocess.PIPE,
                              text=True)
    assert client.stderr.readline().startswith("wrote ")
    child = command_child(int(info["pid"]), tmp_path)
    stopped = convfilter("server", "stop", env=own_runtime, text=True)
    assert stopped.stdout == f"stopped convfilter server (pid {info['pid']})\n"
    assert not Path(info["socket"]).exists() and not running(int(info["pid"]))
    assert client.wait(timeout=120) == 0, client.stderr.read()
    assert len(os.listdir(tmp_path / "out")) == len(names)
    wait_for(lambda: not running(child), what="the last child to end")
    assert server_processes(own_runtime["XDG_RUNTIME_DIR"]) == []
    assert convfilter("server", "status", env=own_runtime).returncode == 1


# Stand-ins for the warm-up, which takes tens of seconds on an empty kernel cache. Numba spends
# much of it inside llvmlite's ctypes callbacks, where an exception a signal handler raises is
# swallowed ("Exception ignored on calling ctypes callback function"): a server stopped there
# went on warming up and then served. The callback stand-in spends 25 s a round inside one.
SLOW_WARM_UPS = {
    "asleep": "server.warm = lambda: time.sleep(600)",
    "in a C callback": ("import ctypes\n"
                        "inside = ctypes.CFUNCTYPE(None)(lambda: time.sleep(25))\n"
                        "def warm():\n"
                        "    while True:\n"
                        "        inside()\n"
                        "        time.sleep(1)\n"
                        "server.warm = warm"),
    # a library that swallows every exception around a step (a bare ``except:`` around an
    # optional import, say): the stop's SystemExit is lost there, and the warm-up goes on to
    # its end after 30 steps of 0.2 s, within the stop's 10 s
    "swallowed by a library": ("def warm():\n"
                               "    for step in range(30):\n"
                               "        try:\n"
                               "            time.sleep(0.2)\n"
                               "        except BaseException:\n"
                               "            pass\n"
                               "server.warm = warm"),
}


def warming_server(env, warm_up: str) -> subprocess.Popen:
    """A server of ``env``'s runtime folder whose warm-up is ``warm_up`` (code that replaces
    ``server.warm``), its stderr piped."""
    named = subprocess.run([sys.executable, "-c", "from convfilter import client; "
                            "print(client.socket_name(client.identity()))"],
                           env=env, capture_output=True, text=True, check=True)
    code = f"import time\nfrom convfilter import server\n{warm_up}\nserver.main()"
    return subprocess.Popen([sys.executable, "-c", code, named.stdout.strip()], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


@pytest.mark.parametrize("warm_up", SLOW_WARM_UPS, ids=list(SLOW_WARM_UPS))
def test_server_stop_and_status_see_a_server_still_warming_up(own_runtime, tmp_path, warm_up):
    """A server that has not yet made its socket (compiling the kernels on an empty cache) is
    shown by status and ended by stop, leaving no process and no socket, and saying nothing."""
    process = warming_server(own_runtime, SLOW_WARM_UPS[warm_up])
    try:
        folder = Path(own_runtime["XDG_RUNTIME_DIR"]) / "convfilter"

        def shown():
            done = convfilter("server", "status", env=own_runtime, text=True)
            return done.returncode == 1 and "warming up" in done.stdout and done

        wait_for(shown, timeout=60, what="status to show the server warming up")
        assert shown().stdout == ("convfilter server warming up (loading or compiling the kernels): "
                                  f"pid {process.pid}\n")
        stopped = convfilter("server", "stop", env=own_runtime, text=True)
        assert stopped.stdout == f"stopped convfilter server (pid {process.pid})\n", stopped.stderr
        assert process.wait(timeout=30) == 0 and process.stderr.read() == b""
        assert not [p for p in folder.iterdir() if p.name.endswith(".sock")]
        done = convfilter("server", "status", env=own_runtime, text=True)
        assert done.returncode == 1 and done.stdout.startswith("no convfilter server running")
        assert convfilter("server", "stop", env=own_runtime, text=True).stdout == "no convfilter server running\n"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_server_stop_fails_when_the_server_outlives_its_timeout(own_runtime):
    """A server that ignores SIGTERM while warming up is not reported stopped: one Error line
    naming its pid, exit 1 (the timeout shortened to 1 s)."""
    process = warming_server(own_runtime, "import signal\n"
                             "server.warm = lambda: (signal.signal(signal.SIGTERM, signal.SIG_IGN), "
                             "time.sleep(600))")
    try:
        def warming():
            done = convfilter("server", "status", env=own_runtime, text=True)
            return "warming up" in done.stdout

        wait_for(warming, timeout=60, what="status to show the server warming up")
        time.sleep(0.5)  # (the stand-in warm-up has ignored SIGTERM by then)
        stop = "from convfilter import cli, server; server.STOP_TIMEOUT = 1.0; cli.main(['server', 'stop'])"
        done = subprocess.run([sys.executable, "-c", stop], env=own_runtime, capture_output=True, text=True,
                              timeout=60)
        assert (done.returncode, done.stdout) == (1, "") and process.poll() is None
        assert done.stderr == (f"Error: the convfilter server (pid {process.pid}) is still running 1 s "
                               "after it was asked to stop\n")
    finally:
        process.kill()
        process.wait()


def test_idle_server_exits_by_itself(own_runtime, tmp_path):
    env = {**own_runtime, "CONVFILTER_SERVER_IDLE": "1"}
    info = start_server(env)
    assert info["idle-exit"] == "1 s"
    assert convfilter("apply", "-k", "vertical", CHINA, env=env, cwd=tmp_path).returncode == 0
    wait_for(lambda: not running(int(info["pid"])), timeout=60, what="the idle server to exit")
    assert not Path(info["socket"]).exists()


def test_the_first_command_runs_in_process_and_starts_a_detached_server(own_runtime, tmp_path):
    # capture_output: if the server kept the pipes, this would wait for the server to exit
    first = convfilter("apply", "-k", "vertical", CHINA, "-o", "first.png", env=own_runtime, cwd=tmp_path,
                       timeout=120)
    assert first.returncode == 0 and first.stderr == b"wrote first.png\n"
    wait_for(lambda: server_processes(own_runtime["XDG_RUNTIME_DIR"]), what="a server to start")
    (pid,) = server_processes(own_runtime["XDG_RUNTIME_DIR"])
    assert os.getsid(pid) == pid  # a session of its own: no terminal, no job of the caller
    assert {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)} == {os.devnull}
    wait_for(lambda: convfilter("server", "status", env=own_runtime).returncode == 0, timeout=900,
             what="the server to warm up")
    second = convfilter("apply", "-k", "vertical", CHINA, "-o", "second.png", env=own_runtime, cwd=tmp_path)
    assert second.returncode == 0 and second.stderr == b"wrote second.png\n"
    assert (tmp_path / "first.png").read_bytes() == (tmp_path / "second.png").read_bytes()
    assert status_of(own_runtime)["requests"] == "1"


def test_off_never_starts_a_server(own_runtime, tmp_path):
    env = {**own_runtime, "CONVFILTER_SERVER": "off"}
    assert convfilter("apply", "-k", "vertical", CHINA, env=env, cwd=tmp_path).returncode == 0
    time.sleep(1)  # a server would have been started right at the end of the command
    assert server_processes(own_runtime["XDG_RUNTIME_DIR"]) == []


@pytest.mark.parametrize("problem", ["mode", "owner"])
def test_a_socket_folder_that_is_not_private_is_refused(own_runtime, tmp_path, problem):
    folder = Path(own_runtime["XDG_RUNTIME_DIR"]) / "convfilter"
    folder.mkdir(mode=0o700)
    if problem == "mode":
        folder.chmod(0o755)
    elif os.getuid() == 0:
        os.chown(folder, 12345, 12345)
    else:
        pytest.skip("changing a folder's owner needs root")
    started = convfilter("server", "start", env=own_runtime, text=True)
    assert started.returncode == 1
    assert started.stderr.startswith(f"Error: {folder} must belong to you with mode 0700"), started.stderr
    done = convfilter("apply", "-k", "vertical", CHINA, "-o", "out.png", env=own_runtime, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == b"wrote out.png\n"  # in-process, as without a server
    time.sleep(1)
    assert server_processes(own_runtime["XDG_RUNTIME_DIR"]) == []
    assert os.listdir(folder) == []
    assert stat.S_IMODE(folder.stat().st_mode) == (0o755 if problem == "mode" else 0o700)


def test_an_edited_package_stops_the_old_server_and_never_runs_old_code(own_runtime, tmp_path):
    """A client whose package files are newer than the server's (an edited checkout) runs the
    command itself, and the outdated server stops."""
    info = start_server(own_runtime)
    code = (
        "from convfilter import client\n"
        "edited = client.source_stamp() + 10**9\n"
        "client.source_stamp = lambda: edited\n"
        "assert client.run_through_server(['apply', '-k', 'vertical', %r, '-o', 'out.png']) is None\n"
        % str(CHINA)
    )
    done = subprocess.run([sys.executable, "-c", code], env=own_runtime, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "out.png").exists()  # nothing ran in the server
    wait_for(lambda: not running(int(info["pid"])), timeout=60, what="the outdated server to stop")
    assert not Path(info["socket"]).exists()


SERVE_FROM = """
import os, socket, sys
from convfilter import client, server

package, folder_path = sys.argv[1:3]
client.PACKAGE_DIR = package  # the installation this server watches
server.CHECK_SECONDS = 0.2
folder = os.open(folder_path, os.O_RDONLY | os.O_DIRECTORY)
lock = os.open(os.path.join(folder_path, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
path = os.path.join(folder_path, "server.sock")
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen()
print("serving", flush=True)
server.Server(listener, folder, lock, path, 120.0, client.identity(), client.source_stamp()).serve()
print("ended", flush=True)
"""


@pytest.mark.parametrize("change", ["none", "upgraded", "uninstalled"])
def test_an_idle_server_ends_when_its_installation_changes(tmp_path, change):
    """After an upgrade to another version (whose clients never look for this server) or an
    uninstall, an idle server ends at its next check instead of at its idle exit."""
    package = tmp_path / "site" / "convfilter"
    package.mkdir(parents=True)
    (package / "ops.py").write_text("# the installed version\n")
    old = time.time() - 100
    os.utime(package / "ops.py", (old, old))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    process = subprocess.Popen([sys.executable, "-c", SERVE_FROM, str(package), str(runtime)], env=CHECKOUT_ENV,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "serving\n"
        time.sleep(1)  # five checks find the files as they were
        assert process.poll() is None
        if change == "upgraded":
            (package / "ops.py").write_text("# the next version\n")
        elif change == "uninstalled":
            shutil.rmtree(package)
        if change == "none":
            time.sleep(1)
            assert process.poll() is None
        else:
            assert process.wait(timeout=30) == 0
            assert process.stdout.read() == "ended\n"
            assert not (runtime / "server.sock").exists()
    finally:
        process.kill()
        process.wait()
