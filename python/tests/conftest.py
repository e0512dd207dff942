"""Shared helpers: the workspace binaries, unique stream names, child processes
that are always stopped (and their segments removed), and waits for events
(a line, a stream), never guessed sleeps."""

import itertools
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHM_DIR = Path(os.environ.get("SHMCAST_SHM_DIR", "/dev/shm"))
_counter = itertools.count()


def bin_dir() -> Path:
    d = os.environ.get("SHMCAST_BIN_DIR")
    if d:
        return Path(d)
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release"


def binary(name: str) -> str:
    p = bin_dir() / name
    if not p.exists():
        # Never skip: a missing binary is a broken setup.
        pytest.fail(f"{p} not found; build it with: cargo build --release -p shmcast-producer "
                    f"-p shmcast-consumer -p shmcast-rtsp (scripts/test.sh does)")
    return str(p)


def unique(tag: str) -> str:
    return f"py-{tag}-{os.getpid()}-{next(_counter)}"


def segment(name: str) -> Path:
    return SHM_DIR / f"shmcast.{name}"


class Child:
    """A child process whose output lines are read by a thread into a queue,
    so a test can wait for a given line while the process keeps running."""

    def __init__(self, args, name=None, stdin=None, env=None, merge_stderr=True):
        self.args = [str(a) for a in args]
        self.name = name
        self.lines = []
        self._q = queue.Queue()
        self.proc = subprocess.Popen(
            self.args,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            text=True,
            env=env,
        )
        self._t = threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True)
        self._t.start()

    def _pump(self, f):
        for line in f:
            self.lines.append(line.rstrip("\n"))
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_line(self, pred, what="a line"):
        """The first line (from now on) for which pred(line) holds; fails if the
        process exits first."""
        if isinstance(pred, str):
            text = pred
            pred = lambda line: text in line  # noqa: E731
        while True:
            line = self._q.get()
            if line is None:
                self.proc.wait()
                pytest.fail(f"{self.args[0]} exited ({self.proc.returncode}) before printing {what}; "
                            f"output:\n" + "\n".join(self.lines[-40:]))
            if pred(line):
                return line

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self):
        """Waits for the process to exit by itself; returns the exit code."""
        self.proc.wait()
        self._t.join()
        return self.proc.returncode

    def stop(self):
        """SIGTERM, then SIGKILL if it does not stop in 10 s; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()
        self._t.join()
        return self.proc.returncode

    def output(self):
        return "\n".join(self.lines)


@pytest.fixture
def children():
    """Starts children and always stops them and removes their segments."""
    started = []

    def start(args, name=None, **kw):
        c = Child(args, name=name, **kw)
        started.append(c)
        return c

    yield start
    for c in reversed(started):
        c.stop()
        if c.name:
            try:
                segment(c.name).unlink()
            except FileNotFoundError:
                pass


@pytest.fixture
def producer(children):
    """shmcast-producer with the test pattern; returns (child, name) once it has published a frame."""

    def start(fmt="rgb24", width=320, height=240, fps=30, name=None, extra=()):
        import shmcast

        name = name or unique("prod")
        c = children([binary("shmcast-producer"), "--name", name, "--source", "testsrc", "--format", fmt,
                      "--width", width, "--height", height, "--fps", fps, *extra], name=name)
        wait_live(name, c).next()  # the first frame: the stream is "live" from then on
        return c, name

    return start


def wait_live(name, child=None):
    """Waits until `name` has a live producer (and that `child`, if given, is still running)."""
    import shmcast

    while True:
        if child is not None and child.proc.poll() is not None:
            pytest.fail(f"{child.args[0]} exited ({child.proc.returncode}):\n{child.output()}")
        try:
            r = shmcast.Reader(name, attach_timeout=0.5)
            if r.state in ("live", "starting"):
                return r
        except shmcast.NotFound:
            pass


def python_child_env():
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


PY = sys.executable
