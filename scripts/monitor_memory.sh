#!/usr/bin/env bash
# Samples the memory and CPU use of processes into CSV, one line per process
# per interval, until every process has exited (or Ctrl-C / SIGTERM).
#
#   scripts/monitor_memory.sh [--interval S] [--out FILE.csv] [--duration S] TARGET...
#
# TARGET is a PID, LABEL=PID, or LABEL=@PIDFILE: the pid is read from PIDFILE
# at every sample, so a restarted process (new pid written to the file) is
# followed; a pidfile target ends when its file is removed.
#
# Columns (sizes in KiB):
#   time_s      Unix time of the sample
#   elapsed_s   seconds since the monitor started
#   label, pid
#   rss_kb      resident set (VmRSS)
#   pss_kb      proportional set: shared pages divided among their mappers
#               (smaps_rollup), the fair "how much does this process cost"
#   private_kb  Private_Clean + Private_Dirty (pages mapped only here; note a
#               shared-memory ring mapped by one process only counts here too)
#   shared_kb   Shared_Clean + Shared_Dirty
#   anon_kb     RssAnon: heap and stacks; the figure a leak makes grow
#   shmem_kb    RssShmem: shared memory (the ring) resident in this process
#   threads, fds
#   cpu_pct     CPU use over the last interval (100 = one full core)
#
# Example: scripts/monitor_memory.sh --interval 2 --out mem.csv $(pgrep -d' ' -f shmcast-)
set -euo pipefail

interval=1
out=""
duration=""

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

targets=()
while (($#)); do
  case "$1" in
    --interval) interval=${2:?--interval needs seconds}; shift 2 ;;
    --out) out=${2:?--out needs a file}; shift 2 ;;
    --duration) duration=${2:?--duration needs seconds}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; targets+=("$@"); break ;;
    -*) echo "monitor_memory: error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if ((${#targets[@]} == 0)); then
  echo "monitor_memory: error: no PID given (see --help)" >&2
  exit 2
fi
if ! [[ $interval =~ ^[0-9]+([.][0-9]+)?$ ]] || [[ $interval =~ ^0+([.]0*)?$ ]]; then
  echo "monitor_memory: error: --interval must be a positive number of seconds, got '$interval'" >&2
  exit 2
fi

labels=()
sources=() # a pid, or @pidfile
for t in "${targets[@]}"; do
  if [[ $t == *=* ]]; then
    label=${t%%=*}
    src=${t#*=}
  else
    label=$t
    src=$t
  fi
  if ! [[ $src =~ ^[0-9]+$ || $src == @?* ]]; then
    echo "monitor_memory: error: '$t' is not a PID, LABEL=PID or LABEL=@PIDFILE" >&2
    exit 2
  fi
  if [[ $label == *,* ]]; then
    echo "monitor_memory: error: label '$label' must not contain a comma" >&2
    exit 2
  fi
  labels+=("$label")
  sources+=("$src")
done

clk_tck=$(getconf CLK_TCK)
header="time_s,elapsed_s,label,pid,rss_kb,pss_kb,private_kb,shared_kb,anon_kb,shmem_kb,threads,fds,cpu_pct"
if [[ -n $out ]]; then
  echo "$header" >"$out"
else
  echo "$header"
fi

emit() {
  if [[ -n $out ]]; then echo "$1" >>"$out"; else echo "$1"; fi
}

stopping=0
trap 'stopping=1' INT TERM

declare -A prev_ticks=() prev_time=()
# elapsed_s comes from a monotonic clock (/proc/uptime), so a wall-clock step
# during a long run does not distort growth slopes; time_s is wall-clock.
read -r start _ </proc/uptime

# Prints "rss pss private shared" (KiB) from smaps_rollup, or nothing.
rollup() {
  awk '
    $1 == "Rss:" { rss = $2 }
    $1 == "Pss:" { pss = $2 }
    $1 == "Private_Clean:" || $1 == "Private_Dirty:" { priv += $2 }
    $1 == "Shared_Clean:" || $1 == "Shared_Dirty:" { shr += $2 }
    END { if (rss != "") printf "%d %d %d %d\n", rss, pss, priv, shr }
  ' "/proc/$1/smaps_rollup" 2>/dev/null || true
}

# Prints "anon shmem threads" from /proc/PID/status, or nothing.
status_fields() {
  awk '
    $1 == "RssAnon:" { anon = $2 }
    $1 == "RssShmem:" { shm = $2 }
    $1 == "Threads:" { thr = $2 }
    END { if (thr != "") printf "%d %d %d\n", anon, shm, thr }
  ' "/proc/$1/status" 2>/dev/null || true
}

while ((!stopping)); do
  now=$EPOCHREALTIME
  read -r up _ </proc/uptime
  elapsed=$(awk -v a="$up" -v b="$start" 'BEGIN { printf "%.3f", a - b }')
  alive=0
  for i in "${!sources[@]}"; do
    src=${sources[$i]}
    label=${labels[$i]}
    if [[ $src == @* ]]; then
      file=${src#@}
      [[ -e $file ]] || continue
      alive=1 # a pidfile target lives as long as its file
      pid=$(tr -dc '0-9' <"$file" 2>/dev/null || true)
      [[ -n $pid ]] || continue
    else
      pid=$src
    fi
    [[ -r /proc/$pid/stat ]] || continue
    stat=$(<"/proc/$pid/stat") 2>/dev/null || continue
    # Skip zombies: a killed child not yet reaped has no memory left to report.
    rest=${stat##*) }
    read -ra f <<<"$rest"
    [[ ${f[0]} != Z && ${f[0]} != X ]] || continue
    alive=1
    ticks=$((f[11] + f[12]))
    read -r rss pss priv shr <<<"$(rollup "$pid")"
    read -r anon shm thr <<<"$(status_fields "$pid")"
    [[ -n ${rss:-} && -n ${thr:-} ]] || continue
    # The process may exit at any moment between these reads (find then fails
    # on its vanished fd directory): a failed read skips the sample, it must
    # not end the monitor (set -e, pipefail).
    fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l) || continue
    key="$label/$pid"
    cpu=""
    if [[ -n ${prev_ticks[$key]:-} ]]; then
      cpu=$(awk -v t="$ticks" -v pt="${prev_ticks[$key]}" -v n="$up" -v pn="${prev_time[$key]}" -v hz="$clk_tck" \
        'BEGIN { d = n - pn; if (d > 0) printf "%.1f", 100 * (t - pt) / hz / d }')
    fi
    prev_ticks[$key]=$ticks
    prev_time[$key]=$up
    emit "$now,$elapsed,$label,$pid,$rss,$pss,$priv,$shr,$anon,$shm,$thr,$fds,$cpu"
  done
  ((alive)) || break
  if [[ -n $duration ]] && awk -v e="$elapsed" -v d="$duration" 'BEGIN { exit !(e >= d) }'; then
    break
  fi
  # Sleep in the background and wait for it, so a signal ends the wait at once.
  sleep "$interval" &
  wait $! 2>/dev/null || true
done
