"""Every error is a shmcast.Error subclass with the command-line tools' message."""

import re
import subprocess

import numpy as np
import pytest

import shmcast
from conftest import binary, unique


def cli_error(args):
    """The message after '<binary>: error: ' of a failing command."""
    p = subprocess.run(args, capture_output=True, text=True)
    assert p.returncode != 0, p
    lines = [line for line in p.stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1, p.stderr
    return lines[0].split(": error: ", 1)[1]


def test_error_classes():
    for cls in (shmcast.NotFound, shmcast.InUse, shmcast.FormatError, shmcast.Overrun, shmcast.Closed,
                shmcast.StaleFrame):
        assert issubclass(cls, shmcast.Error) and cls.__module__ == "shmcast"
    assert issubclass(shmcast.Error, Exception)


def test_not_found_says_what_the_cli_says():
    name = unique("none")
    with pytest.raises(shmcast.NotFound) as e:
        shmcast.Reader(name)
    assert str(e.value) == f"cannot open stream {name}: not found (is the producer running?)"
    assert str(e.value) == cli_error([binary("shmcast-inspect"), "--name", name])


def test_in_use_says_what_the_cli_says(producer):
    _, name = producer(fmt="gray8")
    with pytest.raises(shmcast.InUse) as e:
        shmcast.Writer(name, 320, 240, format="gray8")
    cli = cli_error([binary("shmcast-producer"), "--name", name, "--source", "testsrc", "--frames", "1"])
    # The same line but for the heartbeat's age.
    age = re.compile(r"heartbeat \d+ ms")
    assert age.sub("heartbeat N ms", str(e.value)) == age.sub("heartbeat N ms", cli), (str(e.value), cli)
    assert f"stream {name} is owned by another running producer" in str(e.value)


def test_format_errors():
    name = unique("fmt")
    with pytest.raises(shmcast.FormatError) as e:
        shmcast.Writer(name, 64, 48, format="rgb25")
    assert str(e.value) == 'unknown pixel format "rgb25" (expected one of rgb24, bgr24, gray8, yuyv, nv12, i420, mjpeg)'
    with pytest.raises(shmcast.FormatError, match="needs an even width"):
        shmcast.Writer(name, 63, 48, format="nv12")
    with pytest.raises(shmcast.FormatError, match="out of range"):
        shmcast.Writer(name, 0, 48)
    with pytest.raises(shmcast.FormatError, match="slot count 3 is invalid"):
        shmcast.Writer(name, 64, 48, slots=3)
    with shmcast.Writer(name, 64, 48, format="rgb24") as w:
        assert w.shape == (48, 64, 3)
        with pytest.raises(shmcast.FormatError, match=r"shape \(48, 64, 3\), got uint8 \(64, 48, 3\)"):
            w.publish(np.zeros((64, 48, 3), np.uint8))
        with pytest.raises(shmcast.FormatError, match="got float32"):
            w.publish(np.zeros((48, 64, 3), np.float32))
        with pytest.raises(shmcast.FormatError, match="got list"):
            w.publish([0] * 10)
        # A failed publish abandons its slot: the next frame gets that sequence.
        assert w.next_seq == 0


def test_bad_name_is_an_error_with_the_cli_message():
    with pytest.raises(shmcast.Error) as e:
        shmcast.Reader("a/b")
    assert "contains '/'" in str(e.value)
    assert str(e.value) == cli_error([binary("shmcast-inspect"), "--name", "a/b"])


def test_closed_and_overrun_and_stale(tmp_path):
    w = shmcast.Writer(unique("cl"), 16, 8, format="gray8", slots=2)
    r = shmcast.Reader(w.name)
    w.publish(np.zeros((8, 16), np.uint8))
    f = r.next(timeout=5)
    w.publish(np.zeros((8, 16), np.uint8))
    w.publish(np.zeros((8, 16), np.uint8))
    with pytest.raises(shmcast.Overrun):
        f.copy()
    r.next(timeout=5)
    with pytest.raises(shmcast.StaleFrame):
        f.array
    w.close()
    with pytest.raises(shmcast.Closed, match=f"writer of stream {w.name} is closed"):
        w.publish(np.zeros((8, 16), np.uint8))
    with pytest.raises(shmcast.Closed):
        with w.frame():
            pass
    w.close()  # idempotent
    while True:
        try:
            r.next(timeout=5)
        except shmcast.Closed as e:
            assert str(e) == f"stream {w.name} was closed by its producer"
            break


def test_corrupt_segment_is_an_error_not_a_crash(tmp_path):
    from conftest import segment

    name = unique("junk")
    p = segment(name)
    p.write_bytes(b"\xff" * 65536)
    try:
        with pytest.raises(shmcast.Error, match="not a shmcast segment"):
            shmcast.Reader(name)
        with pytest.raises(shmcast.Error, match="is not a usable shmcast segment"):
            shmcast.Writer(name, 16, 8, format="gray8")
    finally:
        p.unlink()
