#!/usr/bin/env python3
"""Publish the frames of a video file (read with OpenCV's VideoCapture) as a
shmcast stream that every consumer can use: shmcast-detect, shmcast-rtsp,
shmcast-inspect, Python readers.

    python publish_video.py --name cam1 clip.mp4            # once, at the file's rate
    python publish_video.py --name cam1 --loop clip.mp4     # for ever
    shmcast-rtsp --name cam1                                 # then watch rtsp://127.0.0.1:8554/cam1

Prints "READY <name> <W>x<H> <fps>" once the stream exists. Ctrl-C or SIGTERM
stops it; the stream is closed on the way out.
"""

import argparse
import signal
import sys
import time

import cv2

import shmcast


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", help="a video file OpenCV can read")
    ap.add_argument("--name", default="cam1", help="stream name (default cam1)")
    ap.add_argument("--fps", type=float, default=0, help="publishing rate (default: the file's, else 30)")
    ap.add_argument("--loop", action="store_true", help="start again at the end of the file")
    ap.add_argument("--format", default="bgr24", choices=["bgr24", "rgb24", "gray8"],
                    help="pixel format of the stream (OpenCV decodes to bgr24)")
    ap.add_argument("--slots", type=int, default=8)
    args = ap.parse_args()

    # SIGTERM ends the program like Ctrl-C, so the stream is closed cleanly.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    cap = cv2.VideoCapture(args.file)
    if not cap.isOpened():
        print(f"publish_video: error: cannot open {args.file} with OpenCV", file=sys.stderr)
        return 1
    w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = args.fps or cap.get(cv2.CAP_PROP_FPS) or 30.0
    convert = {"bgr24": None, "rgb24": cv2.COLOR_BGR2RGB, "gray8": cv2.COLOR_BGR2GRAY}[args.format]
    try:
        writer = shmcast.Writer(args.name, w, h, format=args.format, fps=round(fps, 3), slots=args.slots)
    except shmcast.Error as e:
        print(f"publish_video: error: {e}", file=sys.stderr)
        return 1
    print(f"READY {args.name} {w}x{h} {fps:g}", flush=True)

    period = 1.0 / fps
    next_t = time.monotonic()
    n = 0
    try:
        with writer:
            while True:
                ok, img = cap.read()
                if not ok:
                    if not args.loop or n == 0:
                        break
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                # Decode straight into the slot when no conversion is needed.
                if convert is None:
                    writer.publish(img, frame_id=n, capture_ns=time.time_ns())
                else:
                    with writer.frame(frame_id=n) as buf:
                        cv2.cvtColor(img, convert, dst=buf)
                n += 1
                next_t += period
                delay = next_t - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_t = time.monotonic()  # late: do not try to catch up
    except KeyboardInterrupt:
        pass
    print(f"published {n} frames", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
