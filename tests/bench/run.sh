#!/usr/bin/env bash
# `make bench`: the benchmarks (not part of `make test`). Run on an otherwise idle machine; the
# figures are ratios against the same run's ceiling (or, for the queue, against Postfix in the
# same run). BENCH=queue, BENCH=passthrough, BENCH=frontend or BENCH=policy runs one of them; by
# default all four run, one after the other, in that order. The queue benchmark starts a private Postfix
# instance and needs root.
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
which=${BENCH:-all}
case "$which" in
    all|queue|passthrough|frontend|policy) ;;
    *) echo "BENCH=$which: expected queue, passthrough, frontend, policy or all" >&2; exit 2 ;;
esac
if [ "$which" = all ] || [ "$which" = queue ]; then
    echo "== queue: smtp-source -> postern (queue) / Postfix -> smtp-sink (issue 4)"
    /usr/bin/python3 "$here/bench_queue.py" --postern "$build/postern" "${@:2}"
fi
if [ "$which" = all ] || [ "$which" = passthrough ]; then
    echo "== passthrough: smtp-source -> postern -> smtp-sink (issue 3)"
    /usr/bin/python3 "$here/bench_passthrough.py" --postern "$build/postern" "${@:2}"
fi
if [ "$which" = all ] || [ "$which" = frontend ]; then
    echo "== front end: smtp-source -> postern -> outbox (issue 2)"
    /usr/bin/python3 "$here/bench_frontend.py" --postern "$build/postern" "${@:2}"
fi
if [ "$which" = all ] || [ "$which" = policy ]; then
    echo "== policy: smtp-source -> postern (5-rule Lua policy vs none) -> outbox (issue 6)"
    /usr/bin/python3 "$here/bench_policy.py" --postern "$build/postern" "${@:2}"
fi
