"""Ctrl-C raises KeyboardInterrupt wherever the package waits: in next(), while
waiting to attach, and inside follow(). The child prints READY right before
it starts waiting; the delay from sending the signal to the exception
(CLOCK_MONOTONIC is the same in both processes) is printed, not asserted."""

import signal
import time

import pytest

import shmcast
from conftest import PY, Child, python_child_env, unique

CHILD = r"""
import sys, time
import shmcast

name, where = sys.argv[1], sys.argv[2]

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
    print("KEYBOARDINTERRUPT %.6f" % time.monotonic(), flush=True)
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
        sent = time.monotonic()
        c.signal(signal.SIGINT)
        line = c.wait_line(lambda ln: ln.startswith(("KEYBOARDINTERRUPT", "RETURNED", "Traceback")),
                           "KeyboardInterrupt")
        assert line.startswith("KEYBOARDINTERRUPT"), c.output()
        delay_ms = (float(line.split()[1]) - sent) * 1e3
        print(f"{where}: SIGINT -> KeyboardInterrupt {delay_ms:.1f} ms")
        assert c.wait() == 0
    finally:
        if w is not None:
            w.close()
