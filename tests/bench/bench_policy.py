"""Policy benchmark: Postfix's smtp-source sends N messages of SIZE octets over SESSIONS
concurrent sessions into postern (outbox route, fsync on), alternating in each round
  1. postern with no filter;
  2. postern with a 5-rule Lua policy on mail_from, rcpt_to and data (tests/bench/lua/policy5.lua:
     a sender deny list, a tag, a recipient domain allow list, a required header check and an
     added header), every message accepted.
Prints the rates, the ratio (2 / 1, medians over the rounds) and the mean cost of one hook call
from the server's filter_stats line. Both runs log at level info (filter_stats is an info line),
so they pay the same logging. Goal (issue 6): ratio >= 0.9.
"""
import argparse
import os
import re
import shutil
import signal
import tempfile

from bench_frontend import (add_load_arguments, free_port, run_source, start_postern,
                            wait_after_cleanup)

HERE = os.path.dirname(os.path.abspath(__file__))


def start_policy_postern(binary, workdir, port, with_policy):
    policy = ""
    if with_policy:
        policy = f"""
[[filter]]
type = "lua"
name = "policy5"
script = "{os.path.join(HERE, 'lua', 'policy5.lua')}"
"""
    return start_postern(binary, workdir, port, level="info", extra=policy)


def stored(workdir):
    return len([n for n in os.listdir(os.path.join(workdir, "outbox")) if n.endswith(".eml")])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_load_arguments(ap)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    binary = os.path.abspath(a.postern)
    parent = a.workdir or os.path.join(os.path.dirname(binary), "bench")
    os.makedirs(parent, exist_ok=True)
    wait_after_cleanup(parent, a.settle)
    workdir = tempfile.mkdtemp(prefix="policy-", dir=parent)
    print(f"load: {a.messages} messages of {a.size} octets, {a.sessions} sessions, "
          f"outbox route under {workdir}")
    rounds = []
    hook_us = []
    all_stored = True
    for r in range(a.rounds):
        rates = {}
        # Alternate which variant goes first: the disk gets slower as the round's files pile up.
        order = [False, True] if r % 2 == 0 else [True, False]
        for with_policy in order:
            rounddir = os.path.join(workdir, f"round{r}-{'lua' if with_policy else 'none'}")
            os.makedirs(rounddir)
            port = free_port()
            proc = start_policy_postern(binary, rounddir, port, with_policy)
            try:
                seconds = run_source(port, a.messages, a.size, a.sessions)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
            count = stored(rounddir)
            all_stored = all_stored and count == a.messages
            rates[with_policy] = a.messages / seconds
            if with_policy:
                with open(os.path.join(rounddir, "postern.log")) as f:
                    m = re.search(r"event=filter_stats .*calls=(\d+) mean_us=([0-9.]+)", f.read())
                if m:
                    hook_us.append(float(m.group(2)))
                    calls = int(m.group(1))
                    if calls != 3 * a.messages:
                        print(f"  unexpected hook calls: {calls} (expected {3 * a.messages})")
        rounds.append((rates[False], rates[True]))
        print(f"round {r + 1}: no filter {rates[False]:.0f} msg/s, 5-rule Lua {rates[True]:.0f} "
              f"msg/s, ratio {rates[True] / rates[False]:.2f}"
              + (f", mean hook call {hook_us[-1]:.1f} us" if hook_us else ""))
    ratios = sorted(p / n for n, p in rounds)
    ratio = ratios[len(ratios) // 2]
    none_rate = sorted(n for n, _ in rounds)[len(rounds) // 2]
    lua_rate = sorted(p for _, p in rounds)[len(rounds) // 2]
    mean_hook = sorted(hook_us)[len(hook_us) // 2] if hook_us else float("nan")
    print()
    print(f"medians of {a.rounds} rounds:")
    print("| run | msg/s | ratio |")
    print("|---|---|---|")
    print(f"| postern, no filter -> outbox | {none_rate:.0f} | 1.00 |")
    print(f"| postern, 5-rule Lua policy -> outbox | {lua_rate:.0f} | {ratio:.2f} |")
    print()
    print(f"mean cost of one hook call: {mean_hook:.1f} us (3 calls per message)")
    print(f"every message in the outbox: {'yes' if all_stored else 'NO'}")
    print(f"goal: ratio >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'}")
    shutil.rmtree(workdir, ignore_errors=True)
    with open(os.path.join(parent, ".last-cleanup"), "w"):
        pass


if __name__ == "__main__":
    main()
