#!/usr/bin/env python3
"""Scores shmcast-detect events against shmcast-producer ground truth.

A detection matches a truth event when their frame ranges overlap and their
boxes intersect; matching is greedy one-to-one, largest overlap first.
Prints recall, precision and type accuracy (as JSON on the last line) and
exits 1 when any is under its target.

usage: score-detect.py TRUTH.jsonl EVENTS.jsonl [--recall 0.95] [--precision 0.95] [--type 0.90]
"""
import argparse
import json
import sys


def load(path, want_summary=False):
    events, summary = [], None
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                o = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"score-detect: error: {path}:{n}: not JSON: {e}")
            if o.get("type") == "summary":
                summary = o
            elif o.get("type") in ("meteor", "motion"):
                events.append(o)
    return (events, summary) if want_summary else events


def inter(a, b):
    """Intersection area of two [x, y, w, h] boxes (touching counts as 1)."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if w < 0 or h < 0:
        return 0
    return max(w, 1) * max(h, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("truth")
    ap.add_argument("events")
    ap.add_argument("--recall", type=float, default=0.95)
    ap.add_argument("--precision", type=float, default=0.95)
    ap.add_argument("--type", dest="type_acc", type=float, default=0.90)
    ap.add_argument("--verbose", "-v", action="store_true")
    a = ap.parse_args()
    truth = load(a.truth)
    dets, summary = load(a.events, want_summary=True)
    pairs = []
    for i, t in enumerate(truth):
        for j, d in enumerate(dets):
            fo = min(t["end_frame"], d["end_frame"]) - max(t["start_frame"], d["start_frame"]) + 1
            if fo <= 0:
                continue
            ia = inter(t["bbox"], d["bbox"])
            if ia <= 0:
                continue
            pairs.append((fo, ia, i, j))
    pairs.sort(reverse=True)
    tm, dm, matches = set(), set(), []
    for fo, ia, i, j in pairs:
        if i in tm or j in dm:
            continue
        tm.add(i)
        dm.add(j)
        matches.append((i, j))
    recall = len(tm) / len(truth) if truth else 1.0
    precision = len(dm) / len(dets) if dets else (1.0 if not truth else 0.0)
    typed = sum(1 for i, j in matches if truth[i]["type"] == dets[j]["type"])
    type_acc = typed / len(matches) if matches else 1.0
    if a.verbose:
        for i, t in enumerate(truth):
            if i not in tm:
                print(f"missed: {json.dumps({k: t[k] for k in ('type', 'start_frame', 'end_frame', 'bbox')})}")
        for j, d in enumerate(dets):
            if j not in dm:
                print(f"false: {json.dumps({k: d[k] for k in ('type', 'start_frame', 'end_frame', 'bbox')})}")
        for i, j in matches:
            if truth[i]["type"] != dets[j]["type"]:
                t, d = truth[i], dets[j]
                print(f"mistyped: truth {t['type']} {t['start_frame']}-{t['end_frame']} as {d['type']} "
                      f"{d['start_frame']}-{d['end_frame']} speed {d.get('speed')}")
    result = {
        "truth": len(truth), "detections": len(dets), "matched": len(matches),
        "recall": round(recall, 4), "precision": round(precision, 4), "type_accuracy": round(type_acc, 4),
        "lost": (summary or {}).get("lost"), "overruns": (summary or {}).get("overruns"),
    }
    print(f"truth {len(truth)}  detections {len(dets)}  matched {len(matches)}")
    print(f"recall {recall:.3f} (target {a.recall})  precision {precision:.3f} (target {a.precision})  "
          f"type accuracy {type_acc:.3f} (target {a.type_acc})")
    print(json.dumps(result))
    ok = recall >= a.recall and precision >= a.precision and type_acc >= a.type_acc
    if not ok:
        print("score-detect: FAIL: below target", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
