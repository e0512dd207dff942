#!/usr/bin/env bash
# Measures shmcast-record: CPU per stream at 720p30 and 1080p30 (i420 test
# pattern, x264 ultrafast, 2 Mbit/s), MB per hour, the time to get a frame from
# the ring vs from disk, and the time to cut a 30 s clip. Prints a table.
#   bash scripts/bench-record.sh [SECONDS]     (default 40 s per resolution)
# Needs a release build: cargo build --release -p shmcast-producer -p shmcast-record
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-40}
BIN=./target/release
TMP=$(mktemp -d /tmp/shmcast-bench-record.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
now_ms() { date +%s%3N; }

echo "shmcast-record benchmark, ${SECS} s per resolution, $(nproc) CPUs, load: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s %8s %8s %10s %12s %12s %14s %12s %s\n' size rec_cpu% prod_cpu% MB/h ring_ms disk_ms disk_deep_ms clip30s_ms clip_method
for res in 1280x720 1920x1080; do
  w=${res%x*}; h=${res#*x}; name="bench-rec-$$-$w"; dir="$TMP/$w"
  "$BIN/shmcast-producer" --name "$name" --width "$w" --height "$h" --format i420 --fps 30 --slots 64 >"$TMP/p$w.log" 2>&1 &
  prod=$!; pids+=("$prod")
  for _ in $(seq 100); do [[ -e /dev/shm/shmcast.$name ]] && break; sleep 0.1; done
  "$BIN/shmcast-record" --name "$name" --dir "$dir" --segment-seconds 10 >"$TMP/r$w.log" 2>&1 &
  rec=$!; pids+=("$rec")
  for _ in $(seq 100); do grep -q "segment" "$TMP/r$w.log" 2>/dev/null && break; grep -q recording "$TMP/r$w.log" && sleep 1 && break; sleep 0.1; done
  sleep 2
  r0=$(ticks "$rec"); p0=$(ticks "$prod"); t0=$(now_ms)
  sleep "$SECS"
  r1=$(ticks "$rec"); p1=$(ticks "$prod"); t1=$(now_ms)
  rcpu=$(awk -v a="$r0" -v b="$r1" -v t=$((t1 - t0)) -v hz="$HZ" 'BEGIN{printf "%.1f", (b-a)/hz/(t/1000)*100}')
  pcpu=$(awk -v a="$p0" -v b="$p1" -v t=$((t1 - t0)) -v hz="$HZ" 'BEGIN{printf "%.1f", (b-a)/hz/(t/1000)*100}')
  # A 30 s clip needs 31 s in closed segments.
  for _ in $(seq 600); do
    json=$("$BIN/shmcast-record" ls --dir "$dir" --json)
    span=$(python3 -c '
import json, sys
s = [x for x in json.loads(sys.stdin.read())["segments"] if x["state"] == "closed" and x["frames"]]
print(int((s[-1]["end_ns"] - s[0]["start_ns"]) / 1e9) if s else 0)' <<<"$json")
    ((span >= 32)) && break
    sleep 0.2
  done
  read -r bytes span first deep newest < <(python3 -c '
import json, sys
v = json.loads(sys.stdin.read()); s = [x for x in v["segments"] if x["state"] == "closed" and x["frames"]]
b = sum(x["bytes"] for x in s); span = (s[-1]["end_ns"] - s[0]["start_ns"]) / 1e9 if s else 1
allseg = [x for x in v["segments"] if x["frames"]]
print(b, span, s[0]["first_frame"] + 5, s[0]["last_frame"] - 5, max(x["last_frame"] for x in allseg))' <<<"$json")
  mbh=$(awk -v b="$bytes" -v s="$span" 'BEGIN{printf "%.0f", b/s*3600/1e6}')
  : "$newest"
  a=$(now_ms); tier_r=$("$BIN/shmcast-record" frame --dir "$dir" --time "$(date +%s.%N)" --out "$TMP/ring.png" | cut -d: -f1); b=$(now_ms)
  c=$(now_ms); tier_d=$("$BIN/shmcast-record" frame --dir "$dir" --id "$first" --out "$TMP/disk.png" --disk-only | cut -d: -f1); d=$(now_ms)
  # Near the end of a segment: the seek to the keyframe before it is what this measures.
  g=$(now_ms); "$BIN/shmcast-record" frame --dir "$dir" --id "$deep" --out "$TMP/deep.png" --disk-only >/dev/null; k=$(now_ms)
  [[ $tier_r == ring && $tier_d == disk ]] || echo "unexpected tiers: $tier_r $tier_d" >&2
  from=$(python3 -c 'import json,sys; s=[x for x in json.load(sys.stdin)["segments"] if x["state"]=="closed"]; print(s[0]["start_ns"]/1e9 + 0.5)' <<<"$json")
  to=$(awk -v f="$from" 'BEGIN{printf "%.3f", f + 30}')
  # From half a second into a segment: the head up to the next keyframe is re-encoded.
  e=$(now_ms); line=$("$BIN/shmcast-record" clip --dir "$dir" --from "$from" --to "$to" --out "$TMP/clip$w.mp4"); f=$(now_ms)
  method=$(sed -n 's/.* segments, \([^,]*\), \([0-9]*\) re-encoded.*/\1 (\2 re-encoded)/p' <<<"$line")
  printf '%-10s %8s %8s %10s %12s %12s %14s %12s %s\n' "$res" "$rcpu" "$pcpu" "$mbh" $((b - a)) $((d - c)) $((k - g)) $((f - e)) "$method"
  kill "$rec" "$prod"; wait "$rec" "$prod" 2>/dev/null || true
  pids=()
  # Peer: the same encoder and muxer in a plain GStreamer pipeline fed by
  # videotestsrc (its pattern generation included in its CPU).
  gst-launch-1.0 -q videotestsrc is-live=true pattern=ball \
    ! "video/x-raw,format=I420,width=$w,height=$h,framerate=30/1" \
    ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=2048 threads=1 sliced-threads=false \
    ! h264parse ! mp4mux fragment-duration=1000 ! filesink location="$TMP/peer$w.mp4" >/dev/null 2>&1 &
  peer=$!; pids+=("$peer")
  sleep 2
  g0=$(ticks "$peer"); t0=$(now_ms); sleep "$SECS"; g1=$(ticks "$peer"); t1=$(now_ms)
  gcpu=$(awk -v a="$g0" -v b="$g1" -v t=$((t1 - t0)) -v hz="$HZ" 'BEGIN{printf "%.1f", (b-a)/hz/(t/1000)*100}')
  kill "$peer"; wait "$peer" 2>/dev/null || true
  pids=()
  printf '%-10s %8s   (peer: gst-launch videotestsrc ! x264enc ! mp4mux ! filesink; recorder/peer = %s)\n' \
    "$res" "$gcpu" "$(awk -v r="$rcpu" -v g="$gcpu" 'BEGIN{printf "%.2f", r/g}')"
done
