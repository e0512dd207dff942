#!/usr/bin/env bash
# Soak test: runs the whole pipeline (producer, detector, RTSP bridge) for N
# minutes with RTSP client churn and producer restarts (kill -9 and SIGTERM,
# alternating), samples every process's memory with monitor_memory.sh, prints
# each process's memory growth per hour after a warm-up, and exits non-zero if
# any grows faster than the bound (or a consumer died, or no client succeeded).
#
#   scripts/soak.sh --minutes N [--max-growth-mb-per-hour X] [options]
#   scripts/soak.sh --ci           # the short variant the e2e test runs
#
# Options:
#   --minutes N                  duration (may be fractional; default 10)
#   --max-growth-mb-per-hour X   bound on the heap (RssAnon) growth slope (default 20)
#   --warmup S                   seconds ignored at the start of each process (default 60)
#   --restart-every S            restart the producer every S s during the first
#                                2/3 of the run (default 60); the last third
#                                measures a steady producer
#   --client-every S             start an RTSP client every S s (default 5)
#   --interval S                 memory sampling interval (default 2)
#   --size WxH --fps F           stream (default 1280x720 at 30)
#   --bin-dir DIR                binaries (default target/release, env SHMCAST_BIN_DIR)
#   --out DIR                    keep logs and memory.csv there (default: a temp dir,
#                                removed on success)
#   --ci                         2 minutes, 640x360@15, restarts every 15 s, a client
#                                every 2 s, warm-up 30 s, bound 1000 MB/h: a short run
#                                extrapolates allocation steps (re-attach, new encoder)
#                                into big hourly figures, so it only catches gross
#                                leaks (a frame per restart or per client); judge
#                                slow leaks on long runs with the default bound
#
# Growth is the least-squares slope of RssAnon (heap and stacks: what a leak
# grows; the shared ring is excluded) over the samples after the warm-up; the
# RSS slope is printed too. The producer is judged on its last instance.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
minutes=10
bound=20
warmup=60
restart_every=60
client_every=5
interval=2
size=1280x720
fps=30
bin_dir=${SHMCAST_BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/release}
out=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

while (($#)); do
  case "$1" in
    --minutes) minutes=${2:?}; shift 2 ;;
    --max-growth-mb-per-hour) bound=${2:?}; shift 2 ;;
    --warmup) warmup=${2:?}; shift 2 ;;
    --restart-every) restart_every=${2:?}; shift 2 ;;
    --client-every) client_every=${2:?}; shift 2 ;;
    --interval) interval=${2:?}; shift 2 ;;
    --size) size=${2:?}; shift 2 ;;
    --fps) fps=${2:?}; shift 2 ;;
    --bin-dir) bin_dir=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --ci)
      minutes=2 size=640x360 fps=15 restart_every=15 client_every=2 warmup=30 interval=1 bound=1000
      shift
      ;;
    -h | --help) usage; exit 0 ;;
    *) echo "soak: error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
num='^[0-9]+([.][0-9]+)?$'
for v in "$minutes" "$bound" "$warmup" "$restart_every" "$client_every" "$interval" "$fps"; do
  [[ $v =~ $num ]] || { echo "soak: error: '$v' is not a number" >&2; exit 2; }
done
[[ $size =~ ^([0-9]+)x([0-9]+)$ ]] || { echo "soak: error: --size must be WxH" >&2; exit 2; }
width=${BASH_REMATCH[1]}
height=${BASH_REMATCH[2]}
total=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 }')
restart_until=$((total * 2 / 3))

for b in shmcast-producer shmcast-detect shmcast-rtsp; do
  [[ -x $bin_dir/$b ]] || { echo "soak: error: $bin_dir/$b not found; build with: cargo build --release --workspace" >&2; exit 1; }
done
for t in ffprobe gst-launch-1.0 python3; do
  command -v "$t" >/dev/null || { echo "soak: error: $t not found; run scripts/setup.sh" >&2; exit 1; }
done

keep=0
if [[ -n $out ]]; then
  mkdir -p "$out"
  keep=1
else
  out=$(mktemp -d "${TMPDIR:-/tmp}/shmcast-soak.XXXXXX")
fi
name="soak-$$"
segment=${SHMCAST_SHM_DIR:-/dev/shm}/shmcast.$name
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="rtsp://127.0.0.1:$port/$name"
producer_pid=""
detect_pid=""
rtsp_pid=""
monitor_pid=""
churn_pid=""
status=1

# Whole seconds of a monotonic clock (/proc/uptime): the wall clock (and
# bash's SECONDS) may be stepped by time synchronisation during a long run.
mono_s() {
  local up _idle
  read -r up _idle </proc/uptime
  echo "${up%.*}"
}

log() { printf '%s soak: %s\n' "$(date +%H:%M:%S)" "$*"; }

stop_pid() {
  local pid=$1 i
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317  # runs from the EXIT trap
cleanup() {
  set +e # best effort: a failed write must not cut the clean-up short
  trap - INT TERM HUP EXIT
  stop_pid "$churn_pid"
  stop_pid "$rtsp_pid"
  stop_pid "$detect_pid"
  stop_pid "$producer_pid"
  rm -f "$out/producer.pid"
  stop_pid "$monitor_pid"
  [[ -e $segment ]] && rm -f "$segment"
  if ((status == 0 && !keep)); then
    rm -rf "$out"
  else
    echo "soak: logs and memory.csv in $out"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'log "interrupted"; status=130; exit' INT TERM HUP
trap '' PIPE # a closed output pipe fails writes instead of killing the script before clean-up

start_producer() {
  "$bin_dir/shmcast-producer" --name "$name" --source testsrc --width "$width" --height "$height" --fps "$fps" \
    --events 5 --noise 2 --log-level warn >>"$out/producer.log" 2>&1 &
  producer_pid=$!
  echo "$producer_pid" >"$out/producer.pid.tmp"
  mv "$out/producer.pid.tmp" "$out/producer.pid"
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -e $segment ]] && return 0
    kill -0 "$producer_pid" 2>/dev/null || break
    sleep 0.05
  done
  log "producer did not start; its log:"
  tail -n 5 "$out/producer.log" >&2
  return 1
}

log "pipeline $name ${width}x${height}@$fps for $total s; restarts every $restart_every s until $restart_until s;" \
  "a client every $client_every s; out $out"
start_producer
"$bin_dir/shmcast-detect" --name "$name" --events "$out/events.jsonl" --mask "0,0,$width,$((height / 4))" \
  --log-level warn >"$out/detect.log" 2>&1 &
detect_pid=$!
"$bin_dir/shmcast-rtsp" --name "$name" --listen "127.0.0.1:$port" --mount "/$name" --log-level warn \
  >"$out/rtsp.log" 2>&1 &
rtsp_pid=$!

"$repo/scripts/monitor_memory.sh" --interval "$interval" --out "$out/memory.csv" \
  "producer=@$out/producer.pid" "detect=$detect_pid" "rtsp=$rtsp_pid" 2>"$out/monitor.log" &
monitor_pid=$!

# RTSP client churn, in the background: alternately a probe (connect, read
# the stream's parameters, leave), a short viewer, and two viewers at once.
# Results go to clients.txt, one "ok|fail kind" line per client.
churn() {
  local n=0 rc
  trap 'exit 0' TERM
  while :; do
    n=$((n + 1))
    case $((n % 3)) in
      0)
        if ffprobe -v error -rtsp_transport tcp -timeout 10000000 -show_entries stream=codec_name -of csv=p=0 \
          "$url" >/dev/null 2>>"$out/clients.log"; then echo "ok probe"; else echo "fail probe"; fi
        ;;
      1)
        # A viewer that is still playing when its time is up (timeout: 124) succeeded.
        rc=0
        timeout 3 gst-launch-1.0 -q rtspsrc "location=$url" protocols=tcp ! fakesink >/dev/null \
          2>>"$out/clients.log" || rc=$?
        if ((rc == 124)); then echo "ok viewer"; else echo "fail viewer($rc)"; fi
        ;;
      2)
        local a=0 b=0
        timeout 3 gst-launch-1.0 -q rtspsrc "location=$url" protocols=tcp ! fakesink >/dev/null \
          2>>"$out/clients.log" &
        local p1=$!
        timeout 2 gst-launch-1.0 -q rtspsrc "location=$url" protocols=tcp ! fakesink >/dev/null \
          2>>"$out/clients.log" || b=$?
        wait "$p1" || a=$?
        if ((a == 124 && b == 124)); then echo "ok pair"; else echo "fail pair($a,$b)"; fi
        ;;
    esac >>"$out/clients.txt"
    sleep "$client_every"
  done
}

# Wait for the bridge before the clients start (bounded).
for ((i = 0; i < 100; i++)); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
: >"$out/clients.txt"
churn &
churn_pid=$!

t0=$(mono_s)
next_restart=$restart_every
kills=0
terms=0
failed=""
while (($(mono_s) - t0 < total)); do
  sleep 1
  elapsed=$(($(mono_s) - t0))
  for p in "$detect_pid:detect" "$rtsp_pid:rtsp"; do
    if ! kill -0 "${p%%:*}" 2>/dev/null; then
      failed="shmcast-${p#*:} died at $elapsed s"
      break 2
    fi
  done
  if ! kill -0 "$producer_pid" 2>/dev/null; then
    failed="the producer died by itself at $elapsed s"
    break
  fi
  if ((elapsed >= next_restart && elapsed < restart_until)); then
    next_restart=$((next_restart + restart_every))
    if (((kills + terms) % 2 == 0)); then
      log "restart: kill -9 producer $producer_pid"
      kill -KILL "$producer_pid"
      kills=$((kills + 1))
    else
      log "restart: SIGTERM producer $producer_pid"
      kill -TERM "$producer_pid"
      terms=$((terms + 1))
    fi
    wait "$producer_pid" 2>/dev/null || true
    start_producer || { failed="the producer could not restart"; break; }
  fi
done
stop_pid "$churn_pid"
churn_pid=""
stop_pid "$monitor_pid"
monitor_pid=""
# Stop consumers first so the detector's summary is complete.
stop_pid "$rtsp_pid"
rtsp_pid=""
stop_pid "$detect_pid"
detect_pid=""
stop_pid "$producer_pid"
producer_pid=""

ok_clients=$(grep -c '^ok' "$out/clients.txt" || true)
bad_clients=$(grep -c '^fail' "$out/clients.txt" || true)
log "producer restarts: $kills by kill -9, $terms by SIGTERM; RTSP clients: $ok_clients ok, $bad_clients failed"
summary=$(grep '"summary"' "$out/events.jsonl" | tail -n 1 || true)
log "detector: ${summary:-no summary line}"

verdict=0
python3 - "$out/memory.csv" "$warmup" "$bound" <<'EOF' || verdict=$?
import csv, sys
path, warmup, bound = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rows = list(csv.DictReader(open(path)))
def slope(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
bad = False
print(f"{'process':<9} {'pid':>8} {'window s':>12} {'samples':>7} {'anon MB':>15} {'rss MB':>15} "
      f"{'peak MB/h':>9} {'anon MB/h':>9} {'rss MB/h':>9} {'cpu %':>6}  verdict")
for label in ("producer", "detect", "rtsp"):
    mine = [r for r in rows if r["label"] == label]
    if not mine:
        print(f"{label:<9} no samples"); bad = True; continue
    last_pid = mine[-1]["pid"]
    mine = [r for r in mine if r["pid"] == last_pid]  # the producer: its last instance
    first_t = float(mine[0]["elapsed_s"])
    win = [r for r in mine if float(r["elapsed_s"]) >= first_t + warmup]
    if len(win) < 5:
        # A short last instance: use what there is after a smaller warm-up.
        win = [r for r in mine if float(r["elapsed_s"]) >= first_t + min(warmup, 10)]
    if len(win) < 5:
        print(f"{label:<9} {last_pid:>8} too few samples after warm-up ({len(win)})"); bad = True; continue
    t = [float(r["elapsed_s"]) for r in win]
    anon = [int(r["anon_kb"]) / 1024 for r in win]
    rss = [int(r["rss_kb"]) / 1024 for r in win]
    s_anon, s_rss = slope(t, anon) * 3600, slope(t, rss) * 3600
    # The verdict: how fast the peak rises. Memory that steps between a few
    # levels (a buffer freed and allocated again on each re-attach) has a
    # least-squares slope that depends on where the run ends, but its peak
    # stays put; a leak raises the peak. Peak of the second half of the
    # window minus peak of the first, over the time between the halves.
    half = len(win) // 2
    dt = (t[-1] - t[0]) / 2
    s_peak = (max(anon[half:]) - max(anon[:half])) / dt * 3600 if dt > 0 else 0.0
    cpus = [float(r["cpu_pct"]) for r in win if r["cpu_pct"]]
    cpu = sum(cpus) / len(cpus) if cpus else float("nan")
    ok = s_peak <= bound
    bad |= not ok
    print(f"{label:<9} {last_pid:>8} {t[0]:>5.0f}-{t[-1]:<6.0f} {len(win):>7} {anon[0]:>7.1f}->{anon[-1]:<7.1f} "
          f"{rss[0]:>7.1f}->{rss[-1]:<7.1f} {s_peak:>9.1f} {s_anon:>9.1f} {s_rss:>9.1f} {cpu:>6.1f}  "
          + ("ok" if ok else f"GROWS (bound {bound:g} MB/h)"))
sys.exit(1 if bad else 0)
EOF

status=0
if [[ -n $failed ]]; then
  log "FAILED: $failed"
  for f in producer detect rtsp; do
    echo "--- $f.log (last lines)" >&2
    tail -n 10 "$out/$f.log" >&2 || true
  done
  status=1
fi
if ((ok_clients == 0)); then
  log "FAILED: no RTSP client succeeded"
  status=1
fi
if ((verdict != 0)); then
  log "FAILED: memory growth beyond $bound MB/h (or too few samples)"
  status=1
fi
if [[ -e $segment ]]; then
  log "FAILED: $segment left behind"
  status=1
fi
((status == 0)) && log "ok"
exit "$status"
