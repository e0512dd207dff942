#!/usr/bin/env bash
# The shmcast demo: a test-pattern camera with synthetic meteors, the detector
# printing events as they come, an RTSP stream to watch with ffplay or VLC,
# and the web page (shmcast-web) with the live view and the events' pictures.
#
#   scripts/demo.sh                      # set up, build, run until Ctrl-C
#   scripts/demo.sh --listen 0.0.0.0:8554   # watch from another machine
#   scripts/demo.sh --duration 20 --check   # run 20 s, verify the stream with ffprobe
#
# Options:
#   --listen ADDR:PORT  RTSP address (default 127.0.0.1:8554, env SHMCAST_DEMO_LISTEN)
#   --web ADDR:PORT     web page address (default 127.0.0.1:8080, env SHMCAST_DEMO_WEB)
#   --name NAME         stream name (default demo; segment /dev/shm/shmcast.NAME)
#   --duration SECS     stop by itself after SECS (default: run until Ctrl-C)
#   --check             while running, probe the RTSP stream with ffprobe and
#                       exit non-zero unless it is H.264 1280x720
#   --no-setup          skip scripts/setup.sh (apt packages)
#   --no-build          skip `cargo build --release --workspace`
#   --bin-dir DIR       where the binaries are (default target/release, env SHMCAST_BIN_DIR)
#
# Ctrl-C (or SIGTERM) stops the four processes cleanly and leaves nothing in /dev/shm.
# shellcheck disable=SC2317  # stop_pid/cleanup run from the EXIT trap
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
listen=${SHMCAST_DEMO_LISTEN:-127.0.0.1:8554}
web=${SHMCAST_DEMO_WEB:-127.0.0.1:8080}
name=demo
duration=""
check=0
setup=1
build=1
bin_dir=${SHMCAST_BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/release}
width=1280
height=720

usage() { sed -n '2,/^# shellcheck/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

while (($#)); do
  case "$1" in
    --listen) listen=${2:?--listen needs ADDR:PORT}; shift 2 ;;
    --web) web=${2:?--web needs ADDR:PORT}; shift 2 ;;
    --name) name=${2:?--name needs a name}; shift 2 ;;
    --duration) duration=${2:?--duration needs seconds}; shift 2 ;;
    --check) check=1; shift ;;
    --no-setup) setup=0; shift ;;
    --no-build) build=0; shift ;;
    --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "demo: error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -n $duration && ! $duration =~ ^[0-9]+$ ]]; then
  echo "demo: error: --duration must be whole seconds, got '$duration'" >&2
  exit 2
fi
if ! [[ $listen =~ ^(.+):([0-9]+)$ ]]; then
  echo "demo: error: --listen must be ADDR:PORT, got '$listen'" >&2
  exit 2
fi
host=${BASH_REMATCH[1]}
port=${BASH_REMATCH[2]}
if ! [[ $web =~ ^(.+):([0-9]+)$ ]]; then
  echo "demo: error: --web must be ADDR:PORT, got '$web'" >&2
  exit 2
fi
web_host=${BASH_REMATCH[1]}
web_port=${BASH_REMATCH[2]}

say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }
[[ -t 1 ]] || say() { printf 'demo: %s\n' "$*"; }

if ((setup)); then
  say "checking system packages (scripts/setup.sh)"
  bash "$repo/scripts/setup.sh"
fi
if ((build)); then
  say "building release binaries (cargo build --release --workspace)"
  (cd "$repo" && cargo build --release --workspace)
fi
for b in shmcast-producer shmcast-detect shmcast-rtsp shmcast-web; do
  if [[ ! -x $bin_dir/$b ]]; then
    echo "demo: error: $bin_dir/$b not found; build with: cargo build --release --workspace" >&2
    exit 1
  fi
done
if ((check)) && ! command -v ffprobe >/dev/null; then
  echo "demo: error: --check needs ffprobe (apt package ffmpeg; run scripts/setup.sh)" >&2
  exit 1
fi

run_dir=$(mktemp -d "${TMPDIR:-/tmp}/shmcast-demo.XXXXXX")
segment=${SHMCAST_SHM_DIR:-/dev/shm}/shmcast.$name
producer_pid=""
detect_pid=""
rtsp_pid=""
web_pid=""
status=0

# Ends a process: SIGTERM, wait up to 10 s, then SIGKILL. The children are ours,
# so `wait` reaps them and a pid cannot have been reused meanwhile.
stop_pid() {
  local pid=$1 what=$2 i
  [[ -n $pid ]] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$what did not stop in 10 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleaned=0
cleanup() {
  # Best effort from here on: a failed write (closed terminal or pipe) must
  # not cut the clean-up short.
  set +e
  ((cleaned)) && return
  cleaned=1
  trap - INT TERM HUP
  echo
  say "stopping"
  # Consumers first, so they do not report the producer vanishing.
  stop_pid "$web_pid" "shmcast-web"
  stop_pid "$rtsp_pid" "shmcast-rtsp"
  stop_pid "$detect_pid" "shmcast-detect"
  stop_pid "$producer_pid" "shmcast-producer"
  # Let the event printer finish the detector's summary line.
  wait 2>/dev/null || true
  if [[ -e $segment ]]; then
    # Only after a crash: a producer stopped by SIGTERM unlinks its segment.
    say "removing leftover $segment"
    rm -f "$segment"
  fi
  if ((status != 0)); then
    say "logs kept in $run_dir"
  else
    rm -rf "$run_dir"
  fi
}
trap 'cleanup; exit "$status"' EXIT
trap 'status=${status:-0}; exit' INT TERM HUP
# A closed output pipe (`demo.sh | head`) makes writes fail (and the script
# exit through the EXIT trap) instead of killing it before it cleans up.
trap '' PIPE

# One event per line: "12:00:03  meteor   frames 812-823  bbox 412,300 96x22  peak 231".
pretty_events() {
  python3 -u -c '
import json, signal, sys, time
# Ctrl-C goes to the detector, which then prints its summary and closes the pipe.
signal.signal(signal.SIGINT, signal.SIG_IGN)
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    try:
        e = json.loads(line)
    except ValueError:
        print("event: " + line, flush=True)
        continue
    kind = e.get("type", "?")
    if kind == "summary":
        keys = ("frames", "lost", "overruns", "events")
        print("detector summary: " + "  ".join("%s %s" % (k, e.get(k)) for k in keys if k in e), flush=True)
        continue
    x, y, w, h = (list(e.get("bbox") or []) + [0, 0, 0, 0])[:4]
    print("%s  %-7s frames %s-%s  bbox %s,%s %sx%s  peak %s" % (time.strftime("%H:%M:%S"), kind,
          e.get("start_frame"), e.get("end_frame"), x, y, w, h, e.get("peak")), flush=True)
'
}

say "starting producer: $name, test pattern ${width}x${height} @ 30 fps with synthetic meteors"
"$bin_dir/shmcast-producer" --name "$name" --source testsrc --width "$width" --height "$height" --fps 30 \
  --events 5 --noise 2 >"$run_dir/producer.log" 2>&1 &
producer_pid=$!

# Wait for the segment (bounded) so a failed start is reported at once.
for ((i = 0; i < 100; i++)); do
  [[ -e $segment ]] && break
  if ! kill -0 "$producer_pid" 2>/dev/null; then
    status=1
    say "the producer failed to start:"
    cat "$run_dir/producer.log" >&2
    exit 1
  fi
  sleep 0.1
done

# The top band of the test pattern (frame stamp, moving bar) is recorded in
# the segment header as the producer's overlay (`shmcast-inspect --json`:
# "overlay"), which the detector never analyses.
say "starting detector (events below, one per line; also in $run_dir/events.jsonl)"
mkdir -p "$run_dir/snaps"
"$bin_dir/shmcast-detect" --name "$name" --events - --snapshots "$run_dir/snaps" \
  2>"$run_dir/detect.log" > >(tee "$run_dir/events.jsonl" | pretty_events) &
detect_pid=$!

say "starting RTSP bridge on $listen"
"$bin_dir/shmcast-rtsp" --name "$name" --listen "$listen" --mount "/$name" >"$run_dir/rtsp.log" 2>&1 &
rtsp_pid=$!

say "starting web page on $web"
"$bin_dir/shmcast-web" --listen "$web" --events "$name=$run_dir/events.jsonl" --snapshots "$run_dir/snaps" \
  >"$run_dir/web.log" 2>&1 &
web_pid=$!

url_host=$host
if [[ $host == 0.0.0.0 || $host == "[::]" || $host == "::" ]]; then
  url_host=$(hostname -I 2>/dev/null | awk '{print $1}')
  url_host=${url_host:-127.0.0.1}
fi
url="rtsp://$url_host:$port/$name"
web_url_host=$web_host
if [[ $web_host == 0.0.0.0 || $web_host == "[::]" || $web_host == "::" ]]; then
  web_url_host=$(hostname -I 2>/dev/null | awk '{print $1}')
  web_url_host=${web_url_host:-127.0.0.1}
fi
web_url="http://$web_url_host:$web_port/"

# Wait (bounded) until the bridge accepts connections.
for ((i = 0; i < 100; i++)); do
  if ! kill -0 "$rtsp_pid" 2>/dev/null; then
    status=1
    say "the RTSP bridge failed to start:"
    cat "$run_dir/rtsp.log" >&2
    exit 1
  fi
  (exec 3<>"/dev/tcp/${host/0.0.0.0/127.0.0.1}/$port") 2>/dev/null && break
  sleep 0.1
done
for ((i = 0; i < 100; i++)); do
  if ! kill -0 "$web_pid" 2>/dev/null; then
    status=1
    say "the web page failed to start:"
    cat "$run_dir/web.log" >&2
    exit 1
  fi
  (exec 3<>"/dev/tcp/${web_host/0.0.0.0/127.0.0.1}/$web_port") 2>/dev/null && break
  sleep 0.1
done

cat <<EOF

  web page:     $web_url   (live view, snapshots, events with pictures)
  RTSP stream:  $url
  watch it with
    ffplay -rtsp_transport tcp $url
    vlc $url              (or VLC: Media > Open Network Stream)
    gst-launch-1.0 playbin uri=$url
  logs: $run_dir/{producer,detect,rtsp,web}.log
  stop: Ctrl-C

EOF

if ((check)); then
  say "checking the stream with ffprobe"
  probe=""
  for ((i = 0; i < 5; i++)); do
    if probe=$(ffprobe -v error -rtsp_transport tcp -timeout 10000000 -select_streams v:0 \
      -show_entries stream=codec_name,width,height -of default=noprint_wrappers=1 "$url" 2>&1); then
      break
    fi
    probe=""
    sleep 1
  done
  if grep -q '^codec_name=h264$' <<<"$probe" && grep -q "^width=$width$" <<<"$probe" &&
    grep -q "^height=$height$" <<<"$probe"; then
    say "check ok: $(tr '\n' ' ' <<<"$probe")"
  else
    say "check FAILED: ffprobe saw: ${probe:-nothing}"
    status=1
    exit 1
  fi
fi

# Run until Ctrl-C, --duration, or a process dies.
# Monotonic seconds (/proc/uptime): the wall clock may be stepped meanwhile.
mono_s() {
  local up _idle
  read -r up _idle </proc/uptime
  echo "${up%.*}"
}
start=$(mono_s)
while :; do
  for p in "$producer_pid:producer" "$detect_pid:detect" "$rtsp_pid:rtsp" "$web_pid:web"; do
    if ! kill -0 "${p%%:*}" 2>/dev/null; then
      rc=0
      wait "${p%%:*}" 2>/dev/null || rc=$?
      if ((rc == 0)); then
        # A clean exit means it was told to stop: Ctrl-C in a terminal
        # reaches the whole process group, not only this script.
        say "shmcast-${p#*:} stopped"
        exit 0
      fi
      say "shmcast-${p#*:} exited unexpectedly (status $rc); its log:"
      tail -n 20 "$run_dir/${p#*:}.log" >&2 || true
      status=1
      exit 1
    fi
  done
  if [[ -n $duration ]] && (($(mono_s) - start >= duration)); then
    break
  fi
  sleep 0.5
done
exit 0
