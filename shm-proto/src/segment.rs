//! Creating, finding and opening segment objects: `shmcast.<name>` in
//! `/dev/shm` (or `$SHMCAST_SHM_DIR`), or in a hugetlbfs mount for huge pages.
//!
//! Ownership: a name has exactly one owner, the producer holding an exclusive
//! `flock` on `.shmcast.<name>.lock` in the default directory for its whole
//! life (also for huge-page segments: one name is one name across `/dev/shm`
//! and hugetlbfs mounts). The lock is taken around check + unlink + create,
//! released by the kernel however the owner dies, and is immune to pid reuse
//! and pid namespaces. While it is held, nobody else creates or removes the
//! name — also while the owner is stopped (SIGSTOP): a stopped producer still
//! owns its stream, readers see it stale, and it resumes without ever
//! writing into an orphaned object.
//!
//! Init-then-publish: the producer creates the object with `O_EXCL`, reserves
//! its memory, writes the header and control block, and stores the magic
//! *last* with Release. Openers that find the magic still 0 get
//! [`HeaderError::NotReady`] and retry.
//!
//! Readers validate the header from a `pread` copy *before* mapping anything,
//! and map read-only without pre-faulting: an object they reject costs them
//! no memory, whatever its size.
#![forbid(unsafe_code)]

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{CreateError, HeaderError, OpenError};
use crate::format::{Rect, VideoFormat};
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
/// A heartbeat further than this in the future is not a real one (a crafted
/// or corrupt segment): the producer counts as stale, never "alive forever".
pub const FUTURE_SLACK: Duration = Duration::from_secs(2);

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

/// Every path under which an object for `name` exists, in search order.
pub fn find_all(name: &StreamName, dir: Option<&Path>) -> Vec<PathBuf> {
    let dirs = dir.map(|d| vec![d.to_path_buf()]).unwrap_or_else(search_dirs);
    let mut out: Vec<PathBuf> =
        dirs.into_iter().map(|d| d.join(name.file_name())).filter(|p| p.symlink_metadata().is_ok()).collect();
    out.dedup();
    out
}

/// Names of all segment objects present (for listing tools), and of names
/// whose lock file remains (a producer starting, or one killed before it
/// could tidy up).
pub fn list() -> Vec<String> {
    let lock_names = std::fs::read_dir(default_dir()).into_iter().flatten().filter_map(|e| {
        let f = e.ok()?.file_name();
        let n = f.to_str()?.strip_prefix('.')?.strip_prefix(crate::name::PREFIX)?.strip_suffix(LOCK_SUFFIX)?;
        Some(n.to_string())
    });
    let mut out: Vec<String> = search_dirs()
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix(crate::name::PREFIX).map(str::to_string))
        .chain(lock_names)
        .filter(|n| StreamName::new(n).is_ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

const LOCK_SUFFIX: &str = ".lock";

/// The lock file whose `flock` makes a producer the owner of `name`:
/// `.shmcast.<name>.lock` in `dir` (the default directory for huge pages).
pub fn lock_path(name: &StreamName, dir: &Path) -> PathBuf {
    dir.join(format!(".{}{LOCK_SUFFIX}", name.file_name()))
}

/// The held ownership of a name. Dropping it removes the lock file (while
/// still holding it) and releases the name; a process that dies without
/// dropping it leaves the file, whose lock the kernel has released.
#[derive(Debug)]
pub struct Owner {
    file: std::fs::File,
    path: PathBuf,
}

impl Owner {
    /// Takes ownership of `name` (lock file in `dir`), or `Ok(None)` when a
    /// running process holds it.
    ///
    /// # Errors
    /// The lock file cannot be opened or locked (permissions, a missing directory).
    pub fn acquire(name: &StreamName, dir: &Path) -> io::Result<Option<Owner>> {
        let path = lock_path(name, dir);
        // A lock file may be unlinked by its releasing owner between our open
        // and our flock: then we hold a lock on an orphan and must retry on
        // the file now at the path. Each retry means another process just
        // released the name; a handful is plenty.
        for _ in 0..16 {
            let file = os::open_lock_file(&path)?;
            if !os::try_lock_exclusive(&file)? {
                return Ok(None);
            }
            let held = file.metadata()?;
            if same_object(&path, (held.dev(), held.ino())) {
                return Ok(Some(Owner { file, path }));
            }
        }
        Err(io::Error::new(io::ErrorKind::WouldBlock, "the name's lock file keeps being replaced"))
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // A process that opened this file before the unlink and locks it
        // after our close sees the path no longer names it, and retries.
        if let Ok(m) = self.file.metadata() {
            unlink_if_same(&self.path, (m.dev(), m.ino()));
        }
    }
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
    /// Heartbeat older than [`STALE_AFTER`] (crashed, killed, stopped or hung),
    /// or impossibly far in the future.
    Stale,
    /// The segment breaks the ring protocol (an unknown state, a `head` that
    /// goes backwards or past any real sequence): not followed further.
    Corrupt,
}

impl ProducerStatus {
    /// `starting`, `live`, `closed` or `stale`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProducerStatus::Starting => "starting",
            ProducerStatus::Live => "live",
            ProducerStatus::Closed => "closed",
            ProducerStatus::Stale => "stale",
            ProducerStatus::Corrupt => "corrupt",
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
    // SYNC(close): Acquire, so that a reader seeing CLOSED sees the final head.
    let st = crate::seq::load_state(&c.state.state);
    // Relaxed: a standalone timestamp; nothing is read through it.
    let hb = c.state.heartbeat_ns.load(Ordering::Relaxed);
    let now = os::monotonic_ns();
    let age = Duration::from_nanos(now.saturating_sub(hb));
    let ahead = Duration::from_nanos(hb.saturating_sub(now));
    let status = match st {
        layout::state::CLOSED => ProducerStatus::Closed,
        layout::state::STARTING | layout::state::LIVE if age > stale_after || ahead > FUTURE_SLACK => {
            ProducerStatus::Stale
        }
        layout::state::LIVE => ProducerStatus::Live,
        layout::state::STARTING => ProducerStatus::Starting,
        _ => ProducerStatus::Corrupt,
    };
    (status, age)
}

fn open_err<'a>(name: &'a StreamName, op: &'static str) -> impl FnOnce(io::Error) -> OpenError + 'a {
    move |error| OpenError::Io { name: name.to_string(), op, error }
}

/// Opens the segment of `name` read-only (`O_RDONLY`, `PROT_READ`) and
/// validates it. When objects of that name exist in several directories (a
/// stale one in `/dev/shm` beside a live huge-page one), the one whose
/// producer is alive wins.
pub(crate) fn open_readonly(name: &StreamName, dir: Option<&Path>) -> Result<Mapped, OpenError> {
    let mut first: Option<Result<Mapped, OpenError>> = None;
    for path in find_all(name, dir) {
        let r = open_path(name, &path);
        if let Ok(m) = &r
            && m.status(STALE_AFTER).0.is_alive()
        {
            return r;
        }
        if first.is_none() {
            first = Some(r);
        }
    }
    first.unwrap_or_else(|| Err(OpenError::NotFound { name: name.to_string() }))
}

/// Opens and validates the object at `path`: the header is read with
/// `pread` and validated before anything is mapped.
fn open_path(name: &StreamName, path: &Path) -> Result<Mapped, OpenError> {
    let file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path) {
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
    let mut bytes = [0u8; layout::HEADER_FIELDS_SIZE];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, 0).map_err(open_err(name, "read header"))?;
    let checked = header::decode_bytes(&bytes, size).map_err(invalid)?;
    let len =
        usize::try_from(size).map_err(|_| invalid(HeaderError::Geometry("object larger than the address space")))?;
    // No MAP_POPULATE: pages are touched only as frames are read.
    let region = Region::map(&file, len, false, false).map_err(open_err(name, "mmap"))?;
    // SYNC(publish): pairs with the Release store of the magic in `create`:
    // once we see it, the header bytes below are complete.
    let magic = region.magic().load(Ordering::Relaxed);
    fence(Ordering::Acquire);
    if magic == 0 {
        return Err(invalid(HeaderError::NotReady));
    }
    let decoded = header::decode(&region.read_header(), size).map_err(invalid)?;
    if decoded != checked {
        // The static header never changes after publish: this is not a
        // producer behaving, or an object replaced under the same inode.
        return Err(invalid(HeaderError::Geometry("the header changed while it was being opened")));
    }
    Ok(Mapped { region: Arc::new(region), decoded, path: path.to_path_buf(), dev_ino: (meta.dev(), meta.ino()) })
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
    /// The region the producer draws its own overlay into (a status band, a
    /// clock): recorded in the header so that consumers analysing pixels
    /// ignore it without being told.
    pub overlay: Option<Rect>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions { slots: 8, mode: 0o640, group: None, hugepages: false, mlock: false, dir: None, overlay: None }
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
    /// The held ownership of the name.
    pub owner: Owner,
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

/// What to do with an object found under a name we now own: its producer is
/// gone (we hold the lock), so a shmcast segment of any version, or one left
/// empty or half-made (magic still 0), is replaced (`Ok(pid)`, 0 when
/// unknown); anything else is not ours to delete (`Err(reason)`).
fn leftover(name: &StreamName, path: &Path) -> Result<u32, String> {
    let file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    if size == 0 {
        return Ok(0);
    }
    let mut magic = [0u8; 8];
    if std::os::unix::fs::FileExt::read_exact_at(&file, &mut magic, 0).is_err() {
        return Err(format!("{size} bytes, too small to be a segment"));
    }
    match u64::from_ne_bytes(magic) {
        0 => Ok(0),
        MAGIC => Ok(open_path(name, path).map(|m| m.decoded.identity.pid).unwrap_or(0)),
        found => Err(HeaderError::BadMagic { found }.to_string()),
    }
}

/// One object [`clean_stale`] looked at: its path, and the bytes it freed or
/// why it was left alone.
pub type Cleaned = (PathBuf, Result<u64, String>);

/// Removes the objects of `name` if no producer owns it: takes the name's
/// lock (so no producer can be creating it meanwhile), removes every shmcast
/// object of that name in the default directory and the huge-page mounts, and
/// releases the name. Returns `None` when a running producer holds the name
/// (it is never touched), else the paths removed with the bytes each held.
/// Objects under the name that are not shmcast segments are left alone and
/// reported as `Err` entries.
///
/// # Errors
/// The name's lock file cannot be opened or locked.
pub fn clean_stale(name: &StreamName) -> io::Result<Option<Vec<Cleaned>>> {
    let Some(owner) = Owner::acquire(name, &default_dir())? else { return Ok(None) };
    let mut out = Vec::new();
    for p in find_all(name, None) {
        match leftover(name, &p) {
            Ok(_) => {
                // Memory really held: allocated blocks, not the (maybe sparse) length.
                let bytes = std::fs::symlink_metadata(&p).map(|m| m.blocks() * 512).unwrap_or(0);
                match std::fs::remove_file(&p) {
                    Ok(()) => out.push((p, Ok(bytes))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => out.push((p, Err(format!("cannot remove it: {e}")))),
                }
            }
            Err(reason) => out.push((p, Err(format!("not a shmcast segment, left alone: {reason}")))),
        }
    }
    drop(owner);
    Ok(Some(out))
}

/// Describes the holder of a name for an error message.
fn holder(name: &StreamName, dirs: &[PathBuf]) -> (u32, String) {
    for d in dirs {
        if let Ok(m) = open_path(name, &d.join(name.file_name())) {
            let pid = m.decoded.identity.pid;
            let (status, age) = m.status(STALE_AFTER);
            let hint = match status {
                ProducerStatus::Stale => ": stopped or hung, it keeps the name until it exits",
                _ => "",
            };
            return (pid, format!("pid {pid}, {status}, heartbeat {} ms ago{hint}", age.as_millis()));
        }
    }
    (0, "a producer that is still setting the stream up".to_string())
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
    // One name across the default directory and the huge-page mounts.
    let mut dirs = vec![dir.clone()];
    dirs.extend(search_dirs().into_iter().filter(|d| *d != dir));
    let lock_dir = if opts.hugepages { default_dir() } else { dir.clone() };
    if !lock_dir.is_dir() {
        return Err(io_err("open directory")(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} does not exist", lock_dir.display()),
        )));
    }
    let owner = match Owner::acquire(name, &lock_dir).map_err(io_err("lock the name"))? {
        Some(o) => o,
        None => {
            let (pid, holder) = holder(name, &dirs);
            return Err(CreateError::InUse { name: name.to_string(), pid, holder });
        }
    };
    // We own the name: whatever is still under it was left by a producer
    // that is gone.
    let mut replaced = None;
    for d in &dirs {
        let p = d.join(name.file_name());
        if p.symlink_metadata().is_err() {
            continue;
        }
        match leftover(name, &p) {
            Ok(pid) => {
                replaced = Some(pid);
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("remove stale object")(e)),
                }
            }
            Err(reason) => {
                return Err(CreateError::Foreign { name: name.to_string(), path: p.display().to_string(), reason });
            }
        }
    }
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(CreateError::Foreign {
                name: name.to_string(),
                path: path.display().to_string(),
                reason: "created by a process that does not take the name's lock".into(),
            });
        }
        Err(e) => return Err(io_err("create")(e)),
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

    let fields = header::encode(&geometry, format, identity, opts.hugepages, opts.overlay);
    region.write_header(&fields);
    let c = region.control();
    // Relaxed: nobody reads these before the magic is published (Release below).
    crate::seq::store_state(&c.state.state, layout::state::STARTING);
    c.state.heartbeat_ns.store(os::monotonic_ns(), Ordering::Relaxed);
    c.head.store(0, Ordering::Relaxed);
    c.tail.store(0, Ordering::Relaxed);
    // SYNC(publish): pairs with the Acquire fence after the magic load in
    // `open_readonly`: everything written above is visible to an opener that
    // sees the magic.
    region.magic().store(MAGIC, Ordering::Release);

    guard.0 = None;
    Ok(Created { region: Arc::new(region), geometry, path, dev_ino: (meta.dev(), meta.ino()), replaced, owner })
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
