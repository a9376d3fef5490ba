"""Passthrough benchmark: Postfix's smtp-source sends N messages of SIZE octets over SESSIONS
concurrent sessions (a new connection per message, as smtp-source does by default)
  1. straight into smtp-sink: the ceiling of this machine for the load;
  2. into postern in passthrough mode, which relays each message live to the same kind of
     smtp-sink through its upstream connection pool.
Each round runs both, alternating which goes first (the machine's other load drifts within a
round too), and reads postern's CPU time per message from /proc. Then one more run of
--count-messages through postern at
log level info counts the upstream connections it opened (log event upstream_connected), and a
sequential probe measures the latency postern adds per message (one session per message, p50
and p99 against the same probe straight into smtp-sink).
Goals (issue 3): rate >= 0.7x the ceiling; connections <= max_connections + a few.
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_frontend import SMTP_SINK, free_port, run_source, status_kib, wait_port  # noqa: E402

MAX_CONNECTIONS = 20


def start_sink(port):
    # -c writes a running counter to stdout: into a file, as a pipe would fill and block it.
    counter = tempfile.TemporaryFile()
    proc = subprocess.Popen([SMTP_SINK, "-u", "nobody", "-c", "-C", "-m", "2048",
                             f"127.0.0.1:{port}", "1024"],
                            stdout=counter, stderr=subprocess.DEVNULL)
    proc.counter = counter
    wait_port(port, proc)
    return proc


def stop_sink(proc):
    """Stops smtp-sink; returns the number of messages it received (its -c counter)."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    proc.counter.seek(0)
    out = proc.counter.read().decode(errors="replace")
    counts = re.findall(r"mesg=(\d+)", out)
    return int(counts[-1]) if counts else 0


def start_postern(binary, workdir, port, sink_port, level, threads=0):
    config = os.path.join(workdir, f"passthrough-{port}.toml")
    with open(config, "w") as f:
        f.write(f"""[server]
hostname = "bench.localdomain"
threads = {threads}
[log]
level = "{level}"
[[listener]]
name = "bench"
address = "127.0.0.1:{port}"
max_connections = 5000
max_connections_per_ip = 5000
delivery = "passthrough"
[route.default]
upstream = "sink"
[upstream.sink]
hosts = ["127.0.0.1:{sink_port}"]
tls = "none"
allow_plaintext = true
max_connections = {MAX_CONNECTIONS}
max_messages_per_connection = 1000000
""")
    log_path = os.path.join(workdir, f"postern-{port}.log")
    proc = subprocess.Popen([binary, "serve", "--config", config], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"))
    wait_port(port, proc)
    return proc, log_path


def cpu_seconds(pid):
    """User and system CPU seconds of a process so far, all its threads (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def ceiling_run(a):
    """smtp-source straight into a fresh smtp-sink: seconds."""
    sink_port = free_port()
    sink = start_sink(sink_port)
    try:
        return run_source(sink_port, a.messages, a.size, a.sessions)
    finally:
        stop_sink(sink)


def passthrough_run(a, binary, workdir):
    """smtp-source -> postern -> a fresh smtp-sink: seconds, postern's (user, system) CPU
    seconds for the load, smtp-sink's CPU seconds, postern's peak RSS in KiB, and the messages
    that reached the sink."""
    sink_port = free_port()
    sink = start_sink(sink_port)
    port = free_port()
    proc, _ = start_postern(binary, workdir, port, sink_port, "warn", a.threads)
    try:
        user0, system0 = cpu_seconds(proc.pid)
        sink0 = sum(cpu_seconds(sink.pid))
        seconds = run_source(port, a.messages, a.size, a.sessions)
        user1, system1 = cpu_seconds(proc.pid)
        sink1 = sum(cpu_seconds(sink.pid))
        rss = status_kib(proc.pid, "VmHWM")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        arrived = stop_sink(sink)
    return seconds, (user1 - user0, system1 - system0), sink1 - sink0, rss, arrived


def one_session(port, body):
    """One message in its own session, as an app would send it; returns seconds."""
    start = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = s.makefile("rb")

    def reply():
        while True:
            line = f.readline()
            if not line:
                raise RuntimeError("connection closed")
            if line[3:4] != b"-":
                if line[:1] not in (b"2", b"3"):
                    raise RuntimeError(f"refused: {line!r}")
                return

    reply()
    for cmd in (b"EHLO probe.example\r\n", b"MAIL FROM:<probe@source.example>\r\n",
                b"RCPT TO:<rcpt@dest.example>\r\n", b"DATA\r\n"):
        s.sendall(cmd)
        reply()
    s.sendall(body + b".\r\n")
    reply()
    s.sendall(b"QUIT\r\n")
    reply()
    s.close()
    return time.monotonic() - start


def latency(port, count, size):
    body = b"Subject: probe\r\n\r\n" + (b"x" * 76 + b"\r\n") * max(1, size // 78)
    samples = sorted(one_session(port, body) for _ in range(count))
    return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--postern", default="build/postern")
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count-messages", type=int, default=10000)
    ap.add_argument("--probe", type=int, default=1000, help="latency samples per side")
    ap.add_argument("--threads", type=int, default=0,
                    help="postern's server.threads (0: one per core, the default)")
    a = ap.parse_args()
    binary = os.path.abspath(a.postern)
    workdir = tempfile.mkdtemp(prefix="passthrough-")
    print(f"load: {a.messages} messages of {a.size} octets, {a.sessions} sessions, a new "
          f"connection per message; postern relays to smtp-sink (upstream max_connections "
          f"{MAX_CONNECTIONS})")

    rounds = []
    cpu_per_message = []  # postern's (user, system) microseconds per message, per round
    sink_per_message = []  # smtp-sink's microseconds per message, per round
    peak_rss = 0
    all_arrived = True
    for r in range(a.rounds):
        postern_first = r % 2 == 1
        if not postern_first:
            ceiling_s = ceiling_run(a)
        postern_s, (user, system), sink_s, rss, arrived = passthrough_run(a, binary, workdir)
        if postern_first:
            ceiling_s = ceiling_run(a)
        peak_rss = max(peak_rss, rss)
        all_arrived = all_arrived and arrived == a.messages
        rounds.append((ceiling_s, postern_s))
        cpu_per_message.append((user * 1e6 / a.messages, system * 1e6 / a.messages))
        sink_per_message.append(sink_s * 1e6 / a.messages)
        print(f"round {r + 1} ({'postern' if postern_first else 'ceiling'} first): ceiling "
              f"{a.messages / ceiling_s:.0f} msg/s, passthrough {a.messages / postern_s:.0f} "
              f"msg/s, ratio {ceiling_s / postern_s:.2f}, postern CPU "
              f"{cpu_per_message[-1][0] + cpu_per_message[-1][1]:.0f} us/msg, smtp-sink "
              f"{sink_per_message[-1]:.0f} us/msg, arrived {arrived}",
              flush=True)

    # Upstream connections opened for --count-messages messages through one route.
    sink_port = free_port()
    sink = start_sink(sink_port)
    port = free_port()
    proc, log_path = start_postern(binary, workdir, port, sink_port, "info", a.threads)
    try:
        run_source(port, a.count_messages, a.size, a.sessions)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        counted_arrived = stop_sink(sink)
    with open(log_path, errors="replace") as f:
        opened = sum(1 for line in f if "event=upstream_connected" in line)

    # Added latency: the same sequential probe straight into smtp-sink and through postern.
    sink_port = free_port()
    sink = start_sink(sink_port)
    port = free_port()
    proc, _ = start_postern(binary, workdir, port, sink_port, "warn", a.threads)
    try:
        direct_p50, direct_p99 = latency(sink_port, a.probe, a.size)
        relay_p50, relay_p99 = latency(port, a.probe, a.size)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        stop_sink(sink)

    ratios = sorted(c / p for c, p in rounds)
    ratio = ratios[len(ratios) // 2]
    ceiling_rate = sorted(a.messages / c for c, _ in rounds)[len(rounds) // 2]
    postern_rate = sorted(a.messages / p for _, p in rounds)[len(rounds) // 2]
    user_us = sorted(u for u, _ in cpu_per_message)[len(rounds) // 2]
    system_us = sorted(s for _, s in cpu_per_message)[len(rounds) // 2]
    sink_us = sorted(sink_per_message)[len(rounds) // 2]
    both_us = sorted(u + s + k for (u, s), k in zip(cpu_per_message, sink_per_message))
    both_us = both_us[len(rounds) // 2]
    print()
    print(f"medians of {a.rounds} rounds:")
    print("| run | msg/s | ratio to ceiling | peak RSS |")
    print("|---|---|---|---|")
    print(f"| ceiling: smtp-source -> smtp-sink | {ceiling_rate:.0f} | 1.00 | |")
    print(f"| smtp-source -> postern (passthrough) -> smtp-sink | {postern_rate:.0f} | "
          f"{ratio:.2f} | {peak_rss / 1024:.1f} MiB |")
    print()
    print(f"added latency per message (one session each, {a.probe} samples): p50 "
          f"{(relay_p50 - direct_p50) * 1000:.2f} ms (direct {direct_p50 * 1000:.2f} ms, "
          f"through postern {relay_p50 * 1000:.2f} ms), p99 "
          f"{(relay_p99 - direct_p99) * 1000:.2f} ms (direct {direct_p99 * 1000:.2f} ms, "
          f"through postern {relay_p99 * 1000:.2f} ms)")
    print(f"postern's CPU per message (median of rounds): {user_us + system_us:.0f} us (user "
          f"{user_us:.0f} us, system {system_us:.0f} us), threads = {a.threads}")
    # smtp-source takes about one core of the two: postern and smtp-sink share what is left,
    # so their CPU per message bounds the relayed rate (docs/bench.md, "What bounds the rate").
    print(f"smtp-sink's CPU per message behind postern: {sink_us:.0f} us; postern + smtp-sink: "
          f"{both_us:.0f} us, so at most {1e6 / both_us:.0f} msg/s on one core")
    print(f"upstream connections opened for {a.count_messages} messages: {opened} "
          f"(max_connections {MAX_CONNECTIONS}); arrived {counted_arrived}")
    print(f"every message arrived at the sink: {'yes' if all_arrived else 'NO'}")
    print(f"goals: rate >= 0.7x ceiling: {'met' if ratio >= 0.7 else 'NOT met'}; "
          f"connections <= max_connections + a few: "
          f"{'met' if opened <= MAX_CONNECTIONS + 4 else 'NOT met'}")
    return 0 if all_arrived and counted_arrived == a.count_messages else 1


if __name__ == "__main__":
    sys.exit(main())
