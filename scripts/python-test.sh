#!/usr/bin/env bash
# Builds and tests the Python package (python/): creates a virtual environment
# (target/pyvenv, or $SHMCAST_VENV), installs maturin, numpy, pytest and
# opencv-python-headless into it, installs the package with `pip install
# ./python` (pip builds it with maturin), builds the binaries the tests drive,
# and runs pytest.
#
#   scripts/python-test.sh                # everything in python/tests
#   scripts/python-test.sh -k follow -x   # arguments go to pytest
#   scripts/python-test.sh --bench        # then run python/bench.py --quick too
#
# Called by scripts/test.sh after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

bench=0
if [[ ${1:-} == --bench ]]; then
  bench=1
  shift
fi

venv=${SHMCAST_VENV:-$repo/target/pyvenv}
if [[ ! -x $venv/bin/python ]]; then
  echo "python-test: creating $venv"
  python3 -m venv "$venv" || {
    echo "python-test: error: python3 -m venv failed (apt package python3-venv; run scripts/setup.sh)" >&2
    exit 1
  }
fi
py=$venv/bin/python
"$py" -m pip install -q --disable-pip-version-check --upgrade pip
"$py" -m pip install -q --disable-pip-version-check maturin numpy pytest opencv-python-headless

echo "== python: pip install ./python"
"$py" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./python

echo "== python: binaries the tests drive"
cargo build --release -p shmcast-producer -p shmcast-consumer -p shmcast-rtsp

echo "== python: pytest"
"$venv/bin/pytest" -q -p no:cacheprovider python/tests "$@"

if ((bench)); then
  echo "== python: bench smoke"
  "$py" python/bench.py --quick
fi
