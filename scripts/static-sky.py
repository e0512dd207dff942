#!/usr/bin/env python3
"""Streams a static night sky as raw gray8 frames to stdout, fast enough for
hours of it: the material of the false-event rate (scripts/eval-detect.sh
static).

usage: static-sky.py --frames N [--width W --height H] [--seed N]

The scene is the one scripts/make-corpus.py draws — sky 18 levels with a
horizon glow, about 200 stars (amplitude 15-180, PSF sigma 0.6-1.2 px) that
twinkle (each star's brightness times a factor uniform in [0.7, 1.3], new
each frame), 40 hot pixels (80-200) — but each frame only the star pixels
are recomputed (about 10,000 of 921,600 at 720p), not the whole image, and
no noise is added here: the caller adds temporal noise with ffmpeg's `noise`
filter (C, fast) before encoding. Nothing moves: every event a detector
reports on it is false.
"""
import argparse
import math
import sys

try:
    import numpy as np
except ImportError:  # pragma: no cover
    sys.exit("static-sky: error: numpy is missing (bash scripts/setup.sh installs python3-numpy)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    w, h = a.width, a.height
    rng = np.random.default_rng(a.seed)
    yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    sky = np.broadcast_to(18.0 + 10.0 * yy**2, (h, w)).astype(np.float32).reshape(-1)
    # Stars: Gaussian spots, amplitude log-uniform 15..180 (as make-corpus.py).
    idx, vals, sid = [], [], []
    n_stars = int(200 * w * h / (1280 * 720))
    for i in range(n_stars):
        x, y = rng.uniform(4, w - 5), rng.uniform(4, h - 5)
        amp = math.exp(rng.uniform(math.log(15), math.log(180)))
        sig = rng.uniform(0.6, 1.2)
        x0, y0 = int(x) - 3, int(y) - 3
        gx = np.arange(x0, x0 + 7, dtype=np.float32) - x
        gy = np.arange(y0, y0 + 7, dtype=np.float32) - y
        spr = amp * np.exp(-(gy[:, None] ** 2 + gx[None, :] ** 2) / (2 * sig * sig))
        ys, xs = np.mgrid[y0:y0 + 7, x0:x0 + 7]
        idx.append((ys * w + xs).ravel())
        vals.append(spr.ravel().astype(np.float32))
        sid.append(np.full(49, i))
    star_idx, star_val, star_id = np.concatenate(idx), np.concatenate(vals), np.concatenate(sid)
    # Overlapping star patches: sum per distinct pixel.
    pix, inverse = np.unique(star_idx, return_inverse=True)
    hot_idx = rng.integers(0, w * h, size=int(40 * w * h / (1280 * 720)))
    hot_val = rng.uniform(80, 200, size=len(hot_idx)).round().astype(np.uint8)
    base = np.clip(sky + 0.5, 0, 255).astype(np.uint8)
    base[hot_idx] = hot_val
    sky_at = sky[pix]
    out = sys.stdout.buffer
    frame = base.copy()
    try:
        for _ in range(a.frames):
            g = rng.uniform(0.7, 1.3, size=n_stars).astype(np.float32)
            lit = np.bincount(inverse, weights=star_val * g[star_id], minlength=len(pix))
            frame[pix] = np.clip(sky_at + lit + 0.5, 0, 255).astype(np.uint8)
            frame[hot_idx] = hot_val
            out.write(frame.data)
    except BrokenPipeError:
        sys.exit("static-sky: error: the encoder went away")
    out.flush()


if __name__ == "__main__":
    main()
