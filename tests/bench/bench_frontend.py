"""Front-end benchmark: Postfix's smtp-source sends N messages of SIZE octets over SESSIONS
concurrent sessions (a new connection per message, as smtp-source does by default)
  1. straight into smtp-sink: the ceiling of this machine for the load;
  2. into postern, which stores every message in its outbox (fsync on, same disk).
Then postern holds 1,000 idle connections (connect, 220, EHLO, 250) and its RSS growth is
reported per connection. Prints a table with rates, the ratio to the ceiling and peak RSS.
Goals (issue 2): postern >= 0.5x the ceiling; <= 16 KiB per idle connection.
"""
import argparse
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def run_source(port, messages, size, sessions):
    cmd = [SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size),
           "-M", "bench-source.example", "-f", "bench@source.example", "-t",
           "rcpt@dest.example", f"127.0.0.1:{port}"]
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=600)
    return time.monotonic() - start


def start_postern(binary, workdir, port, level="warn", extra=""):
    """postern with one listener on `port` and an outbox route under workdir; `extra` is more
    TOML (e.g. a [[filter]])."""
    config = os.path.join(workdir, "bench.toml")
    with open(config, "w") as f:
        f.write(f"""[server]
hostname = "bench.localdomain"
[log]
level = "{level}"
[[listener]]
name = "bench"
address = "127.0.0.1:{port}"
max_connections = 5000
max_connections_per_ip = 5000
[route.default]
outbox = "{os.path.join(workdir, 'outbox')}"
{extra}""")
    proc = subprocess.Popen([binary, "serve", "--config", config], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(workdir, "postern.log"), "wb"))
    wait_port(port, proc)
    return proc


def idle_connections(port, count):
    """Opens `count` sessions that each got 220 and an EHLO reply; returns the sockets."""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.recv(512)
        s.sendall(b"EHLO idle.example\r\n")
        data = b""
        while b"250 " not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("idle connection closed")
            data += chunk
        socks.append(s)
    return socks


def wait_after_cleanup(parent, settle):
    """ext4 without a journal (as here) skips inodes freed in the last 1 to 6 minutes when it
    allocates new ones, so a run right after a large deletion (such as the previous run's
    clean-up) measures the file system, not postern. Wait until that has passed."""
    stamp = os.path.join(parent, ".last-cleanup")
    try:
        since = time.time() - os.path.getmtime(stamp)
    except OSError:
        return
    if since < settle:
        print(f"waiting {settle - since:.0f} s: the previous run deleted its outbox "
              f"{since:.0f} s ago (see docs/bench.md)", flush=True)
        time.sleep(settle - since)


def add_load_arguments(ap):
    """The options of an smtp-source load into an outbox (this benchmark and bench_policy)."""
    ap.add_argument("--postern", default="build/postern")
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--settle", type=int, default=400,
                    help="seconds to leave between a previous run's clean-up and this run")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_load_arguments(ap)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--workdir", default=None,
                    help="where the outbox goes (default: a new folder under build/)")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, a.idle + 256)), hard))
    binary = os.path.abspath(a.postern)
    parent = a.workdir or os.path.join(os.path.dirname(binary), "bench")
    os.makedirs(parent, exist_ok=True)
    wait_after_cleanup(parent, a.settle)
    workdir = tempfile.mkdtemp(prefix="frontend-", dir=parent)
    print(f"load: {a.messages} messages of {a.size} octets, {a.sessions} sessions, "
          f"a new connection per message; outbox under {workdir}")

    postern_port = free_port()
    rounds = []
    peak_rss = 0
    stored_ok = True
    for r in range(a.rounds):
        # 1. Ceiling, in the same round as the measured run: the machine is shared and noisy.
        sink_port = free_port()
        sink = subprocess.Popen([SMTP_SINK, "-u", "nobody", "-c", "-C", "-m", "2048",
                                 f"127.0.0.1:{sink_port}", "1024"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(sink_port, sink)
            ceiling_s = run_source(sink_port, a.messages, a.size, a.sessions)
        finally:
            sink.send_signal(signal.SIGTERM)
            sink.wait()
        # 2. postern into a fresh outbox. Outboxes are removed only at the end: deleting tens
        # of thousands of files makes ext4 slower to allocate inodes for a few minutes.
        rounddir = os.path.join(workdir, f"round{r}")
        os.makedirs(rounddir)
        proc = start_postern(binary, rounddir, postern_port)
        try:
            postern_s = run_source(postern_port, a.messages, a.size, a.sessions)
            stored = len([n for n in os.listdir(os.path.join(rounddir, "outbox"))
                          if n.endswith(".eml")])
            stored_ok = stored_ok and stored == a.messages
            peak_rss = max(peak_rss, status_kib(proc.pid, "VmHWM"))
            if r == a.rounds - 1:
                # 3. Idle connections, on the last round's server.
                time.sleep(0.5)
                rss_before = status_kib(proc.pid, "VmRSS")
                socks = idle_connections(postern_port, a.idle)
                time.sleep(0.5)
                rss_held = status_kib(proc.pid, "VmRSS")
                for s in socks:
                    s.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        rounds.append((ceiling_s, postern_s, stored))
        print(f"round {r + 1}: ceiling {a.messages / ceiling_s:.0f} msg/s, postern "
              f"{a.messages / postern_s:.0f} msg/s, ratio {ceiling_s / postern_s:.2f}, "
              f"stored {stored}")

    ratios = sorted(c / p for c, p, _ in rounds)
    ratio = ratios[len(ratios) // 2]
    ceiling_rate = sorted(a.messages / c for c, _, _ in rounds)[len(rounds) // 2]
    postern_rate = sorted(a.messages / p for _, p, _ in rounds)[len(rounds) // 2]
    per_idle = (rss_held - rss_before) * 1024 / a.idle

    print()
    print(f"medians of {a.rounds} rounds:")
    print("| run | msg/s | ratio to ceiling | peak RSS |")
    print("|---|---|---|---|")
    print(f"| ceiling: smtp-source -> smtp-sink | {ceiling_rate:.0f} | 1.00 | |")
    print(f"| postern -> outbox (fsync) | {postern_rate:.0f} | {ratio:.2f} | "
          f"{peak_rss / 1024:.1f} MiB |")
    print()
    print(f"idle connections: {a.idle} held; postern RSS {rss_before / 1024:.1f} MiB -> "
          f"{rss_held / 1024:.1f} MiB = {per_idle / 1024:.1f} KiB per connection")
    print(f"every message in the outbox: {'yes' if stored_ok else 'NO'}")
    print(f"goals: rate >= 0.5x ceiling: {'met' if ratio >= 0.5 else 'NOT met'}"
          f"; idle <= 16 KiB/connection: {'met' if per_idle <= 16 * 1024 else 'NOT met'}")
    shutil.rmtree(workdir, ignore_errors=True)
    with open(os.path.join(parent, ".last-cleanup"), "w"):
        pass
    return 0 if stored_ok else 1


if __name__ == "__main__":
    sys.exit(main())
