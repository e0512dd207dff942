"""Reader semantics with a Python writer: exact losses when lapped, what a
released frame does, overruns, closing, and waiting without the GIL."""

import threading

import numpy as np
import pytest

import shmcast
from conftest import unique


def gray_writer(slots=4, name=None):
    return shmcast.Writer(name or unique("rd"), 16, 8, format="gray8", fps=0, slots=slots)


def publish_ids(w, ids):
    for i in ids:
        w.publish(np.full((8, 16), i % 256, np.uint8), frame_id=i)


@pytest.mark.parametrize("lapped,first", [("newest", 9), ("oldest", 6)])
def test_lapped_reader_reports_exact_losses(lapped, first):
    with gray_writer(slots=4) as w:
        r = shmcast.Reader(w.name, start="oldest", lapped=lapped)
        publish_ids(w, range(10))  # seq 0..9 in a 4-slot ring: 6..9 are still there
        f = r.next(timeout=5)
        assert (f.frame_id, f.lost) == (first, first)
        assert f.array[0, 0] == first and f.valid()
        got = [f.frame_id]
        while (f := r.next(timeout=0)) is not None:
            assert f.lost == 0
            got.append(f.frame_id)
        assert got == list(range(first, 10))
        # A second lap: 7 more frames, only the last 4 still there.
        publish_ids(w, range(10, 17))
        f = r.next(timeout=5)
        skipped = (16 if lapped == "newest" else 13) - 10
        assert (f.frame_id, f.lost) == (10 + skipped, skipped)
        while r.next(timeout=0) is not None:
            pass
        s = r.stats
        assert s.lost == first + skipped
        assert s.frames + s.lost == 17
        assert s.overruns == 0


def test_next_releases_the_previous_frame():
    with gray_writer() as w:
        r = shmcast.Reader(w.name)
        publish_ids(w, [1, 2])
        f1 = r.next(timeout=5)
        a1 = f1.array
        assert f1.current and a1[0, 0] == 1
        f2 = r.next(timeout=5)
        # Released: views and copies raise, valid() is False, metadata stays.
        assert not f1.current and f2.current
        with pytest.raises(shmcast.StaleFrame, match="released by a later next"):
            f1.array
        with pytest.raises(shmcast.StaleFrame):
            f1.planes
        with pytest.raises(shmcast.StaleFrame):
            f1.copy()
        assert f1.valid() is False
        assert f1.frame_id == 1
        # An array taken before keeps pointing at the slot, which the producer
        # reuses: it shows what is written there later (never a crash).
        publish_ids(w, [3, 4, 5])  # seq 2..4: seq 4 lands in seq 0's slot
        assert a1[0, 0] == 5
        assert r.stats.overruns == 0
        # A timeout releases the current frame too.
        while r.next(timeout=0) is not None:
            pass
        assert r.next(timeout=0) is None


def test_overwritten_frame_fails_validation_and_copy_raises_overrun():
    with gray_writer(slots=2) as w:
        r = shmcast.Reader(w.name)
        publish_ids(w, [0])
        f = r.next(timeout=5)
        m = f.array.mean()
        assert f.valid() and m == 0
        publish_ids(w, [1, 2])  # seq 2 overwrites seq 0's slot
        assert f.valid() is False
        assert f.valid() is False  # counted once
        with pytest.raises(shmcast.Overrun, match="overwritten by the producer"):
            f.copy()
        assert r.stats.overruns == 1
        publish_ids(w, [3])
        g = r.next(timeout=5)
        publish_ids(w, [4, 5])
        with pytest.raises(shmcast.Overrun):
            g.copy()
        assert g.valid() is False
        assert r.stats.overruns == 2


def test_closed_stream_raises_closed_after_the_last_frame():
    w = gray_writer()
    r = shmcast.Reader(w.name)
    publish_ids(w, [7])
    w.close()
    f = r.next(timeout=5)
    assert f.frame_id == 7 and f.valid()
    with pytest.raises(shmcast.Closed, match="closed by its producer"):
        r.next(timeout=5)
    assert r.state == "closed"


def test_iterating_a_reader_ends_when_the_producer_closes():
    w = gray_writer(slots=8)
    r = shmcast.Reader(w.name)
    publish_ids(w, range(5))
    w.close()
    assert [f.frame_id for f in r] == list(range(5))


def test_waiting_releases_the_gil():
    """A thread blocked in next() must let this thread run to publish the
    frame it waits for; holding the GIL it would time out instead."""
    with gray_writer() as w:
        r = shmcast.Reader(w.name)
        got = []
        t = threading.Thread(target=lambda: got.append(r.next(timeout=60)))
        t.start()
        publish_ids(w, [42])
        t.join()
        assert got[0] is not None and got[0].frame_id == 42


def test_a_reader_used_from_two_threads_at_once_says_so():
    with gray_writer() as w:
        r = shmcast.Reader(w.name)
        entered = threading.Event()
        out = []

        def wait():
            entered.set()
            out.append(r.next(timeout=60))

        t = threading.Thread(target=wait)
        t.start()
        entered.wait()
        # The other thread holds the reader (or is about to): either this call
        # runs first and returns, or it is told the reader is busy. Never a deadlock.
        try:
            r.stats
        except RuntimeError as e:
            assert "in use by another thread" in str(e)
        publish_ids(w, [1])
        t.join()
        assert out[0].frame_id == 1
