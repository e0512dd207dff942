#!/usr/bin/env python3
"""shmcast's Python binding measured in one run, at 1080p rgb24, against
baselines and a peer measured in the same run:

1. frames/s of next()+valid() (zero copy), writer and reader in this process;
2. frames/s of next()+copy() against numpy's own copy of the same array;
3. publish -> wake-up latency (p50/p99) of a Python reader process against the
   Rust reader of `shmcast-bench` (its `lat-reader`), same writer, same ring;
4. the peer, the way Python users pass frames today: a multiprocessing
   SharedMemory ring of 8 slots plus a Queue of slot indices (throughput,
   latency, and frames the producer overwrote while the consumer read them,
   which that scheme cannot detect), against the same pipeline over shmcast;
5. Ctrl-C -> KeyboardInterrupt delay while a reader waits in next().

    python python/bench.py                  # about a minute
    python python/bench.py --quick          # a few seconds (smoke run; figures not meaningful)
    python python/bench.py --json           # machine-readable

Needs the shmcast package and numpy; `shmcast-bench` from target/release
(or --bin-dir / $SHMCAST_BIN_DIR) for the Rust reader's latency.
"""

import argparse
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

import shmcast

W, H = 1920, 1080
SHAPE = (H, W, 3)
SLOTS = 8


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, round((len(v) - 1) * q))] if v else 0


def lat_summary(ns):
    return {"n": len(ns), "p50_us": pct(ns, 0.5) / 1e3, "p99_us": pct(ns, 0.99) / 1e3, "max_us": max(ns) / 1e3}


def name_for(tag):
    return f"pybench-{tag}-{os.getpid()}"


# ------------------------------------------------------------ 1 and 2: in process


def zero_copy(secs):
    """Publish (slot filled in place, untouched), then next()+array+valid(); the
    reader's calls are timed on their own."""
    with shmcast.Writer(name_for("zc"), W, H, format="rgb24", fps=0, slots=SLOTS) as w:
        r = shmcast.Reader(w.name)
        n = bad = 0
        t_read = 0.0
        clock = time.perf_counter
        t0 = clock()
        while clock() - t0 < secs:
            for _ in range(100):
                with w.frame():
                    pass
                c0 = clock()
                f = r.next(0)
                f.array
                ok = f.valid()
                t_read += clock() - c0
                bad += not ok
                n += 1
        dt = clock() - t0
    return {"fps": n / dt, "invalid": bad, "reader_fps": n / t_read, "reader_us_per_frame": t_read / n * 1e6}


def copies(secs):
    """next()+copy() against numpy copying the same shared array (f.array.copy()),
    alternating frame by frame so that both see the same conditions."""
    img = np.random.default_rng(1).integers(0, 256, SHAPE, dtype=np.uint8)
    modes = ("shmcast copy()", "numpy f.array.copy()")
    with shmcast.Writer(name_for("cp"), W, H, format="rgb24", fps=0, slots=SLOTS) as w:
        r = shmcast.Reader(w.name)
        for _ in range(SLOTS):  # every slot written once (pages touched)
            w.publish(img)
        while r.next(0) is not None:
            pass
        n = {m: 0 for m in modes}
        t = {m: 0.0 for m in modes}
        t0 = time.perf_counter()
        i = 0
        while time.perf_counter() - t0 < 2 * secs:
            with w.frame():
                pass  # a new frame in the next slot (its old bytes stay)
            c0 = time.perf_counter()
            f = r.next(0)
            mode = modes[i % 2]
            c = f.copy() if i % 2 == 0 else f.array.copy()
            t[mode] += time.perf_counter() - c0
            del c
            n[mode] += 1
            i += 1
        out = {m: {"fps": n[m] / t[m], "copy_ms": t[m] / n[m] * 1e3, "gbps": n[m] * img.nbytes / t[m] / 1e9}
               for m in modes}
        # A private array, for reference: numpy copying memory it owns.
        src = img.copy()
        k, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < secs:
            src.copy()
            k += 1
        dt = time.perf_counter() - t0
        out["numpy private array copy()"] = {"fps": k / dt, "copy_ms": dt / k * 1e3, "gbps": k * img.nbytes / dt / 1e9}
    return out


# ------------------------------------------------------------ 3: wake-up latency

PY_LAT_READER = r"""
import json, sys, time, shmcast
name, samples = sys.argv[1], int(sys.argv[2])
r = shmcast.Reader(name, attach_timeout=10)
print("READY", flush=True)
lat = []
try:
    while len(lat) < samples:
        f = r.next(timeout=10)
        if f is None:
            break
        lat.append(time.time_ns() - f.publish_ns)
except shmcast.Closed:
    pass
print("RESULT " + json.dumps(lat), flush=True)
"""


def read_until(proc, prefix):
    for line in proc.stdout:
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    raise RuntimeError(f"{proc.args[0]} exited before printing {prefix}")


def latency(kind, samples, bench_bin):
    with shmcast.Writer(name_for("lat" + kind), W, H, format="rgb24", fps=0, slots=SLOTS) as w:
        if kind == "rust":
            args = [bench_bin, "lat-reader", w.name, str(samples)]
        else:
            args = [sys.executable, "-c", PY_LAT_READER, w.name, str(samples)]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        try:
            read_until(proc, "READY")
            time.sleep(0.05)  # let the reader fall asleep on the futex
            for _ in range(samples):
                with w.frame():
                    pass
                time.sleep(0.0007)
            w.close()  # ends a reader that lost a few frames
            res = json.loads(read_until(proc, "RESULT"))
        finally:
            proc.wait()
    if kind == "rust":
        return {"n": res["n"], "p50_us": res["p50_ns"] / 1e3, "p99_us": res["p99_ns"] / 1e3,
                "max_us": res["max_ns"] / 1e3}
    return lat_summary(res)


# ------------------------------------------------------------ 4: the peer


def mp_producer(shm_name, q, secs, period, ready):
    shm = shared_memory.SharedMemory(name=shm_name)
    ring = np.ndarray((SLOTS,) + SHAPE, np.uint8, buffer=shm.buf)
    img = np.full(SHAPE, 7, np.uint8)
    ready.wait()
    n = 0
    t0 = time.perf_counter()
    next_t = t0
    while time.perf_counter() - t0 < secs:
        slot = ring[n % SLOTS]
        np.copyto(slot, img)
        slot.reshape(-1)[:8] = np.frombuffer(np.int64(n).tobytes(), np.uint8)  # frame id, to detect tearing
        q.put((n, n % SLOTS, time.time_ns()))
        n += 1
        if period:
            next_t += period
            d = next_t - time.perf_counter()
            if d > 0:
                time.sleep(d)
    q.put(None)
    del ring, slot
    shm.close()


def mp_consumer(shm_name, q, out, ready):
    shm = shared_memory.SharedMemory(name=shm_name)
    ring = np.ndarray((SLOTS,) + SHAPE, np.uint8, buffer=shm.buf)
    ready.set()
    got = torn = 0
    lat = []
    t0 = None
    while True:
        item = q.get()
        if item is None:
            break
        n, slot, t = item
        lat.append(time.time_ns() - t)
        t0 = t0 or time.perf_counter()
        a = ring[slot]
        a[::8, ::8].mean()  # use the frame
        if int(np.frombuffer(a.reshape(-1)[:8].tobytes(), np.int64)[0]) != n:
            torn += 1  # the producer had already reused the slot: wrong frame, undetected by the scheme
        got += 1
    dt = time.perf_counter() - (t0 or time.perf_counter())
    out.put({"frames": got, "fps": got / dt if dt else 0, "overwritten_undetected": torn, "lat_ns": lat})
    del ring, a
    shm.close()


def peer(secs, period):
    shm = shared_memory.SharedMemory(create=True, size=SLOTS * int(np.prod(SHAPE)))
    try:
        ctx = mp.get_context("fork")
        q, out, ready = ctx.Queue(), ctx.Queue(), ctx.Event()
        c = ctx.Process(target=mp_consumer, args=(shm.name, q, out, ready))
        p = ctx.Process(target=mp_producer, args=(shm.name, q, secs, period, ready))
        c.start()
        p.start()
        res = out.get()
        p.join()
        c.join()
    finally:
        shm.close()
        shm.unlink()
    lat = res.pop("lat_ns")
    res.update({k: v for k, v in lat_summary(lat).items() if k != "n"})
    return res


SHM_CONSUMER = r"""
import json, sys, time, numpy, shmcast
r = shmcast.Reader(sys.argv[1], attach_timeout=10)
print("READY", flush=True)
got = bad = 0
lat = []
t0 = None
try:
    while True:
        f = r.next(timeout=10)
        if f is None:
            break
        lat.append(time.time_ns() - f.publish_ns)
        t0 = t0 or time.perf_counter()
        f.array[::8, ::8].mean()
        if f.valid():
            got += 1
        else:
            bad += 1
except shmcast.Closed:
    pass
dt = time.perf_counter() - (t0 or time.perf_counter())
s = r.stats
print("RESULT " + json.dumps({"frames": got, "fps": got / dt if dt else 0, "invalid": bad, "lost": s.lost, "lat_ns": lat}), flush=True)
"""


def shmcast_pipeline(secs, period):
    """The same pipeline over shmcast: publish() (one copy) in this process, a Python reader process."""
    img = np.full(SHAPE, 7, np.uint8)
    with shmcast.Writer(name_for("pipe"), W, H, format="rgb24", fps=0, slots=SLOTS) as w:
        proc = subprocess.Popen([sys.executable, "-c", SHM_CONSUMER, w.name], stdout=subprocess.PIPE, text=True)
        try:
            read_until(proc, "READY")
            n = 0
            t0 = time.perf_counter()
            next_t = t0
            while time.perf_counter() - t0 < secs:
                w.publish(img)
                n += 1
                if period:
                    next_t += period
                    d = next_t - time.perf_counter()
                    if d > 0:
                        time.sleep(d)
            w.close()
            res = json.loads(read_until(proc, "RESULT"))
        finally:
            proc.wait()
    lat = res.pop("lat_ns")
    res.update({k: v for k, v in lat_summary(lat).items() if k != "n"})
    res["published"] = n
    return res


# ------------------------------------------------------------ 5: Ctrl-C

SIG_CHILD = r"""
import sys, time, shmcast
r = shmcast.Reader(sys.argv[1])
print("READY", flush=True)
try:
    r.next()
except KeyboardInterrupt:
    print("RAISED %.6f" % time.monotonic(), flush=True)
"""


def ctrl_c(rounds):
    delays = []
    with shmcast.Writer(name_for("sig"), 16, 8, format="gray8") as w:
        for _ in range(rounds):
            proc = subprocess.Popen([sys.executable, "-c", SIG_CHILD, w.name], stdout=subprocess.PIPE, text=True)
            read_until(proc, "READY")
            time.sleep(0.2)  # be well inside next() (a figure, not a test: any moment would do)
            sent = time.monotonic()  # CLOCK_MONOTONIC: the same clock in both processes
            proc.send_signal(signal.SIGINT)
            delays.append((float(read_until(proc, "RAISED")) - sent) * 1e3)
            proc.wait()
    return {"n": len(delays), "p50_ms": pct(delays, 0.5), "max_ms": max(delays)}


# ------------------------------------------------------------ main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (figures not meaningful)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--secs", type=float, default=3.0, help="seconds per throughput figure")
    ap.add_argument("--samples", type=int, default=3000, help="latency samples per reader")
    ap.add_argument("--bin-dir", default=os.environ.get("SHMCAST_BIN_DIR"),
                    help="where shmcast-bench is (default target/release)")
    args = ap.parse_args()
    secs, samples, rounds = (0.3, 200, 2) if args.quick else (args.secs, args.samples, 10)
    bin_dir = Path(args.bin_dir or Path(__file__).resolve().parents[1] / "target" / "release")
    bench_bin = bin_dir / "shmcast-bench"
    if not bench_bin.exists():
        print(f"bench: error: {bench_bin} not found (cargo build --release -p shmcast-consumer)", file=sys.stderr)
        return 1

    rep = {"width": W, "height": H, "format": "rgb24", "quick": args.quick, "cpus": os.cpu_count(),
           "load_before": os.getloadavg()}
    rep["zero_copy"] = zero_copy(secs)
    rep["copy"] = copies(secs)
    rep["latency"] = {"rust": latency("rust", samples, str(bench_bin)),
                      "python": latency("python", samples, str(bench_bin))}
    rep["pipeline"] = {
        "max_rate": {"shmcast": shmcast_pipeline(secs, 0), "peer": peer(secs, 0)},
        "paced_30fps": {"shmcast": shmcast_pipeline(secs * 2, 1 / 30), "peer": peer(secs * 2, 1 / 30)},
    }
    rep["ctrl_c"] = ctrl_c(rounds)
    rep["load_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0

    z, c = rep["zero_copy"], rep["copy"]
    print(f"shmcast Python binding, {W}x{H} rgb24 ({W * H * 3 / 1e6:.1f} MB frames), {os.cpu_count()} CPUs, "
          f"load average {rep['load_before'][0]:.1f} before / {rep['load_after'][0]:.1f} after")
    print()
    print("1. next() + array + valid(), zero copy (writer and reader alternating in one process)")
    print(f"   reader: {z['reader_us_per_frame']:.1f} µs per frame = {z['reader_fps']:,.0f} frames/s; "
          f"with the writer's frame() in the loop {z['fps']:,.0f} frames/s; {z['invalid']} invalid")
    print()
    print("2. copying a frame out: next() + copy() vs next() + numpy's own copy of the same shared array")
    base = c["numpy f.array.copy()"]["copy_ms"]
    for k, v in c.items():
        print(f"   {k:<28} {v['fps']:8,.0f} frames/s  copy {v['copy_ms']:6.2f} ms  {v['gbps']:5.2f} GB/s"
              f"  ({base / v['copy_ms']:.2f}x numpy on the shared array)")
    print()
    print("3. publish -> reader running with the frame, µs (futex wait, unpinned, one frame per ~0.8 ms)")
    for k, label in (("rust", "Rust reader (shmcast-bench lat-reader)"), ("python", "Python reader (next())")):
        v = rep["latency"][k]
        print(f"   {label:<40} p50 {v['p50_us']:8.1f}  p99 {v['p99_us']:8.1f}  max {v['max_us']:9.1f}  (n={v['n']})")
    rl, pl = rep["latency"]["rust"], rep["latency"]["python"]
    print(f"   Python / Rust: p50 {pl['p50_us'] / rl['p50_us']:.2f}x, p99 {pl['p99_us'] / rl['p99_us']:.2f}x")
    print()
    print("4. pipeline: producer copies each frame in once; a consumer process gets it and reads a sample of it")
    print("   peer = multiprocessing.shared_memory ring of 8 slots + a multiprocessing.Queue of slot indices")
    for rate, label in (("max_rate", "as fast as possible"), ("paced_30fps", "paced at 30 frames/s")):
        s, p = rep["pipeline"][rate]["shmcast"], rep["pipeline"][rate]["peer"]
        print(f"   {label}:")
        print(f"     shmcast  consumer {s['fps']:8,.0f} intact frames/s of {s['published']} published  lost {s['lost']}"
              f"  invalid {s['invalid']}"
              f"  latency p50 {s['p50_us']:8.1f} µs  p99 {s['p99_us']:9.1f} µs")
        print(f"     peer     consumer {p['fps']:8,.0f} frames/s         overwritten while read, undetected "
              f"{p['overwritten_undetected']:6}  latency p50 {p['p50_us']:8.1f} µs  p99 {p['p99_us']:9.1f} µs")
        print(f"     shmcast / peer: {s['fps'] / max(p['fps'], 1e-9):.2f}x frames/s; latency p50 "
              f"{s['p50_us'] / max(p['p50_us'], 1e-9):.2f}x, p99 {s['p99_us'] / max(p['p99_us'], 1e-9):.2f}x the peer's")
    print()
    k = rep["ctrl_c"]
    print(f"5. Ctrl-C during next() -> KeyboardInterrupt: p50 {k['p50_ms']:.1f} ms, max {k['max_ms']:.1f} ms "
          f"(n={k['n']})")
    if args.quick:
        print("\n(quick run: figures are not meaningful)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
