//! Helpers for the bridge's process tests: child guards, the real producer,
//! the bridge, and a minimal RTSP-over-TCP client that really PLAYs and
//! counts RTP data.
#![forbid(unsafe_code)]
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use shmcast_testkit::{Proc, bin as workspace_bin, require_tool, strip_ansi, unique_name as unique};

/// The real producer's test pattern, 30 fps.
pub fn producer(name: &str, w: u32, h: u32, format: &str) -> Proc {
    let mut p = Proc::spawn(
        "shmcast-producer",
        Command::new(workspace_bin("shmcast-producer")).args([
            "--name",
            name,
            "--source",
            "testsrc",
            "--width",
            &w.to_string(),
            "--height",
            &h.to_string(),
            "--format",
            format,
            "--fps",
            "30",
        ]),
    )
    .segment(name);
    p.wait_for_line("stream created", Duration::from_secs(20));
    p
}

/// The bridge on a free port; returns it and its URL once it serves.
pub fn bridge(name: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["--name", name, "--listen", "127.0.0.1:0", "--mount", "/test"];
    args.extend_from_slice(extra);
    let mut p = Proc::spawn("shmcast-rtsp", Command::new(env!("CARGO_BIN_EXE_shmcast-rtsp")).args(&args));
    let line = p.wait_for_line("serving", Duration::from_secs(30));
    (p, url_in(&line))
}

pub fn url_in(line: &str) -> String {
    let i = line.find("rtsp://").expect("url in line");
    line[i..].chars().take_while(|c| !c.is_whitespace()).collect()
}

pub fn addr_of(url: &str) -> SocketAddr {
    let rest = url.trim_start_matches("rtsp://");
    rest.split('/').next().unwrap().parse().expect("addr")
}

/// A response to an RTSP request.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A minimal RTSP client over one TCP connection, RTP interleaved.
pub struct RtspClient {
    stream: BufReader<TcpStream>,
    cseq: u32,
    pub session: Option<String>,
    auth: Option<String>,
    /// RTP packets received on channel 0, and those with the marker bit (frames).
    pub packets: u64,
    pub frames: u64,
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl RtspClient {
    pub fn connect(url: &str) -> std::io::Result<RtspClient> {
        let s = TcpStream::connect_timeout(&addr_of(url), Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(RtspClient { stream: BufReader::new(s), cseq: 0, session: None, auth: None, packets: 0, frames: 0 })
    }

    pub fn with_basic(mut self, user: &str, pass: &str) -> Self {
        self.auth = Some(format!("Basic {}", base64(format!("{user}:{pass}").as_bytes())));
        self
    }

    pub fn request(&mut self, method: &str, url: &str, extra: &[(&str, &str)]) -> std::io::Result<Response> {
        self.cseq += 1;
        let mut req = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\nUser-Agent: shmcast-test\r\n", self.cseq);
        if let Some(a) = &self.auth {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        if let Some(s) = &self.session {
            req.push_str(&format!("Session: {s}\r\n"));
        }
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.stream.get_mut().write_all(req.as_bytes())?;
        loop {
            match self.read_message()? {
                Some(r) => return Ok(r),
                None => continue, // interleaved data before the response
            }
        }
    }

    /// Reads one interleaved packet (`None`) or a response.
    fn read_message(&mut self) -> std::io::Result<Option<Response>> {
        let mut first = [0u8; 1];
        self.stream.read_exact(&mut first)?;
        if first[0] == b'$' {
            let mut hdr = [0u8; 3];
            self.stream.read_exact(&mut hdr)?;
            let len = usize::from(u16::from_be_bytes([hdr[1], hdr[2]]));
            let mut data = vec![0u8; len];
            self.stream.read_exact(&mut data)?;
            if hdr[0] == 0 {
                self.packets += 1;
                if data.len() > 1 && data[1] & 0x80 != 0 {
                    self.frames += 1;
                }
            }
            return Ok(None);
        }
        let mut status_line = vec![first[0]];
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        status_line.extend_from_slice(line.as_bytes());
        let status_line = String::from_utf8_lossy(&status_line).to_string();
        let status: u16 = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            self.stream.read_line(&mut l)?;
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        Ok(Some(Response { status, headers, body: String::from_utf8_lossy(&body).to_string() }))
    }

    /// DESCRIBE + SETUP (TCP interleaved) + PLAY. Returns the DESCRIBE
    /// response on a non-200 status.
    pub fn play(&mut self, url: &str) -> Result<(), Response> {
        let d = self.request("DESCRIBE", url, &[("Accept", "application/sdp")]).expect("DESCRIBE io");
        if d.status != 200 {
            return Err(d);
        }
        let base = d.header("Content-Base").unwrap_or(url).to_string();
        let control = d
            .body
            .lines()
            .skip_while(|l| !l.starts_with("m="))
            .find_map(|l| l.strip_prefix("a=control:"))
            .unwrap_or("stream=0")
            .trim()
            .to_string();
        let track = if control.starts_with("rtsp://") {
            control
        } else {
            format!("{}/{}", base.trim_end_matches('/'), control)
        };
        let s =
            self.request("SETUP", &track, &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")]).expect("SETUP io");
        if s.status != 200 {
            return Err(s);
        }
        self.session = s.header("Session").map(|v| v.split(';').next().unwrap_or(v).to_string());
        let p = self.request("PLAY", &base, &[("Range", "npt=0.000-")]).expect("PLAY io");
        if p.status != 200 {
            return Err(p);
        }
        Ok(())
    }

    /// Reads interleaved data until `frames` more frames arrived or `timeout`.
    pub fn receive_frames(&mut self, frames: u64, timeout: Duration) -> u64 {
        let start = self.frames;
        let deadline = Instant::now() + timeout;
        while self.frames - start < frames && Instant::now() < deadline {
            match self.read_message() {
                Ok(_) => {}
                Err(e) => panic!("reading RTP: {e}"),
            }
        }
        self.frames - start
    }

    /// Reads interleaved data for `d`; returns frames received meanwhile.
    pub fn receive_for(&mut self, d: Duration) -> u64 {
        let start = self.frames;
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            if let Err(e) = self.read_message() {
                panic!("reading RTP: {e}");
            }
        }
        self.frames - start
    }

    pub fn teardown(&mut self, url: &str) {
        let _ = self.request("TEARDOWN", url, &[]);
    }
}
