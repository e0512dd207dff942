//! A stream described in JSON, one way for every tool that shows it:
//! `shmcast-inspect --json` and shmcast-web's `/api/streams` both start from
//! [`segment`] and add what only they know.

use serde_json::{Map, Value, json};
use shm_proto::SegmentInfo;

use crate::procs::Process;

/// The keys describing a segment: its header as last read (`name`, `path`,
/// `state`, the producer's `pid`, `epoch` and `start_unix_ns`, the geometry,
/// `head`, `tail`, `heartbeat_age_ms`), the measured `fps` (rounded to
/// hundredths) and the `readers` mapping it (`{"pid", "command"}` each).
pub fn segment(i: &SegmentInfo, fps: f64, readers: &[Process]) -> Map<String, Value> {
    let readers: Vec<Value> = readers.iter().map(|p| json!({"pid": p.pid, "command": p.command})).collect();
    let heartbeat_age_ms = u64::try_from(i.heartbeat_age.as_millis()).unwrap_or(u64::MAX);
    let v = json!({
        "name": i.name,
        "path": i.path.display().to_string(),
        "state": i.status.as_str(),
        "pid": i.identity.pid,
        "epoch": i.identity.epoch,
        "start_unix_ns": i.identity.start_unix_ns,
        "width": i.format.width,
        "height": i.format.height,
        "format": i.format.pixel.name(),
        "fps_nominal": i.format.fps(),
        "frame_size": i.format.frame_size,
        "slots": i.slots,
        "slot_stride": i.slot_stride,
        "size_bytes": i.total_size,
        "hugepages": i.hugepages,
        "head": i.head,
        "tail": i.tail,
        "heartbeat_age_ms": heartbeat_age_ms,
        "fps": (fps * 100.0).round() / 100.0,
        "readers": readers,
    });
    let Value::Object(m) = v else { unreachable!("json! of an object literal is an object") };
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_a_live_segment() {
        let name = format!("describe-{}", std::process::id());
        let format = shm_proto::VideoFormat::new(4, 2, shm_proto::PixelFormat::Gray8, 25, 1).unwrap();
        let _w = shm_proto::Writer::create(&name, format, &shm_proto::CreateOptions::default()).unwrap();
        let info = shm_proto::Reader::open(&name, &shm_proto::ReaderOptions::default()).unwrap().info();
        let m = segment(&info, 29.996, &[Process { pid: 7, command: "shmcast-detect --name x".into() }]);
        assert_eq!(m["name"], name.as_str());
        assert_eq!(m["state"], info.status.as_str());
        assert_eq!(
            (m["width"].as_u64(), m["height"].as_u64(), m["format"].as_str()),
            (Some(4), Some(2), Some("gray8"))
        );
        assert_eq!(m["fps"], 30.0);
        assert_eq!(m["readers"], json!([{"pid": 7, "command": "shmcast-detect --name x"}]));
        assert_eq!(m.len(), 20, "{m:?}");
    }
}
