"""Frames from the Rust test-pattern producer, per pixel format: shapes and
dtypes of Frame.array and Frame.planes, and proof that the arrays are views
INTO the shared-memory mapping (no copy)."""

import numpy as np
import pytest

import shmcast
from conftest import segment, unique

W, H = 320, 240

SHAPES = {
    "rgb24": ((H, W, 3), [(H, W, 3)]),
    "bgr24": ((H, W, 3), [(H, W, 3)]),
    "gray8": ((H, W), [(H, W)]),
    "yuyv": ((H, W, 2), [(H, W, 2)]),
    "nv12": ((H * 3 // 2, W), [(H, W), (H // 2, W // 2, 2)]),
    "i420": ((H * 3 // 2, W), [(H, W), (H // 2, W // 2), (H // 2, W // 2)]),
}


def mapping_of(name):
    """(start, end) of the mapping of /dev/shm/shmcast.<name> in this process."""
    path = str(segment(name))
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5] == path:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                ranges.append((lo, hi, parts[1]))
    assert ranges, f"{path} is not mapped in this process"
    return ranges


def address(a):
    return a.__array_interface__["data"][0]


def inside(a, ranges):
    lo, hi = address(a), address(a) + a.nbytes
    return any(r_lo <= lo and hi <= r_hi for r_lo, r_hi, _ in ranges)


@pytest.mark.parametrize("fmt", sorted(SHAPES))
def test_array_shapes_dtypes_and_views_into_the_mapping(producer, fmt):
    _, name = producer(fmt=fmt, width=W, height=H)
    r = shmcast.Reader(name)
    assert (r.width, r.height, r.format) == (W, H, fmt)
    f = r.next()
    a = f.array
    shape, plane_shapes = SHAPES[fmt]
    assert a.shape == shape and a.dtype == np.uint8
    assert not a.flags.writeable and not a.flags.owndata
    with pytest.raises(ValueError):
        a[0, 0] = 1
    planes = f.planes
    assert [p.shape for p in planes] == plane_shapes
    assert all(p.dtype == np.uint8 and not p.flags.writeable for p in planes)

    # The array lies inside this process's read-only mapping of the segment.
    ranges = mapping_of(name)
    assert all(perms.startswith("r-") for _, _, perms in ranges), ranges
    assert inside(a, ranges), (hex(address(a)), ranges)
    assert all(inside(p, ranges) for p in planes)
    # The planes are views of the same bytes as the array.
    assert np.shares_memory(a, planes[0])
    assert address(planes[0]) == address(a)
    # The same object on every access while the frame is current.
    assert f.array is a

    total = a.astype(np.uint64).sum()
    c = f.copy()
    if f.valid():
        assert c.shape == a.shape and c.flags.writeable and c.flags.c_contiguous
        assert not np.shares_memory(c, a)
        assert not inside(c, ranges)
        assert int(c.astype(np.uint64).sum()) == int(total)
        assert total > 0  # the test pattern is not black
    assert f.width == W and f.height == H and f.format == fmt
    assert f.nbytes == r.frame_size



def test_mjpeg_frames_are_one_dimensional_payloads():
    name = unique("mjpeg")
    jpeg = bytes(range(256)) * 10
    with shmcast.Writer(name, 320, 240, format="mjpeg", max_payload=1 << 16) as w:
        r = shmcast.Reader(name)
        w.publish(jpeg)
        f = r.next(timeout=5)
        assert f.array.shape == (len(jpeg),) and f.array.dtype == np.uint8
        assert f.array.tobytes() == jpeg and f.valid()
        assert [p.shape for p in f.planes] == [(len(jpeg),)]
        with pytest.raises(shmcast.FormatError):
            w.publish(b"")


def test_streams_lists_what_inspect_lists(producer):
    import json
    import subprocess

    from conftest import binary

    _, name = producer(fmt="gray8")
    shmcast.Reader(name).next()  # "live" from the first frame on
    mine = {s["name"]: s for s in shmcast.streams()}
    assert name in mine
    s = mine[name]
    assert (s["state"], s["width"], s["height"], s["format"]) == ("live", W, H, "gray8")
    out = subprocess.run([binary("shmcast-inspect"), "--name", name, "--json", "--interval", "0.1"],
                         capture_output=True, text=True, check=True).stdout
    theirs = json.loads(out)
    for k in ("name", "path", "pid", "epoch", "width", "height", "format", "frame_size", "slots",
              "slot_stride", "size_bytes", "hugepages"):
        assert s[k] == theirs[k], k
