"""Type stubs of shmcast's Rust extension module (re-exported by ``shmcast``)."""

from types import TracebackType
from typing import Any, Iterator, Optional, Tuple, Type, Union

import numpy as np
import numpy.typing as npt

__version__: str
FORMATS: list[str]

class Error(Exception):
    """Base class of every shmcast error."""

class NotFound(Error):
    """No stream under that name."""

class InUse(Error):
    """A live producer already publishes under that name."""

class FormatError(Error):
    """A format, size or array that does not fit the stream."""

class Overrun(Error):
    """The producer overwrote a frame before an intact copy could be made."""

class Closed(Error):
    """The stream's producer closed it or died (reader); the writer was closed (writer)."""

class StaleFrame(Error):
    """A frame's data was used after a later next() on its reader released it."""

U8Array = npt.NDArray[np.uint8]

def streams() -> list[dict[str, Any]]:
    """Every stream present, one dict per stream with the keys of ``shmcast-inspect --json``."""

class ReaderStats:
    """Counters of a reader (or of every reader a follow() used)."""

    @property
    def frames(self) -> int: ...
    @property
    def lost(self) -> int: ...
    @property
    def overruns(self) -> int: ...

class Frame:
    """A frame in place in the shared memory; released by the next ``next()`` on its reader."""

    @property
    def array(self) -> U8Array:
        """Read-only view INTO the shared memory: (H, W, 3) rgb24/bgr24, (H, W) gray8,
        (H, W, 2) yuyv, (H*3//2, W) nv12/i420, (len,) mjpeg. Raises StaleFrame once released."""
    @property
    def planes(self) -> Tuple[U8Array, ...]:
        """The planes as separate read-only views (nv12: Y, UV (H/2, W/2, 2); i420: Y, U, V)."""
    def valid(self) -> bool:
        """True if the producer has not touched the frame since it was handed out."""
    def copy(self) -> U8Array:
        """An independent, intact copy; raises Overrun or StaleFrame."""
    @property
    def frame_id(self) -> int: ...
    @property
    def capture_ns(self) -> int: ...
    @property
    def publish_ns(self) -> int: ...
    @property
    def lost(self) -> int:
        """Frames lost just before this one."""
    @property
    def seq(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def flags(self) -> int: ...
    @property
    def exposure_us(self) -> Optional[int]: ...
    @property
    def gain_db(self) -> Optional[float]: ...
    @property
    def temperature_c(self) -> Optional[float]: ...
    @property
    def reader(self) -> Reader: ...
    @property
    def format(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def current(self) -> bool:
        """True until a later next() on the reader releases this frame."""

class Reader:
    """A read-only view of a stream."""

    def __init__(
        self,
        name: str,
        start: str = "next",
        attach_timeout: Optional[float] = 0.0,
        spin: float = 0.0,
        lapped: str = "newest",
    ) -> None: ...
    def next(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The next frame, or None on timeout; raises Closed once the producer is gone."""
    def __iter__(self) -> Iterator[Frame]: ...
    def __next__(self) -> Frame: ...
    @property
    def stats(self) -> ReaderStats: ...
    @property
    def name(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def format(self) -> str: ...
    @property
    def fps(self) -> float: ...
    @property
    def frame_size(self) -> int: ...
    @property
    def slots(self) -> int: ...
    @property
    def epoch(self) -> int: ...
    @property
    def pid(self) -> int: ...
    @property
    def overlay(self) -> Optional[Tuple[int, int, int, int]]: ...
    @property
    def state(self) -> str: ...
    def info(self) -> dict[str, Any]: ...

class Follow:
    """The iterator follow() returns: frames for ever, across producer restarts."""

    def __iter__(self) -> Iterator[Frame]: ...
    def __next__(self) -> Frame: ...
    @property
    def stats(self) -> ReaderStats: ...
    @property
    def reader(self) -> Optional[Reader]: ...
    @property
    def attach_count(self) -> int: ...
    @property
    def name(self) -> str: ...

def follow(name: str, start: str = "next", spin: float = 0.0, lapped: str = "newest") -> Follow:
    """Frames of ``name`` for ever: waits for the producer and follows its restarts."""

class FrameSlot:
    """The context manager Writer.frame() returns; entering gives the writable slot."""

    def __enter__(self) -> U8Array: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException] = None,
        tb: Optional[TracebackType] = None,
    ) -> bool: ...

class Writer:
    """Creates a stream and publishes frames into it."""

    def __init__(
        self,
        name: str,
        width: int,
        height: int,
        format: str = "rgb24",
        fps: float = 30.0,
        slots: int = 8,
        *,
        max_payload: Optional[int] = None,
        overlay: Optional[Tuple[int, int, int, int]] = None,
        mode: int = 0o640,
        hugepages: bool = False,
    ) -> None: ...
    def publish(
        self,
        img: Union[U8Array, bytes, bytearray, memoryview],
        frame_id: Optional[int] = None,
        capture_ns: Optional[int] = None,
    ) -> int:
        """Publishes one frame (one copy); returns its sequence number."""
    def frame(
        self, frame_id: Optional[int] = None, capture_ns: Optional[int] = None, length: Optional[int] = None
    ) -> FrameSlot:
        """``with w.frame() as buf:`` fills the next slot in place and publishes it."""
    def close(self) -> None: ...
    def __enter__(self) -> Writer: ...
    def __exit__(self, *args: object) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def name(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def format(self) -> str: ...
    @property
    def fps(self) -> float: ...
    @property
    def frame_size(self) -> int: ...
    @property
    def shape(self) -> Tuple[int, ...]: ...
    @property
    def slots(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def epoch(self) -> int: ...
    @property
    def next_seq(self) -> int: ...
