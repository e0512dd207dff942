#!/usr/bin/env python3
"""Renders the detector's evaluation corpus: night-sky clips with ground truth
by construction, encoded by ffmpeg (H.264, MJPEG) or kept raw.

Nothing here comes from shmcast: the scene (sky, stars, hot pixels, clouds,
dusk, meteors, aircraft, satellites) is drawn with numpy from a seed, temporal
noise is added per frame, and ffmpeg (libx264 / mjpeg) compresses it. Every
clip is reproducible from (set, seed, size).

usage: make-corpus.py OUTDIR [--set full|ci|static] [--seed N] [--width W --height H] [--static-clips N]
                      [--static-frames N] [--only NAMES]

Sets: full (13 event clips, --static-clips static skies at H.264 CRF 23 and
as many at CRF 28), ci (3 small clips), static (one long static sky, H.264
CRF 28 GOP 60, uniform noise 10, --static-frames frames: the false-event rate).

Writes OUTDIR/corpus.json (the clip list: file, GStreamer source fragment,
condition, frames, static flag) and OUTDIR/<clip>.truth.jsonl (one object per
event: type meteor|plane|satellite, start_frame, end_frame, bbox [x,y,w,h] =
the extent of the pixels drawn at least 8 levels above the sky).

Noise "amplitude A": uniform on [-A, +A], or Gaussian with the same RMS
(sigma = A/sqrt(3)). Stars twinkle: each frame each star's brightness is
multiplied by a factor uniform in [0.7, 1.3].
"""
import argparse
import json
import math
import os
import subprocess
import sys

try:
    import numpy as np
except ImportError:  # pragma: no cover
    sys.exit("make-corpus: error: numpy is missing (bash scripts/setup.sh installs python3-numpy)")

FPS = 30
# Frames at the start of every clip without events.
LEARN = 105
# Drawn pixels at least this far above the sky count for the truth box.
TRUTH_LEVEL = 8.0


def star_field(rng, w, h, n):
    """Draws `n` stars (Gaussian spots, amplitude log-uniform 15..180, sigma
    0.6..1.2 px, 7x7 patches). Returns the patches `[(x0, y0, spr)]` and the
    same flattened, so that a frame's twinkle is one vectorised step: pixel
    indices, values and the star each belongs to (patches may overlap)."""
    stars = []
    for _ in range(n):
        x, y = rng.uniform(4, w - 5), rng.uniform(4, h - 5)
        amp = math.exp(rng.uniform(math.log(15), math.log(180)))
        sig = rng.uniform(0.6, 1.2)
        x0, y0 = int(x) - 3, int(y) - 3
        gx = np.arange(x0, x0 + 7, dtype=np.float32) - x
        gy = np.arange(y0, y0 + 7, dtype=np.float32) - y
        spr = amp * np.exp(-(gy[:, None] ** 2 + gx[None, :] ** 2) / (2 * sig * sig))
        stars.append((x0, y0, spr.astype(np.float32)))
    idx, vals, sid = [], [], []
    for i, (x0, y0, spr) in enumerate(stars):
        ys, xs = np.mgrid[y0:y0 + 7, x0:x0 + 7]
        idx.append((ys * w + xs).ravel())
        vals.append(spr.ravel())
        sid.append(np.full(49, i))
    if not stars:
        return stars, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    return stars, np.concatenate(idx), np.concatenate(vals), np.concatenate(sid)


class Scene:
    def __init__(self, rng, w, h, spec):
        self.rng, self.w, self.h, self.spec = rng, w, h, spec
        yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
        base = spec.get("sky", 18.0)
        # Sky glow: brighter towards the horizon (bottom).
        self.sky = np.broadcast_to(base + 10.0 * yy**2, (h, w)).astype(np.float32)
        self.grad = np.broadcast_to(yy, (h, w)).astype(np.float32)
        # Stars: Gaussian spots, amplitude log-uniform 15..180.
        n_stars = int(spec.get("stars", 200) * w * h / (1280 * 720))
        self.stars, self.star_idx, self.star_val, self.star_id = star_field(rng, w, h, n_stars)
        self.star_centre = np.array([(y0 + 3) * w + x0 + 3 for x0, y0, _ in self.stars], dtype=np.int64)
        # Hot pixels: single pixels far above the sky, fixed.
        self.hot = []
        for _ in range(int(spec.get("hot", 0) * w * h / (1280 * 720))):
            self.hot.append((int(rng.integers(0, w)), int(rng.integers(0, h)), float(rng.uniform(80, 200))))
        # Clouds: three large soft blobs drifting slowly, brightening the sky
        # (moonlit) and dimming the stars behind them.
        self.clouds = []
        if spec.get("clouds"):
            for _ in range(3):
                self.clouds.append(dict(
                    x=rng.uniform(-0.3, 1.0) * w, y=rng.uniform(0, 1) * h,
                    vx=rng.uniform(0.2, 0.8) * rng.choice([-1, 1]), vy=rng.uniform(-0.2, 0.2),
                    s=rng.uniform(0.15, 0.3) * w, amp=rng.uniform(8, 20)))

    def cloud_field(self, n):
        if not self.clouds:
            return None
        xs = np.arange(self.w, dtype=np.float32)
        ys = np.arange(self.h, dtype=np.float32)
        f = np.zeros((self.h, self.w), dtype=np.float32)
        for c in self.clouds:
            cx, cy = c["x"] + c["vx"] * n, c["y"] + c["vy"] * n
            gx = np.exp(-((xs - cx) ** 2) / (2 * c["s"] ** 2))
            gy = np.exp(-((ys - cy) ** 2) / (2 * (0.6 * c["s"]) ** 2))
            f += c["amp"] * np.outer(gy, gx)
        return f

    def background(self, n, frames):
        img = self.sky.copy()
        dusk = self.spec.get("dusk")
        if dusk:
            # Brightness ramps by `dusk` levels over the clip, more at the horizon.
            p = n / max(frames - 1, 1)
            img += dusk * p * (0.5 + self.grad)
        cloud = self.cloud_field(n)
        if cloud is not None:
            img += cloud
        g = self.rng.uniform(0.7, 1.3, size=len(self.stars))
        if cloud is not None:
            # Up to 80 % extinction under the thickest cloud.
            g = g * np.maximum(0.2, 1.0 - cloud.ravel()[self.star_centre] / 25.0)
        np.add.at(img.reshape(-1), self.star_idx, (self.star_val * g[self.star_id]).astype(np.float32))
        for x, y, a in self.hot:
            img[y, x] = a
        return img


def segment(img, p0, p1, amp, sig, box):
    """Adds a line p0→p1 with a Gaussian cross profile (brighter at p1);
    grows `box` ([x0,y0,x1,y1] or None) over pixels above TRUTH_LEVEL."""
    h, w = img.shape
    r = int(3 * sig) + 2
    x0 = max(int(min(p0[0], p1[0])) - r, 0)
    x1 = min(int(max(p0[0], p1[0])) + r + 1, w)
    y0 = max(int(min(p0[1], p1[1])) - r, 0)
    y1 = min(int(max(p0[1], p1[1])) + r + 1, h)
    if x1 <= x0 or y1 <= y0:
        return box
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    L2 = dx * dx + dy * dy
    if L2 < 1e-6:
        t = np.zeros_like(xs + ys)
    else:
        t = np.clip(((xs - p0[0]) * dx + (ys - p0[1]) * dy) / L2, 0.0, 1.0)
    px, py = p0[0] + t * dx, p0[1] + t * dy
    d2 = (xs - px) ** 2 + (ys - py) ** 2
    v = amp * (0.6 + 0.4 * t) * np.exp(-d2 / (2 * sig * sig))
    img[y0:y1, x0:x1] += v
    on = np.argwhere(v >= TRUTH_LEVEL)
    if len(on):
        bx0, by0 = x0 + on[:, 1].min(), y0 + on[:, 0].min()
        bx1, by1 = x0 + on[:, 1].max() + 1, y0 + on[:, 0].max() + 1
        box = [bx0, by0, bx1, by1] if box is None else [min(box[0], bx0), min(box[1], by0), max(box[2], bx1), max(box[3], by1)]
    return box


class Meteor:
    def __init__(self, rng, w, h, start):
        m = 24
        for _ in range(100):
            v = rng.uniform(10, 40)
            nmax = int(min(40, 0.7 * min(w, h) / v * 1.6))
            if nmax < 5:
                continue
            n = int(rng.integers(5, nmax + 1))
            ang = rng.uniform(0, 2 * math.pi)
            vx, vy = v * math.cos(ang), v * math.sin(ang)
            x0, y0 = rng.uniform(m, w - m), rng.uniform(m, h - m)
            x1, y1 = x0 + vx * n, y0 + vy * n
            if m <= x1 <= w - m and m <= y1 <= h - m:
                break
        self.start, self.n, self.p0, self.v = start, n, (x0, y0), (vx, vy)
        # Faint to bright, log-uniform.
        self.amp = math.exp(rng.uniform(math.log(40), math.log(220)))
        self.sig = rng.uniform(0.7, 1.4)
        self.box = None

    def frames(self):
        return range(self.start, self.start + self.n)

    def draw(self, img, f):
        k = f - self.start
        if not 0 <= k < self.n:
            return
        # Rises fast, fades slowly; never under 35 % of the peak.
        env = 0.35 + 0.65 * math.sin(math.pi * min(1.0, (k + 0.5) / self.n) ** 0.7)
        # The trail smeared over one frame's travel (exposure), head at k+1.
        h0 = (self.p0[0] + self.v[0] * k, self.p0[1] + self.v[1] * k)
        h1 = (self.p0[0] + self.v[0] * (k + 1), self.p0[1] + self.v[1] * (k + 1))
        self.box = segment(img, h0, h1, self.amp * env, self.sig, self.box)

    def truth(self):
        return dict(type="meteor", start_frame=self.start, end_frame=self.start + self.n - 1,
                    speed=round(math.hypot(*self.v), 1), amp=round(self.amp, 1))


class Mover:
    """An aircraft (steady light + strobe) or a satellite (steady, dim)."""

    def __init__(self, rng, w, h, start, kind, frames_total):
        self.kind, self.start = kind, start
        m = 16
        if kind == "plane":
            speed, dur = rng.uniform(1, 4), int(rng.uniform(5, 20) * FPS)
        else:
            speed, dur = rng.uniform(0.5, 2), int(rng.uniform(15, 40) * FPS)
        dur = min(dur, frames_total - start - 5)
        ang = rng.uniform(0, 2 * math.pi)
        vx, vy = speed * math.cos(ang), speed * math.sin(ang)
        # Start so that the whole pass stays inside the frame (shortened if needed).
        for _ in range(200):
            x0, y0 = rng.uniform(m, w - m), rng.uniform(m, h - m)
            if m <= x0 + vx * dur <= w - m and m <= y0 + vy * dur <= h - m:
                break
            dur = int(dur * 0.97)
        self.n, self.p0, self.v = dur, (x0, y0), (vx, vy)
        if kind == "plane":
            self.steady = rng.uniform(35, 90)
            self.strobe = rng.uniform(150, 250)
            self.period = FPS / rng.uniform(1.0, 2.0)
            self.phase = rng.uniform(0, self.period)
            # The strobe sits on a wingtip a few pixels from the steady light.
            off = rng.uniform(3, 7)
            self.off = (-vy / speed * off, vx / speed * off)
        else:
            self.steady = rng.uniform(40, 80)
        self.box = None

    def draw(self, img, f):
        k = f - self.start
        if not 0 <= k < self.n:
            return
        p = (self.p0[0] + self.v[0] * k, self.p0[1] + self.v[1] * k)
        q = (p[0] + self.v[0], p[1] + self.v[1])
        self.box = segment(img, p, q, self.steady, 1.0, self.box)
        if self.kind == "plane":
            ph = (k + self.phase) % self.period
            if ph < 1.5:  # a flash of 1-2 frames
                s = (p[0] + self.off[0], p[1] + self.off[1])
                self.box = segment(img, s, s, self.strobe * (1.0 if ph < 1.0 else 0.5), 1.6, self.box)

    def truth(self):
        t = dict(type=self.kind, start_frame=self.start, end_frame=self.start + self.n - 1,
                 speed=round(math.hypot(*self.v), 2))
        if self.kind == "plane":
            t["strobe_hz"] = round(FPS / self.period, 2)
        return t


def encoder_args(codec, w, h, path):
    src = ["-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{w}x{h}", "-r", str(FPS), "-i", "-"]
    kind = codec["codec"]
    if kind == "h264":
        out = ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(codec["crf"]), "-g", str(codec["gop"]),
               "-keyint_min", str(codec["gop"]), "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-threads", "1"]
    elif kind == "mjpeg":
        out = ["-c:v", "mjpeg", "-q:v", str(codec["q"]), "-pix_fmt", "yuvj420p"]
    else:
        raise ValueError(kind)
    return ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"] + src + out + [path]


def gst_source(codec, w, h, path):
    if codec["codec"] == "raw":
        return f"filesrc location={path} ! rawvideoparse format=gray8 width={w} height={h} framerate={FPS}/1"
    return f"filesrc location={path} ! decodebin"


def render(out, name, spec, w, h, seed):
    rng = np.random.default_rng(seed)
    frames = spec["frames"]
    codec = spec["codec"]
    ext = {"h264": "mp4", "mjpeg": "avi", "raw": "gray"}[codec["codec"]]
    path = os.path.join(out, f"{name}.{ext}")
    scene = Scene(rng, w, h, spec)
    objs = []
    # Meteors at random times, never two at once, none in the first 3.5 s
    # (a detector learns the sky first; shmcast-detect needs 2.5 s).
    t = LEARN + int(rng.integers(0, FPS))
    for _ in range(spec.get("meteors", 0)):
        m = Meteor(rng, w, h, t)
        if m.start + m.n >= frames - 2:
            break
        objs.append(m)
        gap = max(8, int((frames - LEARN - FPS) / max(spec["meteors"], 1) - m.n))
        t = m.start + m.n + int(rng.integers(8, gap + 8))
    for kind in ("plane", "satellite"):
        for _ in range(spec.get(kind + "s", 0)):
            start = int(rng.integers(LEARN, max(LEARN + 1, frames // 3)))
            objs.append(Mover(rng, w, h, start, kind, frames))
    noise = spec.get("noise", ("u", 0))
    amp = float(noise[1])
    if codec["codec"] == "raw":
        sink = open(path, "wb")
        proc = None
    else:
        proc = subprocess.Popen(encoder_args(codec, w, h, path), stdin=subprocess.PIPE)
        sink = proc.stdin
    for n in range(frames):
        img = scene.background(n, frames)
        for o in objs:
            o.draw(img, n)
        if amp > 0:
            if noise[0] == "u":
                img += (rng.random(size=img.shape, dtype=np.float32) * np.float32(2 * amp) - np.float32(amp))
            else:
                img += rng.standard_normal(size=img.shape, dtype=np.float32) * np.float32(amp / math.sqrt(3))
        sink.write(np.clip(img + 0.5, 0, 255).astype(np.uint8).tobytes())
    sink.close()
    if proc is not None and proc.wait() != 0:
        sys.exit(f"make-corpus: error: ffmpeg failed for {name}")
    truth = []
    for o in objs:
        if o.box is None:
            continue
        t = o.truth()
        b = o.box
        t["bbox"] = [int(b[0]), int(b[1]), int(b[2] - b[0]), int(b[3] - b[1])]
        truth.append(t)
    truth.sort(key=lambda t: t["start_frame"])
    with open(os.path.join(out, f"{name}.truth.jsonl"), "w") as f:
        for t in truth:
            f.write(json.dumps(t) + "\n")
    return dict(name=name, file=path, source=gst_source(codec, w, h, path), frames=frames, fps=FPS,
                width=w, height=h, condition=spec["condition"], static=spec.get("static", False),
                noise=f"{'uniform' if noise[0] == 'u' else 'gauss'} {amp:g}", codec=codec, truth=len(truth))


H264 = lambda crf, gop: dict(codec="h264", crf=crf, gop=gop)  # noqa: E731
MJPEG = lambda q: dict(codec="mjpeg", q=q)  # noqa: E731
RAW = dict(codec="raw")


def clip_set(which, static_clips, static_frames=18000):
    ev = dict(meteors=8, planes=1, satellites=1, hot=40, frames=1000)
    if which == "static":
        # One long static sky, heavily compressed: the false-event rate.
        return [("static-long-h264-crf28-u10", dict(frames=static_frames, hot=40, static=True,
                                                     condition="static sky h264 crf28 gop60, uniform 10 (long)",
                                                     codec=H264(28, 60), noise=("u", 10)))]
    if which == "ci":
        ci = dict(ev, frames=600, meteors=6)
        return [
            ("h264-crf23-g60-u10", dict(ci, condition="h264 crf23 gop60, uniform 10", codec=H264(23, 60), noise=("u", 10))),
            ("mjpeg-q8-g8", dict(ci, condition="mjpeg q8, gauss 8", codec=MJPEG(8), noise=("g", 8), planes=0, satellites=0)),
            ("static-h264-crf23-u10", dict(frames=900, hot=40, static=True, condition="static sky h264 crf23, uniform 10",
                                           codec=H264(23, 60), noise=("u", 10))),
        ]
    clips = [
        ("h264-crf18-g30-u4", dict(ev, condition="h264 crf18 gop30, uniform 4", codec=H264(18, 30), noise=("u", 4))),
        ("h264-crf23-g250-g8", dict(ev, condition="h264 crf23 gop250, gauss 8", codec=H264(23, 250), noise=("g", 8))),
        ("h264-crf23-g60-u10", dict(ev, condition="h264 crf23 gop60, uniform 10", codec=H264(23, 60), noise=("u", 10))),
        ("h264-crf28-g60-u10", dict(ev, condition="h264 crf28 gop60, uniform 10", codec=H264(28, 60), noise=("u", 10))),
        ("h264-crf20-g12-g12", dict(ev, condition="h264 crf20 gop12, gauss 12", codec=H264(20, 12), noise=("g", 12))),
        ("mjpeg-q3-u6", dict(ev, condition="mjpeg q3, uniform 6", codec=MJPEG(3), noise=("u", 6))),
        ("mjpeg-q8-g8", dict(ev, condition="mjpeg q8, gauss 8", codec=MJPEG(8), noise=("g", 8))),
        ("mjpeg-q15-u12", dict(ev, condition="mjpeg q15, uniform 12", codec=MJPEG(15), noise=("u", 12))),
        ("raw-g10", dict(ev, condition="raw, gauss 10", codec=RAW, noise=("g", 10))),
        ("raw-u12", dict(ev, condition="raw, uniform 12", codec=RAW, noise=("u", 12))),
        ("h264-clouds-u8", dict(ev, condition="h264 crf23, clouds, uniform 8", codec=H264(23, 60), noise=("u", 8), clouds=True)),
        ("h264-dusk-g8", dict(ev, condition="h264 crf23, dusk +40, gauss 8", codec=H264(23, 60), noise=("g", 8), dusk=40.0)),
        ("mjpeg-dusk-clouds-u10", dict(ev, condition="mjpeg q8, dusk+clouds, uniform 10", codec=MJPEG(8), noise=("u", 10),
                                        clouds=True, dusk=-30.0, sky=50.0)),
    ]
    for i in range(static_clips):
        clips.append((f"static-{i}-h264-crf23-u10", dict(frames=1000, hot=40, static=True,
                                                         condition="static sky h264 crf23, uniform 10",
                                                         codec=H264(23, 60), noise=("u", 10))))
    for i in range(static_clips):
        clips.append((f"static-{i}-h264-crf28-u10", dict(frames=1000, hot=40, static=True,
                                                         condition="static sky h264 crf28 gop60, uniform 10",
                                                         codec=H264(28, 60), noise=("u", 10))))
    return clips


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--set", default="full", choices=["full", "ci", "static"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--static-clips", type=int, default=3, help="1000-frame static-sky clips per CRF (full set)")
    ap.add_argument("--static-frames", type=int, default=18000, help="frames of the long static sky (set static)")
    ap.add_argument("--only", default="", help="comma-separated clip names to render")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    clips = []
    only = set(filter(None, a.only.split(",")))
    for i, (name, spec) in enumerate(clip_set(a.set, a.static_clips, a.static_frames)):
        if only and name not in only:
            continue
        seed = a.seed * 1000 + i
        print(f"make-corpus: {name} ({spec['frames']} frames, seed {seed})", file=sys.stderr, flush=True)
        clips.append(render(a.out, name, spec, a.width, a.height, seed))
    with open(os.path.join(a.out, "corpus.json"), "w") as f:
        json.dump(dict(set=a.set, seed=a.seed, width=a.width, height=a.height, clips=clips), f, indent=1)


if __name__ == "__main__":
    main()
