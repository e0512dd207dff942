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
import importlib.util
import os
import sys

try:
    import numpy as np
except ImportError:  # pragma: no cover
    sys.exit("static-sky: error: numpy is missing (bash scripts/setup.sh installs python3-numpy)")


def load_corpus():
    """scripts/make-corpus.py as a module (its name is not importable)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make-corpus.py")
    spec = importlib.util.spec_from_file_location("make_corpus", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


corpus = load_corpus()


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
    # The stars of make-corpus.py, drawn by its own code.
    n_stars = int(200 * w * h / (1280 * 720))
    _, star_idx, star_val, star_id = corpus.star_field(rng, w, h, n_stars)
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
