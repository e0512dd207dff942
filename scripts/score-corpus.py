#!/usr/bin/env python3
"""Scores shmcast-detect on the evaluation corpus (scripts/make-corpus.py).

usage: score-corpus.py CORPUS_DIR RESULTS_DIR [--json FILE] [--no-check]

For each clip, CORPUS_DIR/<clip>.truth.jsonl is the ground truth and
RESULTS_DIR/<clip>.events.jsonl the detector's events. A detection matches a
truth event when their frame ranges overlap and their boxes intersect (the
detection's box widened by 4 px: it is quantised to model cells).

* Meteors: greedy one-to-one (largest frame overlap / frame union first). Recall = truth
  meteors matched; precision = events typed `meteor` that matched a truth meteor.
* Aircraft and satellites: every remaining detection that matches the pass is
  one of its pieces (a pass should be one event, at most two).
* Type right: a matched meteor's event is `meteor`; a pass's longest piece
  has the pass's type.
* False events: detections that match nothing (any type); on static-sky clips
  they give false events per hour.

Prints one row per condition and an overall row, then a JSON summary line;
exits 1 when a target is missed (unless --no-check) or the detector lost frames.
"""
import argparse
import collections
import json
import os
import sys

TOL = 4
TARGETS = dict(recall=0.95, precision=0.95, type_right=0.90, pieces=2, false_per_hour=1.0)


def load(path):
    events, summary = [], None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            o = json.loads(line)
            if o.get("type") == "summary":
                summary = o
            else:
                events.append(o)
    return events, summary


def matches(t, d):
    """0 when they do not match, else the frame overlap over the frame union
    (so an event that covers the truth closely wins over a long one that
    merely overlaps it)."""
    fo = min(t["end_frame"], d["end_frame"]) - max(t["start_frame"], d["start_frame"]) + 1
    if fo <= 0:
        return 0
    fu = max(t["end_frame"], d["end_frame"]) - min(t["start_frame"], d["start_frame"]) + 1
    a, b = t["bbox"], d["bbox"]
    w = min(a[0] + a[2], b[0] + b[2] + TOL) - max(a[0], b[0] - TOL)
    h = min(a[1] + a[3], b[1] + b[3] + TOL) - max(a[1], b[1] - TOL)
    return fo / fu if w >= 0 and h >= 0 else 0


def score_clip(truth, dets):
    r = collections.Counter()
    used = set()
    meteors = [i for i, t in enumerate(truth) if t["type"] == "meteor"]
    pairs = sorted(((matches(truth[i], d), i, j) for i in meteors for j, d in enumerate(dets)), reverse=True)
    matched_t = set()
    notes = []
    for fo, i, j in pairs:
        if fo <= 0 or i in matched_t or j in used:
            continue
        matched_t.add(i)
        used.add(j)
        r["meteor_matched"] += 1
        if dets[j]["type"] == "meteor":
            r["meteor_tp"] += 1
            r["type_right"] += 1
        else:
            notes.append(f"mistyped meteor {truth[i]['start_frame']}-{truth[i]['end_frame']} as {dets[j]['type']}")
        r["typed"] += 1
    r["meteors"] = len(meteors)
    for i in meteors:
        if i not in matched_t:
            t = truth[i]
            notes.append(f"missed meteor {t['start_frame']}-{t['end_frame']} speed {t.get('speed')} amp {t.get('amp')} bbox {t['bbox']}")
    pieces = {"plane": [], "satellite": []}
    passes = [i for i, t in enumerate(truth) if t["type"] != "meteor"]
    # Each remaining detection goes to the pass it matches best (same type
    # first, then the closest frame range).
    owner = {}
    for j, d in enumerate(dets):
        if j in used:
            continue
        best = max(((d["type"] == truth[i]["type"], matches(truth[i], d), i) for i in passes), default=None)
        if best and best[1] > 0:
            owner.setdefault(best[2], []).append(j)
    for i in passes:
        t = truth[i]
        mine = owner.get(i, [])
        used.update(mine)
        r[t["type"] + "s"] += 1
        pieces[t["type"]].append(len(mine))
        if mine:
            longest = max(mine, key=lambda j: dets[j]["end_frame"] - dets[j]["start_frame"])
            r["typed"] += 1
            right = dets[longest]["type"] == t["type"]
            r["type_right"] += right
            if not right or len(mine) > TARGETS["pieces"]:
                notes.append(f"{t['type']} {t['start_frame']}-{t['end_frame']} speed {t.get('speed')}: "
                             + ", ".join(f"{dets[j]['type']} {dets[j]['start_frame']}-{dets[j]['end_frame']}" for j in mine))
        else:
            notes.append(f"missed {t['type']} {t['start_frame']}-{t['end_frame']} speed {t.get('speed')}")
    r["meteor_events"] = sum(1 for d in dets if d["type"] == "meteor")
    for j, d in enumerate(dets):
        if j not in used:
            r["false"] += 1
            notes.append(f"false {d['type']} {d['start_frame']}-{d['end_frame']} bbox {d['bbox']} peak {d.get('peak')} speed {d.get('speed')}")
    return r, pieces, notes


def ratio(a, b):
    return a / b if b else 1.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("results")
    ap.add_argument("--json")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    corpus = json.load(open(os.path.join(a.corpus, "corpus.json")))
    rows = collections.OrderedDict()
    void = []
    for c in corpus["clips"]:
        truth, _ = load(os.path.join(a.corpus, c["name"] + ".truth.jsonl"))
        dets, summary = load(os.path.join(a.results, c["name"] + ".events.jsonl"))
        if summary is None or summary["lost"] != 0 or summary["frames"] != c["frames"]:
            void.append(f"{c['name']}: the detector saw {summary and summary['frames']} of {c['frames']} frames, lost {summary and summary['lost']}")
        r, pieces, notes = score_clip(truth, dets)
        if not a.quiet:
            for n in notes:
                print(f"  {c['name']}: {n}")
        row = rows.setdefault(c["condition"], dict(r=collections.Counter(), pieces={"plane": [], "satellite": []},
                                                    frames=0, static=c["static"], clips=0, fps=c["fps"]))
        row["r"].update(r)
        for k in pieces:
            row["pieces"][k] += pieces[k]
        row["frames"] += c["frames"]
        row["clips"] += 1
    hdr = f"{'condition':40} {'clips':>5} {'meteors':>7} {'recall':>6} {'prec.':>6} {'type':>6} {'planes':>6} {'pieces':>6} {'sats':>4} {'pieces':>6} {'false':>5} {'hours':>6} {'false/h':>7}"
    print(hdr)
    print("-" * len(hdr))
    tot = dict(r=collections.Counter(), pieces={"plane": [], "satellite": []}, frames=0, clips=0)
    static = dict(false=0, hours=0.0)
    failures = []

    def line(name, row, is_static):
        r = row["r"]
        rec = ratio(r["meteor_matched"], r["meteors"])
        prec = ratio(r["meteor_tp"], r["meteor_events"])
        typ = ratio(r["type_right"], r["typed"])
        pp = row["pieces"]["plane"]
        sp = row["pieces"]["satellite"]
        hours = row["frames"] / 30.0 / 3600.0
        fph = r["false"] / hours if is_static and hours else None

        def mx(v):
            return f"{max(v)}" if v else "-"
        print(f"{name:40} {row['clips']:5} {r['meteors']:7} {rec:6.3f} {prec:6.3f} {typ:6.3f} {len(pp):6} {mx(pp):>6} "
              f"{len(sp):4} {mx(sp):>6} {r['false']:5} {hours:6.3f} {(f'{fph:.1f}' if fph is not None else '-'):>7}")
        if rec < TARGETS["recall"] or prec < TARGETS["precision"]:
            failures.append(f"{name}: meteor recall {rec:.3f} / precision {prec:.3f}")
        if typ < TARGETS["type_right"]:
            failures.append(f"{name}: type right {typ:.3f}")
        if pp and max(pp) > TARGETS["pieces"]:
            failures.append(f"{name}: an aircraft pass gave {max(pp)} events")
        if fph is not None and fph > TARGETS["false_per_hour"]:
            failures.append(f"{name}: {r['false']} false events in {hours:.3f} h")
        return dict(recall=rec, precision=prec, type_right=typ, plane_pieces=pp, satellite_pieces=sp,
                    false=r["false"], hours=hours)

    out = {}
    for name, row in rows.items():
        out[name] = line(name, row, row["static"])
        tot["r"].update(row["r"])
        for k in tot["pieces"]:
            tot["pieces"][k] += row["pieces"][k]
        tot["frames"] += row["frames"]
        tot["clips"] += row["clips"]
        if row["static"]:
            static["false"] += row["r"]["false"]
            static["hours"] += row["frames"] / 30.0 / 3600.0
    print("-" * len(hdr))
    out["overall"] = line("overall", tot, False)
    if static["hours"]:
        print(f"static sky: {static['false']} false events in {static['hours']:.3f} h "
              f"({static['false'] / static['hours']:.1f} per hour)")
    for v in void:
        failures.append("void: " + v)
    result = dict(rows=out, static=static, failures=failures)
    print(json.dumps(dict(overall=out["overall"], static=static, failures=len(failures))))
    if a.json:
        json.dump(result, open(a.json, "w"), indent=1)
    for f in failures:
        print(f"score-corpus: FAIL: {f}", file=sys.stderr)
    sys.exit(1 if failures and not a.no_check else 0)


if __name__ == "__main__":
    main()
