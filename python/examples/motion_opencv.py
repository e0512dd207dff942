#!/usr/bin/env python3
"""A motion detector with OpenCV (opencv-python-headless), reading a shmcast
stream zero-copy: the frame's numpy view goes straight into OpenCV.

    python motion_opencv.py --name cam0

Background subtraction (MOG2), then contours of the moving areas; prints one
line per frame with motion: "<frame id> motion <n> objects, largest x,y,w,h".
Follows producer restarts; Ctrl-C stops it.
"""

import argparse
import sys

import cv2

import shmcast

TO_GRAY = {
    "rgb24": cv2.COLOR_RGB2GRAY,
    "bgr24": cv2.COLOR_BGR2GRAY,
    "yuyv": cv2.COLOR_YUV2GRAY_YUYV,
    "nv12": cv2.COLOR_YUV2GRAY_NV12,
    "i420": cv2.COLOR_YUV2GRAY_I420,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="cam0")
    ap.add_argument("--min-area", type=int, default=30, help="smallest moving area in pixels (default 30)")
    ap.add_argument("--frames", type=int, default=0, help="stop after N frames (default: never)")
    args = ap.parse_args()

    sub = cv2.createBackgroundSubtractorMOG2(history=100, varThreshold=32, detectShadows=False)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    n = 0
    try:
        for f in shmcast.follow(args.name):
            if f.format == "mjpeg":
                print("motion_opencv: error: mjpeg streams are not analysed", file=sys.stderr)
                return 1
            if f.format == "gray8":
                try:
                    gray = f.copy()  # the model keeps using it: an intact copy
                except shmcast.Overrun:
                    continue
            else:
                # OpenCV reads the shared memory directly; the gray image is ours.
                gray = cv2.cvtColor(f.array, TO_GRAY[f.format])
                if not f.valid():  # overwritten during the conversion: skip it
                    continue
            mask = sub.apply(gray)
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            boxes = [cv2.boundingRect(c) for c in contours if cv2.contourArea(c) >= args.min_area]
            if boxes and n > 0:
                x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
                print(f"{f.frame_id} motion {len(boxes)} objects, largest {x},{y},{w},{h}", flush=True)
            n += 1
            if args.frames and n >= args.frames:
                break
    except KeyboardInterrupt:
        pass
    except shmcast.Error as e:
        print(f"motion_opencv: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
