#!/usr/bin/env bash
# `make bench`: the benchmarks (not part of `make test`). Run on an otherwise idle machine; the
# figures are ratios against the same run's ceiling. BENCH=passthrough or BENCH=frontend runs
# one of them; by default both run, one after the other.
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
which=${BENCH:-all}
if [ "$which" = all ] || [ "$which" = passthrough ]; then
    echo "== passthrough: smtp-source -> postern -> smtp-sink (issue 3)"
    /usr/bin/python3 "$here/bench_passthrough.py" --postern "$build/postern" "${@:2}"
fi
if [ "$which" = all ] || [ "$which" = frontend ]; then
    echo "== front end: smtp-source -> postern -> outbox (issue 2)"
    /usr/bin/python3 "$here/bench_frontend.py" --postern "$build/postern" "${@:2}"
fi
