#!/usr/bin/env python3
"""Figures of shmcast-web, measured with the real binaries:

* snapshot latency (GET /api/streams/NAME/snapshot.jpg, full size, time to
  the last byte) p50/p99 at 1280x720, 1920x1080 and 3840x2160 (nv12,
  testsrc at 30 fps), next to the same server's /api/streams/NAME answer as
  the HTTP baseline;
* CPU of shmcast-web per live view (MJPEG) of a 1280x720 30 fps stream at
  30 fps, with 1 and 10 viewers (CPU seconds from /proc/PID/stat over the run).

Usage: bench.py BIN_DIR [--requests N] [--seconds S]
The machine may be shared and loaded: figures vary between runs.
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request


def wait_for(f, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = f()
        if v:
            return v
        time.sleep(0.05)
    raise SystemExit("bench: timed out")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(sorted_ms, p):
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p / 100))]


class Run:
    def __init__(self, bins):
        self.bins, self.procs, self.tmp = bins, [], tempfile.mkdtemp(prefix="shmcast-web-bench-")

    def spawn(self, label, args):
        log = open(os.path.join(self.tmp, label + ".log"), "w")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def web(self):
        p = self.spawn("web", [f"{self.bins}/shmcast-web", "--listen", "127.0.0.1:0", "--max-connections", "64"])

        def url():
            m = re.search(r"listening on (http://[0-9.:]+)/", open(os.path.join(self.tmp, "web.log")).read())
            return m and m.group(1)
        return p, wait_for(url)

    def producer(self, name, w, h):
        self.spawn("producer-" + name, [f"{self.bins}/shmcast-producer", "--name", name, "--source", "testsrc",
                                        "--width", str(w), "--height", str(h), "--fps", "30", "--format", "nv12"])
        wait_for(lambda: os.path.exists(f"/dev/shm/shmcast.{name}"))

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            p.wait()


def get(url):
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        body = r.read()
    return (time.perf_counter() - t) * 1000.0, len(body)


def viewer(url, stop, counts, i):
    host, port = re.match(r"http://([^:]+):(\d+)(/.*)", url).groups()[:2]
    path = re.match(r"http://[^/]+(/.*)", url).group(1)
    s = socket.create_connection((host, int(port)))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    while not stop.is_set():
        b = s.recv(1 << 16)
        if not b:
            break
        counts[i] += b.count(b"--shmcastframe")
    s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bins")
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    tag = os.getpid()
    run = Run(a.bins)
    try:
        web, base = run.web()
        sizes = [(1280, 720), (1920, 1080), (3840, 2160)]
        for w, h in sizes:
            run.producer(f"wb{tag}-{h}", w, h)
        def listed():
            text = urllib.request.urlopen(f"{base}/api/streams").read().decode()
            return all(f"wb{tag}-{h}" in text for _, h in sizes)
        wait_for(listed)
        print(f"snapshot latency, {a.requests} sequential requests each (full size, quality 80, time to last byte):")
        for w, h in sizes:
            name = f"wb{tag}-{h}"
            for _ in range(5):
                get(f"{base}/api/streams/{name}/snapshot.jpg")
            snap = sorted(get(f"{base}/api/streams/{name}/snapshot.jpg")[0] for _ in range(a.requests))
            js = sorted(get(f"{base}/api/streams/{name}")[0] for _ in range(a.requests))
            size = get(f"{base}/api/streams/{name}/snapshot.jpg")[1]
            print(f"  {w}x{h} nv12: snapshot p50 {pct(snap, 50):6.1f} ms  p99 {pct(snap, 99):6.1f} ms "
                  f"({size // 1024} KiB)   baseline /api/streams/NAME p50 {pct(js, 50):5.2f} ms  "
                  f"ratio {pct(snap, 50) / max(pct(js, 50), 1e-3):.0f}x")
        name = f"wb{tag}-720"
        print(f"live view CPU, 1280x720 nv12 30 fps stream, mjpeg?fps=30 (full size), {a.seconds:.0f} s each:")
        idle0 = cpu_seconds(web.pid)
        time.sleep(a.seconds)
        idle = (cpu_seconds(web.pid) - idle0) / a.seconds * 100
        print(f"  0 viewers: {idle:5.1f} % of one core (discovery only)")
        for n in (1, 10):
            stop = threading.Event()
            counts = [0] * n
            ts = [threading.Thread(target=viewer, args=(f"{base}/api/streams/{name}/mjpeg?fps=30", stop, counts, i))
                  for i in range(n)]
            for t in ts:
                t.start()
            time.sleep(1.0)
            c0, k0, t0 = cpu_seconds(web.pid), sum(counts), time.monotonic()
            time.sleep(a.seconds)
            dt = time.monotonic() - t0
            cpu = (cpu_seconds(web.pid) - c0) / dt * 100
            parts = (sum(counts) - k0) / dt / n
            stop.set()
            for t in ts:
                t.join()
            print(f"  {n:2d} viewer(s): {cpu:5.1f} % of one core, {parts:4.1f} parts/s per viewer")
            time.sleep(1.0)
    finally:
        run.stop()


if __name__ == "__main__":
    main()
