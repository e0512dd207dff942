//! The narrow OS layer: clocks, process liveness, free space, reservation.
//! Thin wrappers over `libc` whose only unsafety is the FFI call itself.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// `CLOCK_MONOTONIC` in ns: comparable across processes on one host.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME` in ns since the Unix epoch.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
    // The clocks used are always supported on Linux, so it cannot fail.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// Whether a process with this pid exists (EPERM counts as existing).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks the pid.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    let exists = r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    // A killed process that its parent has not reaped yet is a zombie: dead.
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()))
            .is_some_and(|state| state == 'Z' || state == 'X')
}

/// Bytes available to an unprivileged writer in the filesystem holding `dir`.
///
/// # Errors
/// `InvalidInput` for a path with a NUL byte, else the error of `statvfs(2)`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let c =
        CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Reserves `len` bytes of backing store for `file` (tmpfs/hugetlbfs pages),
/// so that touching them later can never raise SIGBUS.
///
/// # Errors
/// `InvalidInput` for a length above `off_t`, else the error of
/// `posix_fallocate(3)` (`ENOSPC` when the filesystem is full).
pub fn fallocate(file: &std::fs::File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: the fd is open and owned by `file` for the duration of the call.
    let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if r != 0 { Err(io::Error::from_raw_os_error(r)) } else { Ok(()) }
}

/// The gid of a group name, or the number itself.
pub fn group_id(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut it = l.split(':');
        (it.next()? == name).then(|| it.nth(1)?.parse().ok()).flatten()
    })
}

/// The size of a default huge page and the number free, from /proc/meminfo.
pub fn hugepages() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("Hugepagesize:") * 1024, field("HugePages_Free:"))
}

/// Mount points of hugetlbfs filesystems, from /proc/mounts.
pub fn hugetlbfs_mounts() -> Vec<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (_dev, dir, fs) = (it.next()?, it.next()?, it.next()?);
            (fs == "hugetlbfs").then(|| std::path::PathBuf::from(dir.replace("\\040", " ")))
        })
        .collect()
}

/// Resident set size of this process in bytes (from /proc/self/statm).
pub fn rss_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    text.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 4096
}

/// Random 64 bits from the kernel (for epochs).
pub fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is writable for 8 bytes; getrandom writes at most that.
    let r = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if r == 8 { u64::from_ne_bytes(buf) } else { realtime_ns() ^ (u64::from(std::process::id()) << 32) }
}

/// Pins the calling thread (and the threads it starts later) to `cpus`.
/// A benchmark hook, not part of the ring's API.
///
/// # Errors
/// `InvalidInput` for a CPU number of `CPU_SETSIZE` or more, else the error
/// of `sched_setaffinity(2)` (`EINVAL` when no CPU of the set is usable).
#[doc(hidden)]
pub fn pin_to_cpus(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set, a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: `c` is below CPU_SETSIZE (checked), so CPU_SET stays inside `set`.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Limits glibc's malloc to `n` arenas (`mallopt(M_ARENA_MAX)`). Call first
/// thing in `main`, before threads start: long-running processes whose
/// threads come and go (one GStreamer pipeline per RTSP client) otherwise
/// keep a per-thread arena each and their RSS creeps up. Returns false if
/// glibc refused. A process-tuning hook, not part of the ring's API.
#[doc(hidden)]
pub fn limit_malloc_arenas(n: i32) -> bool {
    // SAFETY: mallopt only changes allocator tuning; M_ARENA_MAX takes any
    // positive count and is safe to set at any time.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, n.max(1)) == 1 }
}

/// Opens (creating if needed, mode 0644) a lock file read-only. A lock file
/// another user created in a sticky directory (`/dev/shm`) may refuse
/// `O_CREAT` under `fs.protected_regular`; then it is opened as it is.
///
/// # Errors
/// `InvalidInput` for a path with a NUL byte, else the error of `open(2)`
/// (e.g. `ELOOP` for a symbolic link, which is never followed).
pub fn open_lock_file(path: &Path) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let c =
        CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a NUL-terminated path; open returns a new fd or -1.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o644 as libc::c_uint,
        )
    };
    if fd >= 0 {
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        return Ok(unsafe { std::fs::File::from_raw_fd(fd) });
    }
    let err = io::Error::last_os_error();
    if err.kind() != io::ErrorKind::PermissionDenied {
        return Err(err);
    }
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW).open(path)
}

/// Takes an exclusive `flock` on `file` without waiting: `Ok(false)` when
/// another open file description holds it. Released when the file is closed
/// (also when its process dies, however it dies).
///
/// # Errors
/// The error of `flock(2)` other than `EWOULDBLOCK` (retried on `EINTR`).
pub fn try_lock_exclusive(file: &std::fs::File) -> io::Result<bool> {
    loop {
        // SAFETY: the fd is open and owned by `file` for the duration of the call.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}
