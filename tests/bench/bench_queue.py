"""Queue benchmark (issue 4): store-and-forward against Postfix, in one run, on the same machine
and disk. Postfix's smtp-source sends N messages of SIZE octets over SESSIONS concurrent
sessions (a new connection per message, as smtp-source does by default)
  1. straight into smtp-sink: the ceiling of this machine for the load;
  2. into a private Postfix instance (its own main.cf, master.cf, queue, data and log
     directories under this run's temporary folder; relayhost = another smtp-sink; every other
     setting at Postfix's default, so one fsync per message before the 250), set up as
     ../shared/bench/bench_postfix.sh does;
  3. into postern with delivery = "queue" (every message synced into its spool before the 250,
     group commit), which delivers through an upstream route to a third smtp-sink.
Each timed batch follows a warm-up batch (--warmup) through the same relay and sink.
postern's spool and Postfix's queue are both under the run's temporary folder (--workdir), so
on the same disk. For each it prints the accept rate (messages per second until smtp-source
has had every 250) and the time until the sink counted the last message (smtp-sink -c), and
the ratios postern / Postfix. Goal (issue 4): postern >= 2x Postfix on both figures.

Order: the ceiling first, then the two relays; by default (--order alternate) Postfix first in
odd rounds and postern first in even ones, so one round puts postern second. The order matters
here: on ext4 without a journal (these machines) the inode allocator skips inodes freed in the
last 1 to 5 minutes, so file creation slows down after many deletions, and the relay that runs
second pays for the first one's deleted queue files as well as its own. postern (three files per
message) measured 1,435 msg/s when it ran first and 624 msg/s after Postfix on the same day;
Postfix 377 msg/s either way. Use --rounds 2 (or more, even) for a balanced figure.
"""
import argparse
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_frontend import SMTP_SINK, SMTP_SOURCE, free_port, wait_port  # noqa: E402

UPSTREAM_CONNECTIONS = 20  # postern's pool; Postfix's default destination concurrency is 20
POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def now():
    return time.monotonic()


# -- the machine -------------------------------------------------------------------------------

def cpu_stat():
    """(all ticks, idle + iowait ticks, user + nice + system ticks) over all CPUs."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:9]]
    return sum(vals), vals[3] + vals[4], vals[0] + vals[1] + vals[2]


def busy_cores(window=1.0):
    a = cpu_stat()
    time.sleep(window)
    b = cpu_stat()
    total = b[0] - a[0]
    return (1 - (b[1] - a[1]) / total) * os.cpu_count() if total else 0.0


def quiet_gate(max_busy, max_wait):
    """Waits (at most max_wait seconds) until other load is below max_busy cores."""
    start = now()
    busy = busy_cores()
    while busy > max_busy and now() - start < max_wait:
        busy = busy_cores()
    if busy > max_busy:
        print(f"warning: the machine is busy ({busy:.2f} cores in use by others) after "
              f"waiting {max_wait:.0f} s; the figures will suffer", flush=True)
    return busy


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def stop_pids(pids, timeout=10):
    """SIGTERM each of these processes (ours), wait, SIGKILL what is left."""
    pids = [p for p in pids if pid_alive(p)]
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = now() + timeout
    while now() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    for p in pids:
        if pid_alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


# -- smtp-sink with its counter ------------------------------------------------------------------

class Sink:
    """smtp-sink -c on a free port; its counter goes to a file that poll() reads."""
    MESG = re.compile(rb"mesg=(\d+)\r")

    def __init__(self, workdir, name):
        self.port = free_port()
        self.path = os.path.join(workdir, f"sink-{name}.out")
        self.out = open(self.path, "wb")
        self.proc = subprocess.Popen([SMTP_SINK, "-u", "nobody", "-c", "-C", "-m", "2048",
                                      f"127.0.0.1:{self.port}", "1024"],
                                     stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.reader = open(self.path, "rb")
        self.tail = b""
        self.count = 0
        wait_port(self.port, self.proc)

    def poll(self):
        data = self.reader.read()
        if data:
            self.tail = (self.tail + data)[-256:]
            for m in self.MESG.finditer(self.tail):
                self.count = max(self.count, int(m.group(1)))
        return self.count

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        self.reader.close()


# -- one timed batch -----------------------------------------------------------------------------

def source_cmd(port, messages, size, sessions):
    return [SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size),
            "-M", "bench-source.example", "-f", "bench@source.example", "-t",
            "rcpt@dest.example", f"127.0.0.1:{port}"]


def kernel_thread_ticks():
    """{pid: ticks} of kernel threads (kthreadd and its children): they are not reaped into a
    parent's cutime, so their CPU over a batch is summed per thread (threads that ended
    meanwhile are missed)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if d == "2" or fields[1] == b"2":
            out[int(d)] = int(fields[11]) + int(fields[12])
    return out


def tree_ticks(roots):
    """CPU clock ticks of the processes `roots` and all their descendants, each with the time
    of its reaped children (utime + stime + cutime + cstime). Between two calls the difference
    is the CPU the tree used meanwhile, processes that came and went included (their parent
    reaped them), as long as the roots live on."""
    info, children = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        info[int(d)] = sum(int(x) for x in fields[11:15])
        children.setdefault(int(fields[1]), []).append(int(d))
    total, seen, stack = 0, set(), [p for p in roots if p]
    while stack:
        p = stack.pop()
        if p in seen or p not in info:
            continue
        seen.add(p)
        total += info[p]
        stack.extend(children.get(p, ()))
    return total


def batch(port, sink, messages, size, sessions, timeout, relay_pids=()):
    """smtp-source into port. Returns {"front": seconds until smtp-source exited, "sink":
    seconds until the sink counted every message (None: not within timeout), "arrived",
    "rc": smtp-source's exit status, "kernel_cpu_s": CPU seconds of kernel threads meanwhile
    (writeback, block I/O: much of it for the relay's syncs), "other_cpu_s": CPU seconds of
    every other process but smtp-source, the sink, the relay (relay_pids and descendants) and
    this script: other sessions' load, which skews the figures; approximate, a few CPU-seconds
    either way}."""
    base = sink.poll()
    ticks0 = tree_ticks([sink.proc.pid, *relay_pids])
    kernel0 = kernel_thread_ticks()  # writeback, block I/O, ... (partly for the relay)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    self0 = time.process_time()
    stat0 = cpu_stat()
    start = now()
    src = subprocess.Popen(source_cmd(port, messages, size, sessions), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    front = sink_s = None
    deadline = start + timeout
    while now() < deadline:
        t = now()
        if front is None and src.poll() is not None:
            front = t - start
        if sink_s is None and sink.poll() - base >= messages:
            sink_s = t - start
        if front is not None and sink_s is not None:
            break
        time.sleep(0.005)
    if src.poll() is None:
        src.terminate()
        src.wait()
    if front is None:
        front = now() - start
    stat1 = cpu_stat()
    ours = (tree_ticks([sink.proc.pid, *relay_pids]) - ticks0) / CLK_TCK
    kernel = sum(t - kernel0.get(p, 0) for p, t in kernel_thread_ticks().items()) / CLK_TCK
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours += (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    ours += time.process_time() - self0
    # Interrupt and softirq time (loopback TCP, much of it on behalf of these very processes)
    # is charged to no process: it is left out on both sides.
    busy = (stat1[2] - stat0[2]) / CLK_TCK
    return {"front": front, "sink": sink_s, "arrived": sink.poll() - base,
            "rc": src.returncode, "other_cpu_s": busy - ours - kernel, "kernel_cpu_s": kernel,
            "busy_cpu_s": busy}


# -- postern -------------------------------------------------------------------------------------

class PosternQueue:
    def __init__(self, binary, workdir, sink_port, threads):
        self.spool = os.path.join(workdir, "postern-spool")
        self.port = free_port()
        self.config = os.path.join(workdir, "postern.toml")
        with open(self.config, "w") as f:
            f.write(f"""[server]
hostname = "bench.localdomain"
threads = {threads}
spool_dir = "{self.spool}"
[log]
level = "warn"
[[listener]]
name = "bench"
address = "127.0.0.1:{self.port}"
max_connections = 5000
max_connections_per_ip = 5000
delivery = "queue"
[route.default]
upstream = "sink"
[upstream.sink]
hosts = ["127.0.0.1:{sink_port}"]
tls = "none"
allow_plaintext = true
max_connections = {UPSTREAM_CONNECTIONS}
max_messages_per_connection = 1000000
""")
        self.log = os.path.join(workdir, "postern.log")
        self.log_file = open(self.log, "wb")
        self.proc = subprocess.Popen([binary, "serve", "--config", self.config],
                                     stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)

    def queued(self):
        d = os.path.join(self.spool, "queue")
        return len([n for n in os.listdir(d) if n.endswith(".json")]) if os.path.isdir(d) else 0

    def peak_rss_kib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


# -- Postfix -------------------------------------------------------------------------------------

MASTER_CF = """{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
        -o syslog_name=postfix/$service_name
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixRelay:
    """A private, throw-away Postfix instance under `workdir`/postfix (the system Postfix is
    neither configured nor started): store-and-forward with relayhost = the sink, Postfix's
    defaults otherwise (as ../shared/bench/bench_postfix.sh). Started with `postfix -c ETC
    start`; stopped with `postfix -c ETC stop`, then by PID whatever of it is left."""

    def __init__(self, workdir, sink_port, extra=()):
        self.base = os.path.join(workdir, "postfix")
        self.etc = os.path.join(self.base, "etc")
        self.spool = os.path.join(self.base, "spool")
        self.data = os.path.join(self.base, "data")
        self.maillog = os.path.join(self.base, "log", "maillog")
        for d in (self.etc, self.spool, self.data, os.path.dirname(self.maillog)):
            os.makedirs(d)
        os.chmod(self.base, 0o755)
        shutil.chown(self.data, "postfix", "postfix")  # master.lock; owned by mail_owner
        self.port = free_port()
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(f"""# private benchmark instance - see tests/bench/bench_queue.py
compatibility_level = 3.6
queue_directory = {self.spool}
data_directory = {self.data}
mail_owner = postfix
setgid_group = postdrop
myhostname = peer-postfix.localdomain
mydomain = localdomain
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink_port}
relay_domains =
local_transport = error:5.1.1 local delivery disabled
local_recipient_maps =
alias_maps =
alias_database =
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
smtpd_peername_lookup = no
smtpd_tls_security_level = none
smtp_tls_security_level = none
biff = no
maillog_file = {self.maillog}
maillog_file_prefixes = {self.base}
""")
            for line in extra:
                f.write(line + "\n")
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=f"127.0.0.1:{self.port}"))
        self.version = subprocess.run([POSTCONF, "-c", self.etc, "-h", "mail_version"],
                                      capture_output=True, text=True).stdout.strip()
        self.master = None
        out = subprocess.run([POSTFIX, "-c", self.etc, "start"], capture_output=True,
                             text=True, stdin=subprocess.DEVNULL, timeout=60)
        deadline = now() + 20
        while now() < deadline and not self._listening():
            time.sleep(0.1)
        self.master = self._master_pid()
        if out.returncode != 0 or not self._listening():
            self.stop()
            raise RuntimeError(f"postfix did not start (rc {out.returncode}):\n{out.stdout}"
                               f"{out.stderr}\n{self.log_tail()}")

    def _listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def _master_pid(self):
        try:
            with open(os.path.join(self.spool, "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _processes(self):
        """The master and every process whose working directory is this instance's queue
        directory (Postfix's daemons run there), that is the processes of this instance."""
        pids = {self.master} if self.master else set()
        spool = os.path.realpath(self.spool)
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    cwd = os.readlink(f"/proc/{d}/cwd")
                except OSError:
                    continue
                if cwd == spool or cwd.startswith(spool + "/"):
                    pids.add(int(d))
        return [p for p in pids if p and p != os.getpid() and pid_alive(p)]

    def queued(self):
        n = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(os.path.join(self.spool, sub)):
                n += len(files)
        return n

    def log_tail(self, lines=20):
        try:
            with open(self.maillog, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no maillog)"

    def warnings(self):
        """(number of warning/fatal/panic lines in the maillog, their distinct kinds)."""
        kinds = {}
        try:
            with open(self.maillog, errors="replace") as f:
                for line in f:
                    m = re.search(r"(warning|fatal|panic): (.*)", line)
                    if m:
                        kind = re.sub(r"\d+", "N", m.group(0))[:120]
                        kinds[kind] = kinds.get(kind, 0) + 1
        except OSError:
            pass
        return sum(kinds.values()), kinds

    def stop(self):
        subprocess.run([POSTFIX, "-c", self.etc, "stop"], capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=60)
        deadline = now() + 15
        while now() < deadline and self.master and pid_alive(self.master):
            time.sleep(0.1)
        stop_pids(self._processes())


# -- a round -------------------------------------------------------------------------------------

def run_ceiling(a, workdir):
    sink = Sink(workdir, "ceiling")
    try:
        if a.warmup:
            batch(sink.port, sink, a.warmup, a.size, a.sessions, a.timeout)
        return batch(sink.port, sink, a.messages, a.size, a.sessions, a.timeout)
    finally:
        sink.close()


def drain_wait(queued, limit=30):
    """Seconds until queued() is 0 (None if it is not within `limit`)."""
    start = now()
    while queued():
        if now() - start > limit:
            return None
        time.sleep(0.05)
    return now() - start


def run_postern(a, workdir):
    d = os.path.join(workdir, "postern")
    os.makedirs(d)
    sink = Sink(d, "postern")
    relay = None
    try:
        relay = PosternQueue(a.binary, d, sink.port, a.threads)
        if a.warmup:
            batch(relay.port, sink, a.warmup, a.size, a.sessions, a.timeout)
            drain_wait(relay.queued)
        result = batch(relay.port, sink, a.messages, a.size, a.sessions, a.timeout,
                       [relay.proc.pid])
        drained = drain_wait(relay.queued)
        return result, {"drained": drained, "left": relay.queued(),
                        "rss_mib": relay.peak_rss_kib() / 1024}
    finally:
        if relay:
            relay.stop()
        sink.close()


def run_postfix(a, workdir):
    d = os.path.join(workdir, "postfix-run")
    os.makedirs(d)
    os.chmod(workdir, 0o755)
    os.chmod(d, 0o755)
    sink = Sink(d, "postfix")
    relay = None
    try:
        relay = PostfixRelay(d, sink.port, a.postfix_extra)
        if a.warmup:
            batch(relay.port, sink, a.warmup, a.size, a.sessions, a.timeout)
            drain_wait(relay.queued)
        result = batch(relay.port, sink, a.messages, a.size, a.sessions, a.timeout,
                       [relay.master])
        drained = drain_wait(relay.queued)
        return result, {"drained": drained, "left": relay.queued(), "version": relay.version,
                        "warnings": relay.warnings()}
    finally:
        if relay:
            relay.stop()
        sink.close()


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def fmt_s(x):
    return f"{x:.2f} s" if x is not None else "not reached"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--postern", default="build/postern")
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1,
                    help="rounds of ceiling, postern, Postfix (medians are printed)")
    ap.add_argument("--warmup", type=int, default=1000,
                    help="messages sent (and delivered) before each timed batch, not counted")
    ap.add_argument("--threads", type=int, default=0,
                    help="postern's server.threads (0: one per core, the default)")
    ap.add_argument("--order", default="alternate",
                    help="order of the two relays within a round (the ceiling runs first): "
                         "postfix,postern, postern,postfix, or alternate (odd rounds "
                         "Postfix first, even rounds postern first); the second one runs "
                         "after the first one's deletions")
    ap.add_argument("--timeout", type=float, default=0,
                    help="cap per timed batch in seconds (default: 60 + messages / 100)")
    ap.add_argument("--postfix-extra", action="append", default=[],
                    help="an extra main.cf line for Postfix (repeatable), e.g. in_flow_delay=0")
    ap.add_argument("--workdir", default=None,
                    help="parent of the run's temporary folder (default: $TMPDIR or /tmp); "
                         "postern's spool and Postfix's queue both go there")
    ap.add_argument("--quiet-wait", type=float, default=120,
                    help="seconds to wait at most for other load to end before each round")
    a = ap.parse_args()
    a.binary = os.path.abspath(a.postern)
    a.timeout = a.timeout or 60 + a.messages / 100
    if a.order == "alternate":
        orders = [["postfix", "postern"], ["postern", "postfix"]]
    else:
        orders = [[x.strip() for x in a.order.split(",")]]
        if sorted(orders[0]) != ["postern", "postfix"]:
            ap.error("--order: postfix,postern, postern,postfix or alternate")
    if os.geteuid() != 0:
        sys.exit("bench_queue.py runs a private Postfix instance: run it as root")
    for tool in (SMTP_SOURCE, SMTP_SINK, POSTFIX):
        if not os.path.exists(tool):
            sys.exit(f"{tool} is missing (Debian package postfix)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 20000)), hard))

    workdir = tempfile.mkdtemp(prefix="queue-bench-", dir=a.workdir)
    os.chmod(workdir, 0o755)
    print(f"load: {a.messages} messages of {a.size} octets, {a.sessions} sessions, a new "
          f"connection per message ({a.warmup} more before each timed batch as a warm-up); "
          f"postern (delivery = \"queue\", upstream max_connections {UPSTREAM_CONNECTIONS}) and "
          f"Postfix (defaults, relayhost) relay to smtp-sink; spool and queue under {workdir}",
          flush=True)
    rounds = []
    all_arrived = True
    noisy_runs = 0
    try:
        for r in range(a.rounds):
            busy = quiet_gate(0.3, a.quiet_wait)
            rd = os.path.join(workdir, f"round{r + 1}")
            os.makedirs(rd)
            os.chmod(rd, 0o755)
            ceiling = run_ceiling(a, rd)
            res = {"ceiling": (ceiling, {})}
            order = orders[r % len(orders)]
            for which in order:
                res[which] = (run_postern if which == "postern" else run_postfix)(a, rd)
            rounds.append(res)
            print(f"round {r + 1} (other load before it: {busy:.2f} cores):", flush=True)
            for name in ["ceiling"] + order:
                b, info = res[name]
                ok = b["arrived"] == a.messages and b["rc"] == 0
                all_arrived = all_arrived and ok
                extra = ""
                if name != "ceiling":
                    extra = (f", queue empty {fmt_s(info['drained'])} after that"
                             if info["left"] == 0 else f", {info['left']} files left queued")
                noisy = b["other_cpu_s"] > max(1.0, 0.05 * b["busy_cpu_s"])
                noisy_runs += noisy
                print(f"  {name:8s} accept {a.messages / b['front']:6.0f} msg/s "
                      f"({b['front']:.2f} s), last at the sink after {fmt_s(b['sink'])}, "
                      f"arrived {b['arrived']}"
                      f"{'' if b['rc'] == 0 else ', smtp-source exit %d' % b['rc']}"
                      f"{extra}; CPU-s: kernel threads {b['kernel_cpu_s']:.1f}, other "
                      f"processes {b['other_cpu_s']:.1f} of {b['busy_cpu_s']:.1f}"
                      f"{' NOISY' if noisy else ''}", flush=True)
            count, kinds = res["postfix"][1]["warnings"]
            print(f"  Postfix {res['postfix'][1]['version']}: {count} warning lines in its "
                  f"maillog; postern peak RSS {res['postern'][1]['rss_mib']:.1f} MiB", flush=True)
            for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:5]:
                print(f"    {n} x {kind}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def accept_rate(res, name):
        return a.messages / res[name][0]["front"]

    def sink_time(res, name):
        return res[name][0]["sink"]

    accept = {n: median([accept_rate(res, n) for res in rounds])
              for n in ("ceiling", "postern", "postfix")}
    e2e = {n: median([sink_time(res, n) for res in rounds])
           for n in ("ceiling", "postern", "postfix")}
    # Ratios: the median of the rounds' own ratios (both relays of a round saw the same machine).
    accept_ratio = median([accept_rate(res, "postern") / accept_rate(res, "postfix")
                           for res in rounds])
    e2e_ratio = median([sink_time(res, "postfix") / sink_time(res, "postern") for res in rounds
                        if sink_time(res, "postfix") and sink_time(res, "postern")])
    print()
    print(f"{'medians of %d rounds' % a.rounds if a.rounds > 1 else 'results'} "
          f"({a.messages} x {a.size} octets, {a.sessions} sessions):")
    print("| run | accept rate (msg/s) | last message at the sink | end-to-end msg/s |")
    print("|---|---|---|---|")
    labels = {"ceiling": "ceiling: smtp-source -> smtp-sink",
              "postern": "smtp-source -> postern (queue, fsync) -> smtp-sink",
              "postfix": "smtp-source -> Postfix (relayhost) -> smtp-sink"}
    for n in ("ceiling", "postern", "postfix"):
        rate = f"{a.messages / e2e[n]:.0f}" if e2e[n] else "-"
        print(f"| {labels[n]} | {accept[n]:.0f} | {fmt_s(e2e[n])} | {rate} |")
    print()
    print(f"postern / Postfix: accept rate {accept_ratio:.2f}x; time until the last message "
          f"reached the sink {f'{e2e_ratio:.2f}x shorter' if e2e_ratio else 'n/a'}; postern "
          f"accepts at {accept['postern'] / accept['ceiling']:.2f}x the ceiling")
    if noisy_runs:
        print(f"warning: other processes took more than 5 % of the CPU in {noisy_runs} timed "
              f"batch(es): the figures are skewed; run again on a quiet machine")
    print(f"every message arrived at the sinks: {'yes' if all_arrived else 'NO'}")
    met = accept_ratio >= 2 and e2e_ratio is not None and e2e_ratio >= 2
    print(f"goal: postern >= 2x Postfix on both figures: {'met' if met else 'NOT met'}")
    return 0 if all_arrived else 1


if __name__ == "__main__":
    sys.exit(main())
