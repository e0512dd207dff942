#!/usr/bin/env bash
# Starts, stops or shows a shmcast pipeline described in a TOML config, each
# process pinned with numactl (or taskset) and supervised with restart backoff.
#
#   scripts/deploy.sh start  [--dry-run] [--run-dir DIR] CONFIG.toml
#   scripts/deploy.sh stop   [--timeout SECS] [--run-dir DIR] CONFIG.toml
#   scripts/deploy.sh status [--json] [--run-dir DIR] CONFIG.toml
#
# The work is done by scripts/deploy.py (Python >= 3.11 for tomllib; Debian 12
# ships 3.11). See deploy/example.toml and docs/ops.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=""
for c in python3 /usr/bin/python3; do
  if command -v "$c" >/dev/null && "$c" -c 'import tomllib' 2>/dev/null; then
    py=$c
    break
  fi
done
if [[ -z $py ]]; then
  echo "deploy: error: need python3 >= 3.11 (for tomllib); run scripts/setup.sh" >&2
  exit 1
fi
exec "$py" "$here/deploy.py" "$@"
