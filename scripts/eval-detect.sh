#!/usr/bin/env bash
# Evaluates shmcast-detect.
#
#   scripts/eval-detect.sh [corpus]   the evaluation corpus (default): night-sky
#                                      clips rendered by scripts/make-corpus.py
#                                      and encoded by ffmpeg, fed through
#                                      shmcast-producer --source gst:'filesrc ! decodebin'
#   scripts/eval-detect.sh ci          the short corpus (3 small clips, CI)
#   scripts/eval-detect.sh static      the false-event rate: STATIC_MINUTES (60)
#                                      of static sky at 30 fps, 1280x720, streamed:
#                                      scripts/static-sky.py (stars twinkling, hot
#                                      pixels) | ffmpeg noise filter (uniform,
#                                      amplitude 10, new each frame) | libx264
#                                      veryfast CRF 28 GOP 60 (MPEG-TS) | a FIFO |
#                                      shmcast-producer filesrc ! tsdemux ! avdec_h264.
#                                      STATIC_TS=file keeps the encoded stream there,
#                                      or replays it if it exists.
#   scripts/eval-detect.sh testsrc     the project's own test pattern (no --mask)
#
# Prints a table per condition (meteor recall/precision, type right, aircraft
# and satellite events per pass, false events per hour on static sky) and
# exits non-zero when a target is missed or the detector lost frames.
#
# Environment: CORPUS=dir (reuse rendered clips; default: rendered into OUT),
#   OUT=dir (results; default a temp dir), SEED=1, WIDTH/HEIGHT (1280x720, ci
#   640x360), STATIC_CLIPS=3 (per CRF), ONLY=clip,names, DETECT_ARGS="extra detector flags",
#   BIN_DIR=target/release. testsrc mode: FRAMES SEED EVENTS NOISE FORMAT WIDTH HEIGHT.
#   static mode: STATIC_MINUTES SEED STATIC_TS.
#
# Every clip runs with --fps 0 and a ring holding all its frames (gray8,
# slots = frames rounded up to a power of two: 1 GiB of /dev/shm at 720p for a
# few seconds), so the detector provably sees every frame (lost == 0 checked).
# Longer clips get 1024 slots: the detector is faster than the decoder, and
# lost == 0 is still checked.
set -euo pipefail

cd "$(dirname "$0")/.."
MODE=${1:-corpus}
BIN_DIR=${BIN_DIR:-target/release}
read -r -a EXTRA <<<"${DETECT_ARGS:-}"

if [[ ! -x $BIN_DIR/shmcast-producer || ! -x $BIN_DIR/shmcast-detect ]]; then
  echo "eval-detect: building the binaries" >&2
  cargo build --release -p shmcast-producer -p shmcast-consumer >&2
fi
VENV=${SHMCAST_VENV:-.venv}
if ! "$VENV/bin/python3" -c 'import numpy' 2>/dev/null; then
  echo "eval-detect: error: $VENV has no numpy; run bash scripts/setup.sh" >&2
  exit 1
fi
PY=$VENV/bin/python3

if [[ -n ${OUT:-} ]]; then
  mkdir -p "$OUT"
else
  OUT=$(mktemp -d /tmp/shmcast-eval.XXXXXX)
fi
NAME=eval-$$
DET_PID=
RENDER_PID=
cleanup() {
  if [[ -n $DET_PID ]]; then kill "$DET_PID" 2>/dev/null || true; fi
  if [[ -n $RENDER_PID ]]; then kill -- "-$RENDER_PID" 2>/dev/null || kill "$RENDER_PID" 2>/dev/null || true; fi
  rm -f "/dev/shm/shmcast.$NAME"
}
trap cleanup EXIT

slots_for() {
  local s=2
  while ((s < $1)); do s=$((s * 2)); done
  echo "$s"
}

# run_pair EVENTS_FILE LOG_PREFIX PRODUCER_ARGS...: one detector on one producer run.
run_pair() {
  local events=$1 log=$2
  shift 2
  rm -f "$events" # --events appends
  "$BIN_DIR/shmcast-detect" --name "$NAME" --exit-on-close --attach-timeout 60 --events "$events" \
    --log-level info "${EXTRA[@]}" 2>"$log.detect.log" &
  DET_PID=$!
  if ! "$BIN_DIR/shmcast-producer" --name "$NAME" --log-level warn "$@" 2>"$log.producer.log"; then
    echo "eval-detect: shmcast-producer failed:" >&2
    tail -5 "$log.producer.log" >&2
    exit 1
  fi
  local status=0
  wait "$DET_PID" || status=$?
  DET_PID=
  if ((status != 0)); then
    echo "eval-detect: shmcast-detect failed (exit $status):" >&2
    tail -5 "$log.detect.log" >&2
    exit 1
  fi
  # A producer whose heartbeat stopped for over 500 ms (a machine so loaded
  # that its threads were not scheduled) is reported gone: the detector ends
  # every track there, so an event across that moment comes out in two.
  local stalls
  stalls=$(grep -c 'producer gone; waiting for a new one .*status=stale' "$log.detect.log" || true)
  if ((stalls > 0)); then
    echo "eval-detect: warning: ${log##*/}: the producer stalled $stalls time(s) (machine overloaded); events across a stall are split" >&2
  fi
}

if [[ $MODE == testsrc ]]; then
  FRAMES=${FRAMES:-2000}
  SEED=${SEED:-7}
  EVENTS=${EVENTS:-20}
  NOISE=${NOISE:-4}
  FORMAT=${FORMAT:-gray8}
  WIDTH=${WIDTH:-1280}
  HEIGHT=${HEIGHT:-720}
  SLOTS=$(slots_for "$FRAMES")
  echo "eval-detect: testsrc ${WIDTH}x${HEIGHT} $FORMAT noise $NOISE events $EVENTS/1000 seed $SEED frames $FRAMES (no --mask) -> $OUT"
  run_pair "$OUT/events.jsonl" "$OUT/testsrc" --source testsrc --width "$WIDTH" --height "$HEIGHT" --format "$FORMAT" \
    --fps 0 --noise "$NOISE" --events "$EVENTS" --truth "$OUT/truth.jsonl" --seed "$SEED" --frames "$FRAMES" --slots "$SLOTS"
  summary=$(grep '"type":"summary"' "$OUT/events.jsonl" | tail -1)
  echo "eval-detect: detector $summary"
  python3 - "$summary" "$FRAMES" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
if s["lost"] != 0 or s["frames"] != int(sys.argv[2]):
    sys.exit(f"eval-detect: the detector saw {s['frames']} of {sys.argv[2]} frames and lost {s['lost']}: the score would be void")
PY
  exec python3 scripts/score-detect.py "$OUT/truth.jsonl" "$OUT/events.jsonl" --verbose
fi

if [[ $MODE == static ]]; then
  MINUTES=${STATIC_MINUTES:-60}
  SEED=${SEED:-1}
  FRAMES=$((MINUTES * 1800))
  TS=${STATIC_TS:-}
  if [[ -n $TS && -s $TS ]]; then
    echo "eval-detect: static sky: replaying $TS"
    SRC="filesrc location=$TS"
  else
    command -v ffmpeg >/dev/null || {
      echo "eval-detect: error: ffmpeg is missing; run bash scripts/setup.sh" >&2
      exit 1
    }
    echo "eval-detect: static sky: $MINUTES min ($FRAMES frames, 1280x720, seed $SEED), streamed -> $OUT${TS:+ (kept in $TS)}"
    FIFO=$OUT/static.ts.fifo
    rm -f "$FIFO"
    mkfifo "$FIFO"
    # Own process group, so that cleanup ends the whole render pipeline.
    set -m
    (
      "$PY" scripts/static-sky.py --frames "$FRAMES" --width 1280 --height 720 --seed "$SEED" |
        ffmpeg -nostdin -loglevel error -f rawvideo -pix_fmt gray -s 1280x720 -r 30 -i - \
          -vf noise=alls=20:allf=t+u -c:v libx264 -preset veryfast -crf 28 -g 60 -keyint_min 60 \
          -sc_threshold 0 -pix_fmt yuv420p -threads 1 -f mpegts - |
        if [[ -n $TS ]]; then tee "$TS"; else cat; fi >"$FIFO"
    ) &
    RENDER_PID=$!
    set +m
    SRC="filesrc location=$FIFO"
  fi
  started=$(date +%s)
  run_pair "$OUT/static.events.jsonl" "$OUT/static" --source "gst:$SRC ! tsdemux ! h264parse ! avdec_h264" \
    --width 1280 --height 720 --format gray8 --fps 0 --slots 1024
  if [[ -n $RENDER_PID ]]; then
    wait "$RENDER_PID" || {
      echo "eval-detect: error: rendering the static sky failed" >&2
      exit 1
    }
    RENDER_PID=
  fi
  echo "eval-detect: static sky took $(($(date +%s) - started)) s"
  exec "$PY" - "$OUT/static.events.jsonl" "$FRAMES" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
s = lines[-1]
assert s["type"] == "summary", s
frames = int(sys.argv[2])
hours = s["frames"] / 30 / 3600
by = s["by_type"]
print(f"static sky h264 crf28 gop60, uniform 10: {s['events']} false events in {hours:.3f} h "
      f"({s['events'] / hours:.2f}/h); by type: " + ", ".join(f"{k} {v}" for k, v in by.items()))
for e in lines[:-1]:
    print(f"  false {e['type']}: frames {e['start_frame']}-{e['end_frame']} bbox {e['bbox']} peak {e['peak']}")
print(json.dumps(dict(static=True, frames=s["frames"], lost=s["lost"], hours=hours, false=s["events"], by_type=by,
                      false_per_hour=s["events"] / hours)))
if s["lost"] != 0 or s["frames"] != frames:
    sys.exit(f"eval-detect: the detector saw {s['frames']} of {frames} frames and lost {s['lost']}: the rate would be void")
if s["events"] / hours > 1.0:
    sys.exit("eval-detect: FAIL: more than 1 false event per hour")
PY
fi

SEED=${SEED:-1}
case $MODE in
  corpus) SET=full ;;
  ci) SET=ci ;;
  *)
    echo "eval-detect: error: unknown mode $MODE (expected corpus, ci, static or testsrc)" >&2
    exit 2
    ;;
esac
if [[ $SET == ci ]]; then
  WIDTH=${WIDTH:-640} HEIGHT=${HEIGHT:-360}
else
  WIDTH=${WIDTH:-1280} HEIGHT=${HEIGHT:-720}
fi
CORPUS=${CORPUS:-$OUT/corpus}
if [[ ! -f $CORPUS/corpus.json ]]; then
  echo "eval-detect: rendering the $SET corpus (seed $SEED, ${WIDTH}x${HEIGHT}) into $CORPUS"
  "$PY" scripts/make-corpus.py "$CORPUS" --set "$SET" --seed "$SEED" --width "$WIDTH" --height "$HEIGHT" \
    --static-clips "${STATIC_CLIPS:-3}" --only "${ONLY:-}"
fi

mapfile -t CLIPS < <("$PY" -c '
import json, sys
for c in json.load(open(sys.argv[1]))["clips"]:
    print("\t".join([c["name"], str(c["frames"]), str(c["width"]), str(c["height"]), c["source"]]))
' "$CORPUS/corpus.json")
for line in "${CLIPS[@]}"; do
  IFS=$'\t' read -r clip frames w h source <<<"$line"
  echo "eval-detect: $clip ($frames frames)"
  run_pair "$OUT/$clip.events.jsonl" "$OUT/$clip" --source "gst:$source" --width "$w" --height "$h" \
    --format gray8 --fps 0 --slots "$(slots_for "$((frames < 1024 ? frames : 1024))")"
done
exec "$PY" scripts/score-corpus.py "$CORPUS" "$OUT"
