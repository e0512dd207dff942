"""shmcast: live video frames between processes through shared memory, as numpy arrays.

Read a stream that any shmcast producer publishes (``shmcast-producer``, another
Python program), zero-copy::

    import shmcast
    r = shmcast.Reader("cam0")
    f = r.next(timeout=1.0)          # a Frame, or None on timeout
    level = f.array.mean()           # read-only numpy view INTO the shared memory
    if f.valid():                    # the producer did not overwrite it meanwhile
        print(level)

Publish one that every shmcast consumer (``shmcast-detect``, ``shmcast-rtsp``,
Python readers) can use::

    w = shmcast.Writer("cam1", width=640, height=480, format="rgb24", fps=30)
    w.publish(img)                   # one copy from a (480, 640, 3) uint8 array
    with w.frame() as buf:           # or fill the slot in place
        buf[:] = 0
    w.close()

Errors are :class:`Error` subclasses: :class:`NotFound`, :class:`InUse`,
:class:`FormatError`, :class:`Overrun`, :class:`Closed`, :class:`StaleFrame`.
Waiting releases the GIL, and Ctrl-C raises ``KeyboardInterrupt`` while waiting.
"""

import atexit as _atexit
import weakref as _weakref

import numpy as _numpy  # noqa: F401 - loaded now, not on the first frame (which would stall a reader)

from ._native import (
    FORMATS,
    Closed,
    Error,
    Follow,
    FormatError,
    Frame,
    FrameSlot,
    InUse,
    NotFound,
    Overrun,
    Reader,
    ReaderStats,
    StaleFrame,
    Writer as _NativeWriter,
    __version__,
    follow,
    streams,
)

__all__ = [
    "FORMATS",
    "Closed",
    "Error",
    "Follow",
    "FormatError",
    "Frame",
    "FrameSlot",
    "InUse",
    "NotFound",
    "Overrun",
    "Reader",
    "ReaderStats",
    "StaleFrame",
    "Writer",
    "__version__",
    "follow",
    "streams",
]

# Writers still open at interpreter exit are closed then, so readers see the
# stream closed rather than waiting for its heartbeat to go stale.
_open_writers = _weakref.WeakSet()


class Writer(_NativeWriter):
    __doc__ = _NativeWriter.__doc__
    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls, *args, **kwargs)
        _open_writers.add(self)
        return self


@_atexit.register
def _close_writers():
    for w in list(_open_writers):
        try:
            w.close()
        except Exception:  # pragma: no cover - best effort at exit
            pass
