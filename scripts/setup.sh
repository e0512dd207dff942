#!/usr/bin/env bash
# Installs what shmcast needs to build, run and test on Debian 12: GStreamer
# (dev headers and plugins), the RTSP server library and its Python bindings
# (the RTSP RECORD receiver of the GStreamer recipe tests), ffmpeg (ffprobe),
# numactl, mosquitto, e2fsprogs and util-linux (the recorder's stalled-disk test
# freezes a loop-mounted ext4), Python's venv and headers for the Python package (its pip
# packages go into the virtual environments scripts/test.sh creates), Chromium
# and its WebDriver (the web page's browser test).
# Idempotent: installs only what is missing. Needs root for apt.
set -euo pipefail

PKGS=(
  pkg-config build-essential libclang-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
  gstreamer1.0-plugins-bad gstreamer1.0-libav gstreamer1.0-tools gstreamer1.0-rtsp
  ffmpeg numactl util-linux e2fsprogs procps python3 mosquitto mosquitto-clients curl
  python3-prometheus-client shellcheck python3-venv python3-dev python3-gi gir1.2-gst-rtsp-server-1.0
  chromium chromium-driver
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: these packages are missing: ${missing[*]}" >&2
    echo "setup: installing them needs root; run: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi
rustup component add clippy rustfmt >/dev/null 2>&1 || true

# Python packages for the scripts (the detector's evaluation corpus renders
# with numpy) live in a virtualenv of the repository: .venv.
VENV=${SHMCAST_VENV:-$(cd "$(dirname "$0")/.." && pwd)/.venv}
if ! "$VENV/bin/python3" -c 'import numpy' 2>/dev/null; then
  echo "setup: creating $VENV with numpy"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'numpy>=1.24,<3'
fi
echo "setup: ok"
