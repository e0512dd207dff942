//! The catalog: one SQLite database per recording directory
//! (`DIR/catalog.sqlite`, WAL) listing segments, the frames each holds
//! (producer frame id, capture time, position in the file, keyframe), events
//! and clips. It answers "where is frame N" and "what was recorded at T".
//!
//! Invariants:
//! - Every change is one transaction: a segment opened, a batch of frames
//!   appended (with the segment's summary columns), a segment closed, trimmed
//!   or deleted (its frames with it), an event, a clip. A reader never sees a
//!   segment half-deleted or frames without their segment.
//! - Paths are relative to the directory, so a recording can be moved.
//! - A segment row exists before its file is written and is deleted before
//!   its file is removed: a crash leaves at worst an `open` row (repaired
//!   from the file at the next start, [`crate::recorder::repair`]) or a file
//!   without a row (removed at the next start).
//! - Frame ids restart with a producer, so one id may be in several
//!   segments; lookups take the newest.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

/// The catalog's file name inside the recording directory.
pub const FILE: &str = "catalog.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    stream TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    format TEXT NOT NULL,
    codec TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'closed')),
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    first_frame INTEGER,
    last_frame INTEGER,
    frames INTEGER NOT NULL DEFAULT 0,
    keyframes INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS segments_start ON segments (start_ns);
CREATE TABLE IF NOT EXISTS frames (
    segment_id INTEGER NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    frame_id INTEGER NOT NULL,
    capture_ns INTEGER NOT NULL,
    pts_ns INTEGER NOT NULL,
    key INTEGER NOT NULL,
    PRIMARY KEY (segment_id, frame_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    start_frame INTEGER,
    end_frame INTEGER,
    received_ns INTEGER NOT NULL,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS clips (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    event_id INTEGER REFERENCES events (id) ON DELETE SET NULL,
    from_ns INTEGER NOT NULL,
    to_ns INTEGER NOT NULL,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    first_frame INTEGER,
    last_frame INTEGER,
    frames INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    method TEXT NOT NULL
);
";

/// A segment as catalogued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Row id.
    pub id: i64,
    /// Path relative to the recording directory.
    pub path: String,
    /// Stream name.
    pub stream: String,
    /// Producer epoch.
    pub epoch: u64,
    /// The ring format, as text.
    pub format: String,
    /// `h264` or `jpeg`.
    pub codec: String,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// `open` (being written, or not repaired after a crash) or `closed`.
    pub state: String,
    /// Capture time of the first frame (Unix ns).
    pub start_ns: u64,
    /// Capture time of the last catalogued frame.
    pub end_ns: u64,
    /// First frame id.
    pub first_frame: Option<u64>,
    /// Last frame id.
    pub last_frame: Option<u64>,
    /// Frames catalogued.
    pub frames: u64,
    /// Keyframes among them.
    pub keyframes: u64,
    /// Frames of the producer not recorded between the first and last frame.
    pub lost: u64,
    /// File size (at close, or at the last update).
    pub bytes: u64,
}

/// A frame as catalogued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRow {
    /// Producer frame id.
    pub frame_id: u64,
    /// Capture time (Unix ns).
    pub capture_ns: u64,
    /// Timestamp in the segment file (ns from the segment's start).
    pub pts_ns: u64,
    /// Keyframe (decodable on its own).
    pub key: bool,
}

/// Where a frame is.
#[derive(Clone, Debug)]
pub struct Located {
    /// Its segment.
    pub segment: Segment,
    /// The frame.
    pub frame: FrameRow,
}

/// A clip as catalogued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clip {
    /// Row id.
    pub id: i64,
    /// Path relative to the recording directory.
    pub path: String,
    /// The event it was cut for.
    pub event_id: Option<i64>,
    /// Asked range (Unix ns).
    pub from_ns: u64,
    /// Asked range end.
    pub to_ns: u64,
    /// Capture time of its first frame.
    pub first_ns: u64,
    /// Capture time of its last frame.
    pub last_ns: u64,
    /// First frame id.
    pub first_frame: Option<u64>,
    /// Last frame id.
    pub last_frame: Option<u64>,
    /// Frames.
    pub frames: u64,
    /// Bytes.
    pub bytes: u64,
    /// When it was cut.
    pub created_ns: u64,
    /// How: `copy` (stream copy).
    pub method: String,
}

/// An event to record.
#[derive(Clone, Debug)]
pub struct EventRow {
    /// `file` or `mqtt`.
    pub source: String,
    /// The event's type (`meteor`, `motion`, ...).
    pub kind: String,
    /// Start capture time.
    pub start_ns: u64,
    /// End capture time.
    pub end_ns: u64,
    /// First frame id.
    pub start_frame: Option<u64>,
    /// Last frame id.
    pub end_frame: Option<u64>,
    /// When it arrived.
    pub received_ns: u64,
    /// The event as received.
    pub json: String,
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn ou(v: Option<i64>) -> Option<u64> {
    v.map(u)
}

const SEGMENT_COLS: &str = "id, path, stream, epoch, format, codec, width, height, state, start_ns, end_ns, \
                            first_frame, last_frame, frames, keyframes, lost, bytes";

fn segment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Segment> {
    Ok(Segment {
        id: r.get(0)?,
        path: r.get(1)?,
        stream: r.get(2)?,
        epoch: r.get::<_, i64>(3)? as u64,
        format: r.get(4)?,
        codec: r.get(5)?,
        width: u(r.get(6)?) as u32,
        height: u(r.get(7)?) as u32,
        state: r.get(8)?,
        start_ns: u(r.get(9)?),
        end_ns: u(r.get(10)?),
        first_frame: ou(r.get(11)?),
        last_frame: ou(r.get(12)?),
        frames: u(r.get(13)?),
        keyframes: u(r.get(14)?),
        lost: u(r.get(15)?),
        bytes: u(r.get(16)?),
    })
}

const CLIP_COLS: &str =
    "id, path, event_id, from_ns, to_ns, first_ns, last_ns, first_frame, last_frame, frames, bytes, created_ns, method";

fn clip_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Clip> {
    Ok(Clip {
        id: r.get(0)?,
        path: r.get(1)?,
        event_id: r.get(2)?,
        from_ns: u(r.get(3)?),
        to_ns: u(r.get(4)?),
        first_ns: u(r.get(5)?),
        last_ns: u(r.get(6)?),
        first_frame: ou(r.get(7)?),
        last_frame: ou(r.get(8)?),
        frames: u(r.get(9)?),
        bytes: u(r.get(10)?),
        created_ns: u(r.get(11)?),
        method: r.get(12)?,
    })
}

fn frame_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FrameRow> {
    Ok(FrameRow {
        frame_id: u(r.get(0)?),
        capture_ns: u(r.get(1)?),
        pts_ns: u(r.get(2)?),
        key: r.get::<_, i64>(3)? != 0,
    })
}

/// A segment about to be written.
#[derive(Clone, Debug)]
pub struct NewSegment<'a> {
    /// Path relative to the directory.
    pub path: &'a str,
    /// Stream name.
    pub stream: &'a str,
    /// Producer epoch.
    pub epoch: u64,
    /// Ring format as text.
    pub format: &'a str,
    /// `h264` or `jpeg`.
    pub codec: &'a str,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Capture time of its first frame.
    pub start_ns: u64,
}

/// An open catalog.
pub struct Catalog {
    conn: Connection,
    dir: PathBuf,
}

/// Whether an error is SQLite's "database or disk is full".
pub fn is_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<rusqlite::Error>()
            .and_then(rusqlite::Error::sqlite_error_code)
            .is_some_and(|code| code == rusqlite::ErrorCode::DiskFull)
            || c.downcast_ref::<std::io::Error>().is_some_and(|io| io.raw_os_error() == Some(libc_enospc()))
    })
}

const fn libc_enospc() -> i32 {
    28
}

impl Catalog {
    /// Opens (with `create`: creates) the catalog of `dir`.
    pub fn open(dir: &Path, create: bool) -> anyhow::Result<Catalog> {
        let path = dir.join(FILE);
        if !create && !path.is_file() {
            bail!("no recording in {} ({} not found)", dir.display(), FILE);
        }
        let flags = if create {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags)
            .with_context(|| format!("cannot open catalog {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .with_context(|| format!("{} is not a usable shmcast catalog", path.display()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!("catalog {}: cannot switch to WAL (journal mode {mode})", path.display());
        }
        // NORMAL in WAL: a power loss may lose the last transactions, never
        // consistency; the start-up repair trims to what the files hold.
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
        if create {
            conn.execute_batch(SCHEMA).with_context(|| format!("cannot create catalog {}", path.display()))?;
        } else {
            let ok: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'segments'", [], |r| {
                    r.get(0)
                })
                .with_context(|| format!("{} is not a shmcast catalog", path.display()))?;
            if ok == 0 {
                bail!("{} is not a shmcast catalog (no segments table)", path.display());
            }
        }
        Ok(Catalog { conn, dir: dir.to_path_buf() })
    }

    /// The recording directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Absolute path of a catalogued relative path.
    pub fn abs(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Sets a metadata value.
    pub fn set_meta(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", params![key, value])?;
        Ok(())
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    /// Adds an open segment; returns its id.
    pub fn insert_segment(&self, s: &NewSegment<'_>) -> anyhow::Result<i64> {
        self.conn.execute(
            "INSERT INTO segments (path, stream, epoch, format, codec, width, height, state, start_ns, end_ns) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8, ?8)",
            params![s.path, s.stream, s.epoch as i64, s.format, s.codec, s.width, s.height, i(s.start_ns)],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Appends frames to a segment and updates its summary, in one transaction.
    pub fn append_frames(&mut self, segment: i64, frames: &[FrameRow], bytes: u64) -> anyhow::Result<()> {
        if frames.is_empty() {
            self.conn.execute("UPDATE segments SET bytes = ?2 WHERE id = ?1", params![segment, i(bytes)])?;
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO frames (segment_id, frame_id, capture_ns, pts_ns, key) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for f in frames {
                ins.execute(params![segment, i(f.frame_id), i(f.capture_ns), i(f.pts_ns), f.key])?;
            }
        }
        Self::summarize(&tx, segment, Some(bytes))?;
        tx.commit()?;
        Ok(())
    }

    /// Recomputes a segment's summary columns from its frames.
    fn summarize(conn: &Connection, segment: i64, bytes: Option<u64>) -> anyhow::Result<()> {
        conn.execute(
            "UPDATE segments SET \
               first_frame = (SELECT frame_id FROM frames WHERE segment_id = ?1 ORDER BY pts_ns LIMIT 1), \
               last_frame = (SELECT frame_id FROM frames WHERE segment_id = ?1 ORDER BY pts_ns DESC LIMIT 1), \
               start_ns = coalesce((SELECT min(capture_ns) FROM frames WHERE segment_id = ?1), start_ns), \
               end_ns = coalesce((SELECT max(capture_ns) FROM frames WHERE segment_id = ?1), start_ns), \
               frames = (SELECT count(*) FROM frames WHERE segment_id = ?1), \
               keyframes = (SELECT count(*) FROM frames WHERE segment_id = ?1 AND key), \
               lost = coalesce((SELECT max(frame_id) - min(frame_id) + 1 - count(*) FROM frames \
                                WHERE segment_id = ?1), 0), \
               bytes = coalesce(?2, bytes) \
             WHERE id = ?1",
            params![segment, bytes.map(i)],
        )?;
        Ok(())
    }

    /// Marks a segment closed with its final size.
    pub fn close_segment(&self, segment: i64, bytes: u64) -> anyhow::Result<()> {
        self.conn
            .execute("UPDATE segments SET state = 'closed', bytes = ?2 WHERE id = ?1", params![segment, i(bytes)])?;
        Ok(())
    }

    /// Keeps only the frames of a segment whose file timestamp is at most
    /// `max_pts_ns` (`None`: none) and closes it; deletes it when nothing is
    /// left. Returns the frames kept.
    pub fn trim_segment(&mut self, segment: i64, max_pts_ns: Option<u64>, bytes: u64) -> anyhow::Result<u64> {
        let tx = self.conn.transaction()?;
        match max_pts_ns {
            Some(max) => {
                tx.execute("DELETE FROM frames WHERE segment_id = ?1 AND pts_ns > ?2", params![segment, i(max)])?
            }
            None => tx.execute("DELETE FROM frames WHERE segment_id = ?1", [segment])?,
        };
        let left: i64 = tx.query_row("SELECT count(*) FROM frames WHERE segment_id = ?1", [segment], |r| r.get(0))?;
        if left == 0 {
            tx.execute("DELETE FROM segments WHERE id = ?1", [segment])?;
        } else {
            Self::summarize(&tx, segment, Some(bytes))?;
            tx.execute("UPDATE segments SET state = 'closed' WHERE id = ?1", [segment])?;
        }
        tx.commit()?;
        Ok(u(left))
    }

    /// Deletes a segment and its frames (one transaction); returns its path.
    pub fn delete_segment(&mut self, segment: i64) -> anyhow::Result<Option<String>> {
        let tx = self.conn.transaction()?;
        let path: Option<String> =
            tx.query_row("SELECT path FROM segments WHERE id = ?1", [segment], |r| r.get(0)).optional()?;
        tx.execute("DELETE FROM frames WHERE segment_id = ?1", [segment])?;
        tx.execute("DELETE FROM segments WHERE id = ?1", [segment])?;
        tx.commit()?;
        Ok(path)
    }

    /// SQLite's `PRAGMA integrity_check`: `ok` for a whole database.
    pub fn integrity_check(&self) -> anyhow::Result<String> {
        Ok(self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    /// All segments, oldest first.
    pub fn segments(&self) -> anyhow::Result<Vec<Segment>> {
        let mut st = self.conn.prepare_cached(&format!("SELECT {SEGMENT_COLS} FROM segments ORDER BY start_ns, id"))?;
        let rows = st.query_map([], segment_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Segments in state `open`.
    pub fn open_segments(&self) -> anyhow::Result<Vec<Segment>> {
        Ok(self.segments()?.into_iter().filter(|s| s.state == "open").collect())
    }

    /// One segment.
    pub fn segment(&self, id: i64) -> anyhow::Result<Option<Segment>> {
        Ok(self
            .conn
            .query_row(&format!("SELECT {SEGMENT_COLS} FROM segments WHERE id = ?1"), [id], segment_row)
            .optional()?)
    }

    /// `[from, to]` widened to the catalogued frames that cover it: the last
    /// frame captured at or before `from` (the picture on screen at that
    /// instant) and the first captured at or after `to`. A bound with no such
    /// frame stays as it is. Looks only into the one segment on each side
    /// (the segments index, then the frames' primary key).
    pub fn covering(&self, from: u64, to: u64) -> anyhow::Result<(u64, u64)> {
        let lo: Option<i64> = self
            .conn
            .query_row(
                "SELECT (SELECT MAX(f.capture_ns) FROM frames f WHERE f.segment_id = s.id AND f.capture_ns <= ?1) \
                 FROM segments s WHERE s.start_ns <= ?1 AND s.frames > 0 ORDER BY s.start_ns DESC, s.id DESC LIMIT 1",
                [i(from)],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let hi: Option<i64> = self
            .conn
            .query_row(
                "SELECT (SELECT MIN(f.capture_ns) FROM frames f WHERE f.segment_id = s.id AND f.capture_ns >= ?1) \
                 FROM segments s WHERE s.end_ns >= ?1 AND s.frames > 0 ORDER BY s.start_ns, s.id LIMIT 1",
                [i(to)],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok((lo.map_or(from, u), hi.map_or(to, u)))
    }

    /// Segments holding frames captured in `[from, to]`, oldest first.
    pub fn segments_overlapping(&self, from: u64, to: u64) -> anyhow::Result<Vec<Segment>> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {SEGMENT_COLS} FROM segments WHERE end_ns >= ?1 AND start_ns <= ?2 AND frames > 0 \
             ORDER BY start_ns, id"
        ))?;
        let rows = st.query_map(params![i(from), i(to)], segment_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The frames of a segment in file order.
    pub fn frames(&self, segment: i64) -> anyhow::Result<Vec<FrameRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT frame_id, capture_ns, pts_ns, key FROM frames WHERE segment_id = ?1 ORDER BY pts_ns",
        )?;
        let rows = st.query_map([segment], frame_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The newest recording of frame `id`.
    pub fn find_id(&self, id: u64) -> anyhow::Result<Option<Located>> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {SEGMENT_COLS} FROM segments WHERE first_frame <= ?1 AND last_frame >= ?1 \
             ORDER BY start_ns DESC, id DESC"
        ))?;
        let segs = st.query_map([i(id)], segment_row)?.collect::<Result<Vec<_>, _>>()?;
        for s in segs {
            let f = self
                .conn
                .query_row(
                    "SELECT frame_id, capture_ns, pts_ns, key FROM frames WHERE segment_id = ?1 AND frame_id = ?2",
                    params![s.id, i(id)],
                    frame_row,
                )
                .optional()?;
            if let Some(frame) = f {
                return Ok(Some(Located { segment: s, frame }));
            }
        }
        Ok(None)
    }

    /// The frame captured nearest to `t` (within a segment's span, or the
    /// nearest segment edge within `slack`).
    pub fn find_time(&self, t: u64, slack: Duration) -> anyhow::Result<Option<Located>> {
        let slack = slack.as_nanos() as u64;
        let segs = self.segments_overlapping(t.saturating_sub(slack), t.saturating_add(slack))?;
        let mut best: Option<(u64, Located)> = None;
        for s in segs {
            let f = self
                .conn
                .query_row(
                    "SELECT frame_id, capture_ns, pts_ns, key FROM frames WHERE segment_id = ?1 \
                     ORDER BY abs(capture_ns - ?2) LIMIT 1",
                    params![s.id, i(t)],
                    frame_row,
                )
                .optional()?;
            if let Some(frame) = f {
                let d = frame.capture_ns.abs_diff(t);
                if d <= slack && best.as_ref().is_none_or(|(bd, _)| d < *bd) {
                    best = Some((d, Located { segment: s, frame }));
                }
            }
        }
        Ok(best.map(|(_, l)| l))
    }

    /// Total bytes of the segments.
    pub fn segment_bytes(&self) -> anyhow::Result<u64> {
        Ok(u(self.conn.query_row("SELECT coalesce(sum(bytes), 0) FROM segments", [], |r| r.get(0))?))
    }

    /// Records an event; returns its id.
    pub fn insert_event(&self, e: &EventRow) -> anyhow::Result<i64> {
        self.conn.execute(
            "INSERT INTO events (source, kind, start_ns, end_ns, start_frame, end_frame, received_ns, json) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                e.source,
                e.kind,
                i(e.start_ns),
                i(e.end_ns),
                e.start_frame.map(i),
                e.end_frame.map(i),
                i(e.received_ns),
                e.json
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records a clip; returns its id.
    pub fn insert_clip(&self, c: &Clip) -> anyhow::Result<i64> {
        self.conn.execute(
            "INSERT INTO clips (path, event_id, from_ns, to_ns, first_ns, last_ns, first_frame, last_frame, frames, \
             bytes, created_ns, method) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                c.path,
                c.event_id,
                i(c.from_ns),
                i(c.to_ns),
                i(c.first_ns),
                i(c.last_ns),
                c.first_frame.map(i),
                c.last_frame.map(i),
                i(c.frames),
                i(c.bytes),
                i(c.created_ns),
                c.method
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// All clips, oldest first.
    pub fn clips(&self) -> anyhow::Result<Vec<Clip>> {
        let mut st = self.conn.prepare_cached(&format!("SELECT {CLIP_COLS} FROM clips ORDER BY created_ns, id"))?;
        let rows = st.query_map([], clip_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Deletes a clip row; returns its path.
    pub fn delete_clip(&self, id: i64) -> anyhow::Result<Option<String>> {
        let path: Option<String> =
            self.conn.query_row("SELECT path FROM clips WHERE id = ?1", [id], |r| r.get(0)).optional()?;
        self.conn.execute("DELETE FROM clips WHERE id = ?1", [id])?;
        Ok(path)
    }

    /// The event JSON of a clip.
    pub fn event_json(&self, event_id: i64) -> anyhow::Result<Option<String>> {
        Ok(self.conn.query_row("SELECT json FROM events WHERE id = ?1", [event_id], |r| r.get(0)).optional()?)
    }

    /// Runs a passive WAL checkpoint (keeps the WAL file small).
    pub fn checkpoint(&self) {
        let _ = self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("shmcast-record-cat-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn seg<'a>(path: &'a str, start: u64) -> NewSegment<'a> {
        NewSegment {
            path,
            stream: "cam0",
            epoch: 7,
            format: "640x360 i420",
            codec: "h264",
            width: 640,
            height: 360,
            start_ns: start,
        }
    }

    #[test]
    fn frames_segments_lookups_and_trim() {
        let d = tmp("basic");
        let mut c = Catalog::open(&d, true).unwrap();
        let a = c.insert_segment(&seg("segments/a.mp4", 1_000)).unwrap();
        let frames: Vec<FrameRow> = (0..10)
            .filter(|n| *n != 4)
            .map(|n| FrameRow { frame_id: n, capture_ns: 1_000 + n * 100, pts_ns: n * 100, key: n % 5 == 0 })
            .collect();
        c.append_frames(a, &frames, 1234).unwrap();
        let s = c.segment(a).unwrap().unwrap();
        assert_eq!((s.first_frame, s.last_frame, s.frames, s.keyframes, s.lost), (Some(0), Some(9), 9, 2, 1));
        assert_eq!((s.start_ns, s.end_ns, s.bytes, s.state.as_str()), (1_000, 1_900, 1234, "open"));
        assert_eq!(c.find_id(7).unwrap().unwrap().frame.capture_ns, 1_700);
        assert!(c.find_id(4).unwrap().is_none());
        assert_eq!(c.find_time(1_730, Duration::from_nanos(50)).unwrap().unwrap().frame.frame_id, 7);
        assert!(c.find_time(5_000, Duration::from_nanos(50)).unwrap().is_none());
        // The frames covering an interval: on screen at `from`, at or after `to`.
        assert_eq!(c.covering(1_250, 1_650).unwrap(), (1_200, 1_700));
        assert_eq!(c.covering(1_300, 1_300).unwrap(), (1_300, 1_300));
        // Frame 4 is missing: frame 3 is on screen at 1_450, frame 5 follows.
        assert_eq!(c.covering(1_450, 1_450).unwrap(), (1_300, 1_500));
        // Nothing before the first frame or after the last: the bound stays.
        assert_eq!(c.covering(900, 5_000).unwrap(), (900, 5_000));
        // A producer restart: ids again from 0; the newest wins.
        let b = c.insert_segment(&seg("segments/b.mp4", 10_000)).unwrap();
        c.append_frames(b, &[FrameRow { frame_id: 7, capture_ns: 10_000, pts_ns: 0, key: true }], 10).unwrap();
        assert_eq!(c.find_id(7).unwrap().unwrap().segment.id, b);
        assert_eq!(c.open_segments().unwrap().len(), 2);
        assert_eq!(c.trim_segment(a, Some(500), 600).unwrap(), 5);
        let s = c.segment(a).unwrap().unwrap();
        assert_eq!((s.last_frame, s.state.as_str(), s.bytes), (Some(5), "closed", 600));
        assert_eq!(c.trim_segment(b, None, 0).unwrap(), 0);
        assert!(c.segment(b).unwrap().is_none());
        assert_eq!(c.delete_segment(a).unwrap().as_deref(), Some("segments/a.mp4"));
        assert!(c.segments().unwrap().is_empty());
        assert!(c.frames(a).unwrap().is_empty());
        drop(c);
        assert!(Catalog::open(&d, false).is_ok());
        assert!(Catalog::open(&d.join("nope"), false).err().unwrap().to_string().contains("no recording"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn foreign_file_is_refused() {
        let d = tmp("foreign");
        std::fs::write(d.join(FILE), b"not a database at all, just some bytes that are long enough").unwrap();
        let e = Catalog::open(&d, false).err().unwrap();
        assert!(format!("{e:#}").contains("catalog"), "{e:#}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
