//! Error types, one enum per operation. Messages are lower-case, name the
//! segment where one is known, and say what was expected and what was found.
#![forbid(unsafe_code)]

use std::io;

use crate::format::PixelFormat;

/// A video format that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// A format name nobody knows.
    #[error("unknown pixel format {0:?} (expected one of rgb24, bgr24, gray8, yuyv, nv12, i420, mjpeg)")]
    UnknownFormat(String),
    /// Width or height out of range.
    #[error("frame size {width}x{height} is out of range (1..=16384 each)")]
    BadSize {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },
    /// A subsampled format with an odd dimension.
    #[error("{pixel} needs an even width (and an even height for 4:2:0), got {width}x{height}")]
    OddSize {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
        /// The format.
        pixel: PixelFormat,
    },
    /// A frame rate with a zero denominator.
    #[error("frame rate {num}/{den} is invalid")]
    BadRate {
        /// Numerator.
        num: u32,
        /// Denominator.
        den: u32,
    },
    /// A maximum payload for a raw format.
    #[error("{0} is not a compressed format; its frame size is fixed")]
    NotCompressed(PixelFormat),
    /// A maximum payload out of range.
    #[error("maximum payload {0} bytes is out of range (1 B..=1 GiB)")]
    BadPayload(u64),
}

/// A stream name that is not `[A-Za-z0-9_.-]{1,64}`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// The empty name.
    #[error("stream name is empty")]
    Empty,
    /// Longer than 64 bytes.
    #[error("stream name is {0} characters long; at most 64 are allowed")]
    TooLong(usize),
    /// A character outside `[A-Za-z0-9_.-]`.
    #[error("stream name {name:?} contains {ch:?}; only letters, digits, '_', '.' and '-' are allowed")]
    BadChar {
        /// The name as given.
        name: String,
        /// The first bad character.
        ch: char,
    },
    /// `.` or `..`.
    #[error("stream name {0:?} is reserved")]
    Reserved(String),
}

/// A header that fails validation. Produced by [`crate::header::decode`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    /// The object is smaller than the header page.
    #[error("object is {size} bytes, smaller than the {needed}-byte header (truncated or not a shmcast segment)")]
    TooSmall {
        /// Real size of the object.
        size: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// The magic is not shmcast's.
    #[error("bad magic {found:#018x} (not a shmcast segment)")]
    BadMagic {
        /// The magic found.
        found: u64,
    },
    /// The producer has not finished initialising the segment.
    #[error("segment is not initialised yet")]
    NotReady,
    /// Another layout version.
    #[error("layout version {found}, this build reads version {expected}")]
    VersionMismatch {
        /// Version this build understands.
        expected: u32,
        /// Version found.
        found: u32,
    },
    /// The header's total size disagrees with the object's real size.
    #[error("header says {claimed} bytes but the object is {actual} bytes (truncated?)")]
    SizeMismatch {
        /// Size in the header.
        claimed: u64,
        /// Real size (fstat).
        actual: u64,
    },
    /// The slot count is not a power of two in range.
    #[error("slot count {0} is invalid (expected a power of two from 2 to 65536)")]
    SlotCount(u64),
    /// A geometry field is inconsistent (overflow, misalignment, out of bounds).
    #[error("inconsistent geometry: {0}")]
    Geometry(&'static str),
    /// An unknown pixel format.
    #[error("unknown pixel format fourcc {0:#010x}")]
    UnknownFourcc(u32),
    /// The video format fields are inconsistent.
    #[error("invalid video format: {0}")]
    Format(FormatError),
}

// Not `#[from]`: that would also make it the error's `source`, and a chain
// printed with `{:#}` would say it twice.
impl From<FormatError> for HeaderError {
    fn from(e: FormatError) -> Self {
        HeaderError::Format(e)
    }
}

/// Why a segment could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// A bad name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A bad format.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Slot count out of range.
    #[error("slot count {0} is invalid (expected a power of two from 2 to 65536)")]
    Slots(u32),
    /// Another producer owns the name (it holds the name's lock).
    #[error("stream {name} is owned by another running producer ({holder}); stop it first or choose another name")]
    InUse {
        /// The stream name.
        name: String,
        /// Pid of the owner as its segment records it (0 if it has none yet).
        pid: u32,
        /// Who holds it, in words: pid, state and heartbeat age.
        holder: String,
    },
    /// Something that is not a shmcast segment holds the name.
    #[error(
        "cannot create stream {name}: {path} exists and is not a usable shmcast segment ({reason}); remove it if nothing uses it"
    )]
    Foreign {
        /// The stream name.
        name: String,
        /// Path of the object.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Not enough room in the filesystem backing the segment.
    #[error(
        "cannot create stream {name}: needs {needed} bytes ({needed_mib:.1} MiB) but {dir} has only {free} bytes ({free_mib:.1} MiB) free"
    )]
    NoSpace {
        /// The stream name.
        name: String,
        /// Directory of the object.
        dir: String,
        /// Bytes needed.
        needed: u64,
        /// Same in MiB.
        needed_mib: f64,
        /// Bytes free.
        free: u64,
        /// Same in MiB.
        free_mib: f64,
    },
    /// Huge pages requested but none (or too few) reserved, or no hugetlbfs.
    #[error("cannot create stream {name} on huge pages: {reason}")]
    HugePages {
        /// The stream name.
        name: String,
        /// What is missing.
        reason: String,
    },
    /// `mlock` failed.
    #[error("cannot lock stream {name} in memory ({bytes} bytes): {error} (raise RLIMIT_MEMLOCK or run as root)")]
    Mlock {
        /// The stream name.
        name: String,
        /// Bytes to lock.
        bytes: u64,
        /// The OS error (part of the message, so not also a `source`).
        error: io::Error,
    },
    /// An unknown group name.
    #[error("unknown group {0:?}")]
    Group(String),
    /// Any other OS error, with the step that failed.
    #[error("cannot create stream {name}: {op}: {error}")]
    Io {
        /// The stream name.
        name: String,
        /// The step.
        op: &'static str,
        /// The OS error (part of the message, so not also a `source`).
        error: io::Error,
    },
}

/// Why a segment could not be opened for reading.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A bad name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// No object under that name.
    #[error("cannot open stream {name}: not found (is the producer running?)")]
    NotFound {
        /// The stream name.
        name: String,
    },
    /// The caller may not read the object.
    #[error("cannot open stream {name}: permission denied on {path} (mode 0640: join the producer's group)")]
    PermissionDenied {
        /// The stream name.
        name: String,
        /// Path of the object.
        path: String,
    },
    /// The object is not (yet) a valid segment.
    #[error("cannot open stream {name}: {reason}")]
    Invalid {
        /// The stream name.
        name: String,
        /// What validation found (part of the message, so not also a `source`).
        reason: HeaderError,
    },
    /// Any other OS error.
    #[error("cannot open stream {name}: {op}: {error}")]
    Io {
        /// The stream name.
        name: String,
        /// The step.
        op: &'static str,
        /// The OS error (part of the message, so not also a `source`).
        error: io::Error,
    },
}

impl OpenError {
    /// True when waiting may help: the producer is not there yet or is still
    /// initialising.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            OpenError::NotFound { .. }
                | OpenError::Invalid { reason: HeaderError::NotReady, .. }
                | OpenError::Invalid { reason: HeaderError::TooSmall { .. }, .. }
        )
    }
}

/// Why [`crate::Writer::commit_loan`] or [`crate::Writer::commit_in_place`]
/// did not commit a lent slot. Nothing was published; the caller still has
/// the frame's bytes and can publish them by copying.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoanError {
    /// This writer has no loan out (it never lent, or the loan was dropped),
    /// or the loan is another writer's (e.g. one replaced after a format change).
    #[error("no slot of this writer is lent out")]
    NotLent,
    /// The bytes are not exactly the lent slot (another buffer, a part of
    /// the slot, or memory of another writer).
    #[error("the bytes are not the lent slot")]
    NotTheSlot,
    /// The loan's frame was already committed.
    #[error("the lent slot was already committed (sequence {seq})")]
    Committed {
        /// The loan's sequence.
        seq: u64,
    },
    /// Frames were written since the slot was lent: its sequence was
    /// passed over, and committing it now would publish out of order.
    #[error("the lent slot's sequence {seq} was passed over (next is {next})")]
    Stale {
        /// The loan's sequence.
        seq: u64,
        /// The writer's next sequence.
        next: u64,
    },
}
