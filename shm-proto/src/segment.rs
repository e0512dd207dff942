//! Creating, finding and opening segment objects: `shmcast.<name>` in
//! `/dev/shm` (or `$SHMCAST_SHM_DIR`), or in a hugetlbfs mount for huge pages.
//!
//! Init-then-publish: the producer creates the object with `O_EXCL`, reserves
//! its memory, writes the header and control block, and stores the magic
//! *last* with Release. Openers that find the magic still 0 get
//! [`HeaderError::NotReady`] and retry.
#![forbid(unsafe_code)]

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{CreateError, HeaderError, OpenError};
use crate::format::VideoFormat;
use crate::header::{self, Decoded, Identity};
use crate::layout::{self, Geometry, MAGIC, PAGE};
use crate::name::StreamName;
use crate::os;
use crate::region::Region;
use crate::sync::{Ordering, fence};

/// Environment variable naming the directory for segments (default `/dev/shm`).
pub const ENV_DIR: &str = "SHMCAST_SHM_DIR";
/// A producer whose heartbeat is older than this is stale.
pub const STALE_AFTER: Duration = Duration::from_millis(500);

/// The directory normal (non-huge-page) segments are created in.
pub fn default_dir() -> PathBuf {
    std::env::var_os(ENV_DIR).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/dev/shm"))
}

/// Where readers look for a segment, in order: the default directory, then
/// every hugetlbfs mount.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![default_dir()];
    dirs.extend(os::hugetlbfs_mounts());
    dirs
}

/// The path of an existing segment object for `name`, if any.
pub fn find(name: &StreamName, dir: Option<&Path>) -> Option<PathBuf> {
    let dirs = dir.map(|d| vec![d.to_path_buf()]).unwrap_or_else(search_dirs);
    dirs.into_iter().map(|d| d.join(name.file_name())).find(|p| p.symlink_metadata().is_ok())
}

/// Names of all segment objects present (for listing tools).
pub fn list() -> Vec<String> {
    let mut out: Vec<String> = search_dirs()
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix(crate::name::PREFIX).map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What the producer of a segment is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProducerStatus {
    /// Created; no frame yet.
    Starting,
    /// Delivering frames.
    Live,
    /// Stopped cleanly.
    Closed,
    /// Heartbeat older than [`STALE_AFTER`] (crashed, killed or hung).
    Stale,
}

impl ProducerStatus {
    /// `starting`, `live`, `closed` or `stale`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProducerStatus::Starting => "starting",
            ProducerStatus::Live => "live",
            ProducerStatus::Closed => "closed",
            ProducerStatus::Stale => "stale",
        }
    }

    /// Starting or live.
    pub fn is_alive(self) -> bool {
        matches!(self, ProducerStatus::Starting | ProducerStatus::Live)
    }
}

impl std::fmt::Display for ProducerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An opened, validated segment.
pub(crate) struct Mapped {
    pub region: Arc<Region>,
    pub decoded: Decoded,
    pub path: PathBuf,
    pub dev_ino: (u64, u64),
}

impl Mapped {
    /// The producer's state and heartbeat age.
    pub fn status(&self, stale_after: Duration) -> (ProducerStatus, Duration) {
        status_of(&self.region, stale_after)
    }
}

pub(crate) fn status_of(region: &Region, stale_after: Duration) -> (ProducerStatus, Duration) {
    let c = region.control();
    // Relaxed: state and heartbeat are independent observations; nothing is
    // read through them.
    let st = c.state.0.state.load(Ordering::Relaxed);
    let hb = c.state.0.heartbeat_ns.load(Ordering::Relaxed);
    let age = Duration::from_nanos(os::monotonic_ns().saturating_sub(hb));
    let status = if st == layout::state::CLOSED {
        ProducerStatus::Closed
    } else if age > stale_after {
        ProducerStatus::Stale
    } else if st == layout::state::LIVE {
        ProducerStatus::Live
    } else {
        ProducerStatus::Starting
    };
    (status, age)
}

fn open_err<'a>(name: &'a StreamName, op: &'static str) -> impl FnOnce(io::Error) -> OpenError + 'a {
    move |error| OpenError::Io { name: name.to_string(), op, error }
}

/// Opens the segment of `name` read-only (`O_RDONLY`, `PROT_READ`) and validates it.
pub(crate) fn open_readonly(name: &StreamName, dir: Option<&Path>) -> Result<Mapped, OpenError> {
    let path = find(name, dir).ok_or_else(|| OpenError::NotFound { name: name.to_string() })?;
    let file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenError::NotFound { name: name.to_string() }),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(OpenError::PermissionDenied { name: name.to_string(), path: path.display().to_string() });
        }
        Err(e) => return Err(open_err(name, "open")(e)),
    };
    let meta = file.metadata().map_err(open_err(name, "fstat"))?;
    let invalid = |reason| OpenError::Invalid { name: name.to_string(), reason };
    if !meta.file_type().is_file() {
        return Err(invalid(HeaderError::Geometry("the object is not a regular file")));
    }
    let size = meta.len();
    if size < PAGE * 2 {
        return Err(invalid(HeaderError::TooSmall { size, needed: PAGE * 2 }));
    }
    let len =
        usize::try_from(size).map_err(|_| invalid(HeaderError::Geometry("object larger than the address space")))?;
    let region = Region::map(&file, len, false, true).map_err(open_err(name, "mmap"))?;
    // SYNC(publish): pairs with the Release store of the magic in `create`:
    // once we see it, the header bytes below are complete.
    let magic = region.magic().load(Ordering::Relaxed);
    fence(Ordering::Acquire);
    if magic == 0 {
        return Err(invalid(HeaderError::NotReady));
    }
    let decoded = header::decode(&region.read_header(), size).map_err(invalid)?;
    Ok(Mapped { region: Arc::new(region), decoded, path, dev_ino: (meta.dev(), meta.ino()) })
}

/// Options for creating a segment.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Slot count: a power of two, 2..=65536.
    pub slots: u32,
    /// File mode of the object (default `0o640`).
    pub mode: u32,
    /// Group owning the object (name or gid).
    pub group: Option<String>,
    /// Back the segment with huge pages (a hugetlbfs mount).
    pub hugepages: bool,
    /// Lock the segment in RAM.
    pub mlock: bool,
    /// Directory to create in (default: [`default_dir`], or the first hugetlbfs
    /// mount with `hugepages`).
    pub dir: Option<PathBuf>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions { slots: 8, mode: 0o640, group: None, hugepages: false, mlock: false, dir: None }
    }
}

/// A freshly created, published segment.
pub(crate) struct Created {
    pub region: Arc<Region>,
    pub geometry: Geometry,
    pub path: PathBuf,
    pub dev_ino: (u64, u64),
    /// Pid of a stale owner whose object was replaced.
    pub replaced: Option<u32>,
}

/// Removes the object on drop unless disarmed: nothing is left behind when
/// creation fails half-way.
struct UnlinkGuard(Option<PathBuf>);

impl Drop for UnlinkGuard {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Whether the object at `path` belongs to a live producer; `Err` describes
/// an object that is not a usable segment at all.
fn existing_owner(name: &StreamName, path: &Path) -> Result<Option<(u32, Duration)>, String> {
    let mapped = match open_readonly(name, path.parent()) {
        Ok(m) => m,
        Err(OpenError::NotFound { .. }) => return Ok(None),
        Err(OpenError::Invalid { reason: HeaderError::NotReady | HeaderError::TooSmall { .. }, .. }) => {
            // Being initialised by another producer right now, or left half-made
            // by one that died while creating. Give a creator 2 s.
            let young = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < Duration::from_secs(2));
            return if young { Ok(Some((0, Duration::ZERO))) } else { Ok(None) };
        }
        Err(e) => return Err(e.to_string()),
    };
    let pid = mapped.decoded.identity.pid;
    let (status, age) = mapped.status(STALE_AFTER);
    let alive = status.is_alive() && os::pid_alive(pid);
    Ok(alive.then_some((pid, age)))
}

/// Creates and publishes the segment for `name`.
pub(crate) fn create(
    name: &StreamName,
    format: &VideoFormat,
    opts: &CreateOptions,
    identity: &Identity,
) -> Result<Created, CreateError> {
    let slots = u64::from(opts.slots);
    if !(layout::MIN_SLOTS..=layout::MAX_SLOTS).contains(&slots) || !slots.is_power_of_two() {
        return Err(CreateError::Slots(opts.slots));
    }
    let io_err = |op: &'static str| move |error| CreateError::Io { name: name.to_string(), op, error };
    let huge_err = |reason: String| CreateError::HugePages { name: name.to_string(), reason };

    let (dir, align) = if opts.hugepages {
        let (huge, _) = os::hugepages();
        if huge == 0 {
            return Err(huge_err("this kernel reports no huge page size".into()));
        }
        let dir = match &opts.dir {
            Some(d) => d.clone(),
            None => os::hugetlbfs_mounts().into_iter().next().ok_or_else(|| {
                huge_err("no hugetlbfs is mounted (as root: mkdir -p /dev/hugepages && mount -t hugetlbfs none /dev/hugepages)".into())
            })?,
        };
        (dir, huge)
    } else {
        (opts.dir.clone().unwrap_or_else(default_dir), PAGE)
    };
    let geometry = Geometry::compute(slots, format.frame_size, align)
        .filter(|g| g.total_size <= isize::MAX as u64)
        .ok_or(CreateError::Slots(opts.slots))?;
    let gid = match &opts.group {
        Some(g) => Some(os::group_id(g).ok_or_else(|| CreateError::Group(g.clone()))?),
        None => None,
    };

    let path = dir.join(name.file_name());
    let mut replaced = None;
    let file = {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(f) => break f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 4 => {
                    match existing_owner(name, &path) {
                        Ok(Some((pid, age))) => {
                            return Err(CreateError::InUse {
                                name: name.to_string(),
                                pid,
                                age_ms: age.as_millis() as u64,
                            });
                        }
                        Ok(None) => {
                            replaced = open_readonly(name, Some(&dir)).ok().map(|m| m.decoded.identity.pid).or(Some(0));
                            match std::fs::remove_file(&path) {
                                Ok(()) => {}
                                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                                Err(e) => return Err(io_err("remove stale object")(e)),
                            }
                        }
                        Err(reason) => {
                            return Err(CreateError::Foreign {
                                name: name.to_string(),
                                path: path.display().to_string(),
                                reason,
                            });
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.is_dir() => {
                    return Err(io_err("open directory")(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{} does not exist", dir.display()),
                    )));
                }
                Err(e) => return Err(io_err("create")(e)),
            }
        }
    };
    let mut guard = UnlinkGuard(Some(path.clone()));

    file.set_permissions(std::fs::Permissions::from_mode(opts.mode & 0o7777)).map_err(io_err("chmod"))?;
    if let Some(gid) = gid {
        std::os::unix::fs::fchown(&file, None, Some(gid)).map_err(io_err("chown"))?;
    }

    // Reserve every page now: a too-small tmpfs is an error here, never a
    // SIGBUS mid-stream.
    let no_space = |free: u64| CreateError::NoSpace {
        name: name.to_string(),
        dir: dir.display().to_string(),
        needed: geometry.total_size,
        needed_mib: geometry.total_size as f64 / 1048576.0,
        free,
        free_mib: free as f64 / 1048576.0,
    };
    if opts.hugepages {
        let (huge, free_pages) = os::hugepages();
        let needed = geometry.total_size.div_ceil(huge);
        if free_pages < needed {
            return Err(huge_err(format!(
                "needs {needed} huge pages of {} KiB but {free_pages} are free (as root: echo {needed} > /proc/sys/vm/nr_hugepages)",
                huge / 1024
            )));
        }
    } else {
        let free = os::free_bytes(&dir).map_err(io_err("statvfs"))?;
        if free < geometry.total_size {
            return Err(no_space(free));
        }
    }
    match os::fallocate(&file, geometry.total_size) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
            if opts.hugepages {
                return Err(huge_err(format!("reserving {} bytes failed: {e}", geometry.total_size)));
            }
            return Err(no_space(os::free_bytes(&dir).unwrap_or(0)));
        }
        Err(e) => return Err(io_err("reserve memory (posix_fallocate)")(e)),
    }
    let meta = file.metadata().map_err(io_err("fstat"))?;
    let region = Region::map(&file, geometry.total_size as usize, true, true).map_err(|e| {
        if opts.hugepages && e.raw_os_error() == Some(libc::ENOMEM) {
            huge_err(format!("mapping {} bytes failed: {e}", geometry.total_size))
        } else {
            io_err("mmap")(e)
        }
    })?;
    if opts.mlock {
        region.mlock().map_err(|error| CreateError::Mlock {
            name: name.to_string(),
            bytes: geometry.total_size,
            error,
        })?;
    }

    let fields = header::encode(&geometry, format, identity, opts.hugepages);
    region.write_header(&fields);
    let c = region.control();
    // Relaxed: nobody reads these before the magic is published (Release below).
    c.state.0.state.store(layout::state::STARTING, Ordering::Relaxed);
    c.state.0.heartbeat_ns.store(os::monotonic_ns(), Ordering::Relaxed);
    c.head.0.store(0, Ordering::Relaxed);
    c.tail.0.store(0, Ordering::Relaxed);
    // SYNC(publish): pairs with the Acquire fence after the magic load in
    // `open_readonly`: everything written above is visible to an opener that
    // sees the magic.
    region.magic().store(MAGIC, Ordering::Release);

    guard.0 = None;
    Ok(Created { region: Arc::new(region), geometry, path, dev_ino: (meta.dev(), meta.ino()), replaced })
}

/// Removes `path` if it is still the object `(dev, ino)`: a producer never
/// removes a successor's segment.
pub(crate) fn unlink_if_same(path: &Path, dev_ino: (u64, u64)) {
    if let Ok(m) = std::fs::symlink_metadata(path)
        && (m.dev(), m.ino()) == dev_ino
    {
        let _ = std::fs::remove_file(path);
    }
}

/// Whether `path` still names the object `(dev, ino)`.
pub(crate) fn same_object(path: &Path, dev_ino: (u64, u64)) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == dev_ino)
}
