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


def start_postern(binary, workdir, port):
    config = os.path.join(workdir, "bench.toml")
    with open(config, "w") as f:
        f.write(f"""[server]
hostname = "bench.localdomain"
[log]
level = "warn"
[[listener]]
name = "bench"
address = "127.0.0.1:{port}"
max_connections = 5000
max_connections_per_ip = 5000
[route.default]
outbox = "{os.path.join(workdir, 'outbox')}"
""")
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--postern", default="build/postern")
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--workdir", default=None,
                    help="where the outbox goes (default: a new folder under build/)")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, a.idle + 256)), hard))
    binary = os.path.abspath(a.postern)
    parent = a.workdir or os.path.join(os.path.dirname(binary), "bench")
    os.makedirs(parent, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="frontend-", dir=parent)
    print(f"load: {a.messages} messages of {a.size} octets, {a.sessions} sessions, "
          f"a new connection per message; outbox under {workdir}")

    # 1. Ceiling.
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
    ceiling_rate = a.messages / ceiling_s

    # 2. postern into its outbox.
    port = free_port()
    proc = start_postern(binary, workdir, port)
    try:
        rss_start = status_kib(proc.pid, "VmRSS")
        postern_s = run_source(port, a.messages, a.size, a.sessions)
        stored = len([n for n in os.listdir(os.path.join(workdir, "outbox"))
                      if n.endswith(".eml")])
        peak_rss = status_kib(proc.pid, "VmHWM")
        # 3. Idle connections.
        time.sleep(0.5)
        rss_before = status_kib(proc.pid, "VmRSS")
        socks = idle_connections(port, a.idle)
        time.sleep(0.5)
        rss_held = status_kib(proc.pid, "VmRSS")
        for s in socks:
            s.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    postern_rate = a.messages / postern_s
    per_idle = (rss_held - rss_before) * 1024 / a.idle

    print()
    print("| run | seconds | msg/s | ratio to ceiling | peak RSS |")
    print("|---|---|---|---|---|")
    print(f"| ceiling: smtp-source -> smtp-sink | {ceiling_s:.2f} | {ceiling_rate:.0f} | 1.00 | |")
    print(f"| postern -> outbox (fsync) | {postern_s:.2f} | {postern_rate:.0f} | "
          f"{postern_rate / ceiling_rate:.2f} | {peak_rss / 1024:.1f} MiB |")
    print()
    print(f"idle connections: {a.idle} held; postern RSS {rss_before / 1024:.1f} MiB -> "
          f"{rss_held / 1024:.1f} MiB = {per_idle / 1024:.1f} KiB per connection "
          f"(at start {rss_start / 1024:.1f} MiB)")
    ok = stored == a.messages
    print(f"messages in the outbox: {stored} of {a.messages}" + ("" if ok else "  <-- MISSING"))
    print(f"goals: rate >= 0.5x ceiling: {'met' if postern_rate >= 0.5 * ceiling_rate else 'NOT met'}"
          f"; idle <= 16 KiB/connection: {'met' if per_idle <= 16 * 1024 else 'NOT met'}")
    # The outbox is kept until the next run's clean-up only if asked; deleting 40,000 files
    # right before another run slows ext4's inode allocation for a while (see docs/bench.md).
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
