#!/usr/bin/env bash
# Sourced: reserve and release 2 MiB huge pages for tests (root only).
HUGEPAGES_DIR=/dev/hugepages
_hp_before=""
_hp_mounted=0

hugepages_reserve() {
  local want=$1
  if [[ $(id -u) -ne 0 ]]; then
    echo "hugepages: not root; huge-page tests need root to reserve pages" >&2
    return 1
  fi
  _hp_before=$(cat /proc/sys/vm/nr_hugepages)
  if ! grep -q " $HUGEPAGES_DIR hugetlbfs " /proc/mounts; then
    mkdir -p "$HUGEPAGES_DIR"
    mount -t hugetlbfs none "$HUGEPAGES_DIR"
    _hp_mounted=1
  fi
  echo $((_hp_before + want)) > /proc/sys/vm/nr_hugepages
  echo "hugepages: reserved $(( $(cat /proc/sys/vm/nr_hugepages) - _hp_before )) pages at $HUGEPAGES_DIR"
}

hugepages_release() {
  [[ -n "$_hp_before" ]] || return 0
  rm -f "$HUGEPAGES_DIR"/shmcast.* 2>/dev/null || true
  echo "$_hp_before" > /proc/sys/vm/nr_hugepages
  if ((_hp_mounted)); then umount "$HUGEPAGES_DIR" || true; fi
  echo "hugepages: released"
}
