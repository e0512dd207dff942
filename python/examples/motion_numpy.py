#!/usr/bin/env python3
"""A motion detector in plain numpy, reading a shmcast stream zero-copy.

    python motion_numpy.py --name cam0

Each frame's luma is compared with a running background; when enough pixels
changed, one line is printed: "<frame id> motion <fraction>% bbox x,y,w,h".
The frame is used in place (no copy) and a result is kept only if the frame
was intact afterwards (f.valid()). Follows producer restarts; Ctrl-C stops it.
"""

import argparse
import sys

import numpy as np

import shmcast


def luma(f, step):
    """Subsampled luma (float32) of a frame, read from the shared memory."""
    a = f.array
    if f.format in ("gray8", "nv12", "i420"):
        y = a[: f.height]
    elif f.format == "yuyv":
        y = a[..., 0]
    elif f.format in ("rgb24", "bgr24"):
        r, g, b = (0, 1, 2) if f.format == "rgb24" else (2, 1, 0)
        s = a[::step, ::step]
        return 0.299 * s[..., r] + 0.587 * s[..., g] + 0.114 * s[..., b]
    else:
        raise SystemExit(f"motion_numpy: error: cannot analyse {f.format} frames")
    return y[::step, ::step].astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="cam0")
    ap.add_argument("--step", type=int, default=4, help="use every STEP-th pixel (default 4)")
    ap.add_argument("--threshold", type=float, default=25.0, help="luma change that counts (default 25)")
    ap.add_argument("--min-fraction", type=float, default=0.002, help="fraction of pixels that must change")
    ap.add_argument("--frames", type=int, default=0, help="stop after N frames (default: never)")
    args = ap.parse_args()

    bg = None
    n = 0
    try:
        for f in shmcast.follow(args.name):
            y = luma(f, args.step)
            if bg is None or bg.shape != y.shape:
                if f.valid():
                    bg = y.copy()
                continue
            moving = np.abs(y - bg) > args.threshold
            frac = float(moving.mean())
            bbox = None
            if frac >= args.min_fraction:
                rows = np.flatnonzero(moving.any(axis=1))
                cols = np.flatnonzero(moving.any(axis=0))
                s = args.step
                bbox = (cols[0] * s, rows[0] * s, (cols[-1] - cols[0] + 1) * s, (rows[-1] - rows[0] + 1) * s)
            if not f.valid():  # overwritten while we looked: drop this result
                continue
            bg += 0.05 * (y - bg)
            if bbox:
                print(f"{f.frame_id} motion {100 * frac:.2f}% bbox {bbox[0]},{bbox[1]},{bbox[2]},{bbox[3]}",
                      flush=True)
            n += 1
            if args.frames and n >= args.frames:
                break
    except KeyboardInterrupt:
        pass
    except shmcast.Error as e:
        print(f"motion_numpy: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
