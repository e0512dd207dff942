"""The Python writer: zero-copy frames, abandoning, closing (explicitly, by
garbage collection and at interpreter exit)."""

import gc
import subprocess

import numpy as np
import pytest

import shmcast
from conftest import PY, Child, python_child_env, segment, unique


def test_frame_context_fills_the_slot_in_place():
    with shmcast.Writer(unique("wf"), 64, 48, format="rgb24", slots=4) as w:
        r = shmcast.Reader(w.name)
        with w.frame(frame_id=77) as buf:
            assert buf.shape == (48, 64, 3) and buf.flags.writeable
            buf[:] = 0
            buf[10:20, 5:15] = (255, 0, 0)
        f = r.next(timeout=5)
        assert f.frame_id == 77 and f.capture_ns > 0 and f.publish_ns >= f.capture_ns
        a = f.array
        assert a[15, 10].tolist() == [255, 0, 0] and a.sum() == 100 * 255 and f.valid()
        # The slot array the writer handed out and the reader's array are the same bytes.
        assert bytes(buf) == bytes(a)
        # After the block the writer's array is read-only.
        with pytest.raises(ValueError):
            buf[0, 0, 0] = 1


def test_an_exception_abandons_the_frame():
    with shmcast.Writer(unique("wa"), 16, 8, format="gray8") as w:
        r = shmcast.Reader(w.name)
        with pytest.raises(ZeroDivisionError):
            with w.frame() as buf:
                buf[:] = 1
                1 / 0
        assert r.next(timeout=0) is None
        assert w.next_seq == 0
        w.publish(np.full((8, 16), 2, np.uint8))
        f = r.next(timeout=5)
        assert f.seq == 0 and f.array[0, 0] == 2


def test_publish_takes_any_layout_of_the_right_shape():
    with shmcast.Writer(unique("wl"), 64, 48, format="bgr24") as w:
        r = shmcast.Reader(w.name)
        img = np.arange(64 * 48 * 3, dtype=np.uint32).astype(np.uint8).reshape(64, 48, 3).transpose(1, 0, 2)
        assert not img.flags.c_contiguous
        w.publish(img, frame_id=5, capture_ns=123)
        f = r.next(timeout=5)
        assert (f.frame_id, f.capture_ns) == (5, 123)
        assert np.array_equal(f.copy(), img)


def test_close_closes_at_once_even_with_a_slot_array_alive():
    w = shmcast.Writer(unique("wc"), 16, 8, format="gray8")
    r = shmcast.Reader(w.name)
    with w.frame() as buf:
        buf[:] = 3
    w.close()
    assert w.closed and not segment(w.name).exists()
    assert r.next(timeout=5).array[0, 0] == 3
    with pytest.raises(shmcast.Closed):
        r.next(timeout=5)
    # The array still points at valid memory (no longer part of any stream).
    assert int(buf.sum()) == 3 * 16 * 8


def test_garbage_collection_closes_the_stream():
    w = shmcast.Writer(unique("wg"), 16, 8, format="gray8")
    name = w.name
    r = shmcast.Reader(name)
    del w
    gc.collect()
    assert not segment(name).exists()
    with pytest.raises(shmcast.Closed):
        r.next(timeout=5)


def test_interpreter_exit_closes_the_stream():
    name = unique("wx")
    code = (
        "import shmcast, numpy as np, sys\n"
        f"w = shmcast.Writer({name!r}, 16, 8, format='gray8')\n"
        "keep = [w]\n"  # still referenced at exit: closed by the exit hook
        "w.publish(np.zeros((8, 16), np.uint8))\n"
        "print('READY', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    c = Child([PY, "-c", code], name=name, stdin=subprocess.PIPE, env=python_child_env())
    c.wait_line("READY")
    r = shmcast.Reader(name, start="oldest")
    c.proc.stdin.close()
    assert c.wait() == 0
    assert r.next(timeout=5) is not None
    with pytest.raises(shmcast.Closed, match="closed by its producer"):
        r.next(timeout=5)
    assert not segment(name).exists()
