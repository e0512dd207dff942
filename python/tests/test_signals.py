"""Ctrl-C raises KeyboardInterrupt wherever the package waits: in next(), while
waiting to attach, and inside follow(). The child prints READY right before
it starts waiting; the delay from the signal's arrival (recorded by a thread
woken through signal.set_wakeup_fd) to the exception is printed, not asserted."""

import signal
import subprocess

import pytest

import shmcast
from conftest import PY, Child, python_child_env, unique

CHILD = r"""
import os, signal, sys, threading, time
import shmcast

name, where = sys.argv[1], sys.argv[2]
arrived = []
rfd, wfd = os.pipe()
os.set_blocking(wfd, False)
signal.set_wakeup_fd(wfd)  # the C-level handler writes here as the signal arrives
def watch():
    os.read(rfd, 1)
    arrived.append(time.monotonic())
threading.Thread(target=watch, daemon=True).start()

try:
    if where == "next":
        r = shmcast.Reader(name)
        print("READY", flush=True)
        r.next()
    elif where == "attach":
        print("READY", flush=True)
        shmcast.Reader(name, attach_timeout=None)
    elif where == "follow":
        print("READY", flush=True)
        for f in shmcast.follow(name):
            pass
    print("RETURNED", flush=True)
except KeyboardInterrupt:
    raised = time.monotonic()
    while not arrived:  # the watcher runs as soon as the GIL is free
        time.sleep(0.001)
    print("KEYBOARDINTERRUPT %.1f ms" % ((raised - arrived[0]) * 1e3), flush=True)
"""


@pytest.mark.parametrize("where", ["next", "attach", "follow"])
def test_ctrl_c_raises_keyboardinterrupt_while_waiting(where):
    name = unique("sig")
    w = shmcast.Writer(name, 16, 8, format="gray8") if where == "next" else None
    try:
        c = Child([PY, "-c", CHILD, name, where], env=python_child_env())
        c.wait_line("READY")
        # READY is printed just before the wait: a signal sent before the wait
        # starts is seen by its first check too, so this is not a race.
        c.signal(signal.SIGINT)
        line = c.wait_line(lambda ln: ln.startswith(("KEYBOARDINTERRUPT", "RETURNED", "Traceback")),
                           "KeyboardInterrupt")
        assert line.startswith("KEYBOARDINTERRUPT"), c.output()
        print(f"{where}: signal -> KeyboardInterrupt {line.split(' ', 1)[1]}")
        assert c.wait() == 0
    finally:
        if w is not None:
            w.close()
