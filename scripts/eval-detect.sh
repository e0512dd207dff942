#!/usr/bin/env bash
# Evaluates shmcast-detect against the test pattern's ground truth: runs
# shmcast-producer (testsrc, 1280x720, noise, injected meteors and motion) and
# shmcast-detect on the same stream, then scores the events (a detection
# matches a truth event when frame ranges overlap and boxes intersect; greedy
# one-to-one). Exits non-zero when recall < 0.95, precision < 0.95, type
# accuracy < 0.90, or when the detector lost frames (the score would be void).
#
# usage: scripts/eval-detect.sh            (defaults below; override by env)
#   FRAMES=2000 SEED=7 EVENTS=20 NOISE=4 FORMAT=gray8 WIDTH=1280 HEIGHT=720 FPS=0
#   OUT=dir (keeps truth.jsonl, events.jsonl, logs; default: a temp dir)
#   BIN_DIR=target/release (where the binaries are; built if missing)
#
# FPS=0 runs the producer as fast as it can with a ring that holds every frame
# (slots = FRAMES rounded up to a power of two), so the detector never loses a
# frame and the run takes seconds; the events' timing is the same as at 30 fps.
# FPS=30 runs in real time with 64 slots instead (FRAMES/30 seconds).
set -euo pipefail

cd "$(dirname "$0")/.."
FRAMES=${FRAMES:-2000}
SEED=${SEED:-7}
EVENTS=${EVENTS:-20}
NOISE=${NOISE:-4}
FORMAT=${FORMAT:-gray8}
WIDTH=${WIDTH:-1280}
HEIGHT=${HEIGHT:-720}
FPS=${FPS:-0}
BIN_DIR=${BIN_DIR:-target/release}

if [[ ! -x $BIN_DIR/shmcast-producer || ! -x $BIN_DIR/shmcast-detect ]]; then
  echo "eval-detect: building the binaries" >&2
  cargo build --release -p shmcast-producer -p shmcast-consumer >&2
fi

if [[ -n ${OUT:-} ]]; then
  mkdir -p "$OUT"
else
  OUT=$(mktemp -d /tmp/shmcast-eval.XXXXXX)
fi
NAME=eval-$$
if [[ $FPS == 0 ]]; then
  SLOTS=2
  while ((SLOTS < FRAMES)); do SLOTS=$((SLOTS * 2)); done
else
  SLOTS=64
fi

# The status band (stamp, sweeping bar) changes every frame by design: mask it.
BAND=$(python3 - "$WIDTH" "$HEIGHT" <<'PY'
import sys
w, h = int(sys.argv[1]), int(sys.argv[2])
# docs/producer.md: band_h = 4*block, block = StampLayout::for_frame(w, h).block
raw = w // 38
block = raw // 8 * 8 if raw >= 16 else raw // 4 * 4
print(min(h, 4 * block) if block >= 4 and h >= 3 * block else min(h, 16))
PY
)

DET_PID=
cleanup() {
  if [[ -n $DET_PID ]]; then kill "$DET_PID" 2>/dev/null || true; fi
  rm -f "/dev/shm/shmcast.$NAME"
}
trap cleanup EXIT

echo "eval-detect: ${WIDTH}x${HEIGHT} $FORMAT noise $NOISE events $EVENTS/1000 seed $SEED frames $FRAMES fps $FPS slots $SLOTS mask 0,0,$WIDTH,$BAND -> $OUT"
rm -f "$OUT/events.jsonl" "$OUT/truth.jsonl" # --events appends
"$BIN_DIR/shmcast-detect" --name "$NAME" --mask "0,0,$WIDTH,$BAND" --exit-on-close --attach-timeout 30 \
  --events "$OUT/events.jsonl" --log-level warn 2>"$OUT/detect.log" &
DET_PID=$!
"$BIN_DIR/shmcast-producer" --name "$NAME" --source testsrc --width "$WIDTH" --height "$HEIGHT" --format "$FORMAT" \
  --fps "$FPS" --noise "$NOISE" --events "$EVENTS" --truth "$OUT/truth.jsonl" --seed "$SEED" --frames "$FRAMES" \
  --slots "$SLOTS" --log-level warn 2>"$OUT/producer.log"
status=0
wait "$DET_PID" || status=$?
DET_PID=
if ((status != 0)); then
  echo "eval-detect: shmcast-detect failed (exit $status):" >&2
  tail -5 "$OUT/detect.log" >&2
  exit 1
fi
summary=$(grep '"type":"summary"' "$OUT/events.jsonl" | tail -1)
echo "eval-detect: detector $summary"
python3 - "$summary" "$FRAMES" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
if s["lost"] != 0 or s["frames"] != int(sys.argv[2]):
    sys.exit(f"eval-detect: the detector saw {s['frames']} of {sys.argv[2]} frames and lost {s['lost']}: the score would be void")
PY
python3 scripts/score-detect.py "$OUT/truth.jsonl" "$OUT/events.jsonl" --verbose
