#!/usr/bin/env bash
# `make bench`: the front-end benchmarks (not part of `make test`). Run one benchmark at a time on
# an otherwise idle machine; the figures are ratios against the same run's ceiling.
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
exec /usr/bin/python3 "$here/bench_frontend.py" --postern "$build/postern" "${@:2}"
