#!/bin/sh
# Every container start is a new process tree: empty the prometheus-client multiprocess directory
# first (files of processes that no longer exist would be summed forever), then become the command.
set -eu
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -type f -delete
fi
exec "$@"
