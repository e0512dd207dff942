"""follow() waits for the producer, follows its restarts (clean stop and
SIGKILL) and never ends by itself."""

import signal

import shmcast
from conftest import binary, unique


def start(children, name):
    return children([binary("shmcast-producer"), "--name", name, "--source", "testsrc", "--format", "gray8",
                     "--width", 160, "--height", 120, "--fps", 60], name=name)


def frames_of(it, n):
    """The next n frames' (epoch, frame_id)."""
    out = []
    for f in it:
        out.append((f.reader.epoch, f.frame_id))
        assert f.array.shape == (120, 160)
        if len(out) == n:
            return out


def test_follow_waits_for_the_producer_and_follows_restarts(children):
    name = unique("fol")
    fo = shmcast.follow(name)
    # Nothing there yet: start the producer, then follow() attaches.
    p1 = start(children, name)
    first = frames_of(fo, 5)
    e1 = first[0][0]
    assert all(e == e1 for e, _ in first)
    ids = [i for _, i in first]
    assert ids == sorted(ids)

    # A clean stop (SIGTERM: the stream is closed), then a new producer.
    assert p1.stop() == 0
    p2 = start(children, name)
    second = frames_of(fo, 5)
    e2 = second[0][0]
    assert e2 != e1 and all(e == e2 for e, _ in second)
    assert fo.attach_count == 2

    # A crash (SIGKILL: the stream goes stale), then a new producer replaces it.
    p2.signal(signal.SIGKILL)
    p2.stop()
    start(children, name)
    third = frames_of(fo, 5)
    e3 = third[0][0]
    assert e3 not in (e1, e2) and all(e == e3 for e, _ in third)
    assert fo.attach_count == 3
    s = fo.stats
    assert s.frames >= 15
    assert fo.reader.epoch == e3


def test_a_follow_frame_is_released_by_the_next_iteration(children):
    name = unique("folrel")
    start(children, name)
    it = iter(shmcast.follow(name, start="oldest"))
    f1 = next(it)
    f2 = next(it)
    assert not f1.current and f2.current
    assert f2.frame_id > f1.frame_id
