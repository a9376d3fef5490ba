"""Starts a real postern on loopback for integration tests, with a generated configuration, a
random free port and a private outbox directory, and gives raw-socket SMTP helpers.

Environment: POSTERN_BIN (the binary; default ../../build/postern), POSTERN_SOURCE (the repo).
Run with Debian's /usr/bin/python3 (ctest does).
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("POSTERN_SOURCE", os.path.normpath(os.path.join(HERE, "..", "..")))
BINARY = os.environ.get("POSTERN_BIN", os.path.join(SOURCE, "build", "postern"))
SHARED = os.path.normpath(os.path.join(SOURCE, "..", "shared"))


# The text of a "250 2.0.0 Ok: queued as <id>" reply, as SmtpConn.reply() returns it.
QUEUED = re.compile(r"^2\.0\.0 Ok: queued as ([0-9A-HJKMNP-TV-Z]{14})$")


# postern's "started" log line, in the text and in the JSON log format.
STARTED = re.compile(r'event=started\b|"event":\s*"started"')


def wait_for(predicate, timeout=5.0, step=0.02):
    """Polls predicate until it holds or timeout passes; returns its last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def free_port(host="127.0.0.1"):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


class Postern:
    """One postern process. `listener` overrides keys of the single [[listener]]; `routes`
    ({name: {key: value}}) replaces the default `[route.default] outbox = <private outbox>`;
    `extra_toml` is appended as it is (e.g. [upstream.NAME] tables, [[route_rule]])."""

    def __init__(self, listener=None, server=None, extra_toml="", routes=None):
        self.dir = tempfile.mkdtemp(prefix="postern-it-")
        self.outbox = os.path.join(self.dir, "outbox")
        self.port = free_port()
        self.log_path = os.path.join(self.dir, "postern.log")
        listener_keys = {"name": "test", "address": f"127.0.0.1:{self.port}",
                         "trusted_networks": ["127.0.0.0/8", "::1/128"]}
        listener_keys.update(listener or {})
        server_keys = {"hostname": "postern.test", "threads": 2, "shutdown_grace": "5s"}
        server_keys.update(server or {})
        lines = ["[server]"] + [f"{k} = {toml_value(v)}" for k, v in server_keys.items()]
        lines += ["[log]", 'level = "debug"', "[[listener]]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in listener_keys.items()]
        if routes is None:
            routes = {"default": {"outbox": self.outbox}}
        for name, keys in routes.items():
            lines += [f"[route.{name}]"] + [f"{k} = {toml_value(v)}" for k, v in keys.items()]
        lines += [extra_toml]
        self.config_path = os.path.join(self.dir, "postern.toml")
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = None
        self.log_file = None

    def start(self, preexec_fn=None):
        """Starts the server and returns once it logged event=started (its listeners are open
        and its signal handlers installed); preexec_fn runs in the child before exec (e.g. set
        rlimits). A port that free_port() found free can be taken by another test's server
        before postern binds it; postern then fails with "cannot listen", and the generated
        address moves to another free port (up to three tries)."""
        for attempt in range(3):
            if self.log_file:
                self.log_file.close()
            self.log_file = open(self.log_path, "wb")
            self.proc = subprocess.Popen([BINARY, "serve", "--config", self.config_path],
                                         stdout=self.log_file, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=preexec_fn)
            deadline = time.time() + 20
            while time.time() < deadline:
                if STARTED.search(self.log()):
                    return self
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
            else:
                raise RuntimeError("postern did not start:\n" + self.log())
            log = self.log()
            if attempt < 2 and "cannot listen" in log and self._move_to_free_port():
                continue
            raise RuntimeError("postern exited at start-up:\n" + log)

    def _move_to_free_port(self):
        """Rewrites the generated listener address with a new free port; False when the test
        chose the address itself."""
        with open(self.config_path) as f:
            config = f.read()
        old = f'address = "127.0.0.1:{self.port}"'
        if config.count(old) != 1:
            return False
        self.port = free_port()
        with open(self.config_path, "w") as f:
            f.write(config.replace(old, f'address = "127.0.0.1:{self.port}"'))
        return True

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log_file.close()
        return self.proc.returncode if self.proc else None

    def cleanup(self):
        self.stop()
        log = self.log()
        shutil.rmtree(self.dir, ignore_errors=True)
        # Under `make test` the suite also runs against a sanitized build: make its reports fail
        # the test loudly rather than hide in a deleted log.
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in log:
                at = log.index(marker)
                raise AssertionError("sanitizer report in postern's log:\n" + log[at:at + 3000])

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def messages(self):
        """{queue_id: (eml bytes, envelope dict)} of the outbox."""
        return outbox_messages(self.outbox)

    def outbox_names(self):
        return sorted(os.listdir(self.outbox)) if os.path.isdir(self.outbox) else []

    def connect(self, source=None, timeout=10):
        return SmtpConn(("127.0.0.1", self.port), source=source, timeout=timeout)


def outbox_messages(directory):
    """{queue_id: (eml bytes, envelope dict)} of an outbox directory ({} when it is absent)."""
    out = {}
    if not os.path.isdir(directory):
        return out
    for name in sorted(os.listdir(directory)):
        if name.endswith(".eml"):
            qid = name[:-4]
            with open(os.path.join(directory, name), "rb") as f:
                eml = f.read()
            with open(os.path.join(directory, qid + ".json")) as f:
                out[qid] = (eml, json.load(f))
    return out


def smtp_transaction(c, mail_from, rcpts, body, mail_params=""):
    """One transaction over an open SmtpConn; DATA only when a recipient was accepted.
    Returns {"mail": (code, text), "rcpt": [(code, text)...], "data": (code, text) or None}."""
    out = {"mail": c.cmd(f"MAIL FROM:<{mail_from}>" + (" " + mail_params
                                                       if mail_params else ""))[:2],
           "rcpt": [], "data": None}
    if out["mail"][0] != 250:
        return out
    for r in rcpts:
        out["rcpt"].append(c.cmd(f"RCPT TO:<{r}>")[:2])
    if any(code == 250 for code, _ in out["rcpt"]):
        code, text, _ = c.cmd("DATA")
        if code == 354:
            c.send(body.replace(b"\r\n.", b"\r\n..") + b".\r\n")
            out["data"] = c.reply()[:2]
        else:
            out["data"] = (code, text)
    return out


def strip_received(eml):
    """The message as the client sent it: without postern's Received header (a first line and
    its tab-indented continuation lines)."""
    assert eml.startswith(b"Received: from "), eml[:80]
    pos = eml.index(b"\r\n") + 2
    while eml[pos:pos + 1] == b"\t":
        pos = eml.index(b"\r\n", pos) + 2
    return eml[pos:]


class SmtpConn:
    """A raw SMTP client: send bytes as they are, read replies as (code, [lines])."""

    def __init__(self, address, source=None, timeout=10):
        self.sock = socket.create_connection(address, timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by server; buffered: %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self):
        """One (possibly multi-line) reply: (code, text of the last line, all lines)."""
        lines = []
        while True:
            line = self._line()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), line[4:], lines

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def closed(self, timeout=5):
        """True when the server closed the connection (after any buffered replies)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class PosternTestCase(unittest.TestCase):
    """Starts one postern per test class; LISTENER and SERVER override config keys."""
    LISTENER = {}
    SERVER = {}

    @classmethod
    def setUpClass(cls):
        cls.postern = Postern(listener=cls.LISTENER, server=cls.SERVER).start()

    @classmethod
    def tearDownClass(cls):
        cls.postern.cleanup()

    def greet(self, ehlo="client.test", source=None):
        c = self.postern.connect(source=source)
        self.addCleanup(c.close)
        code, _, _ = c.reply()
        self.assertEqual(code, 220)
        if ehlo:
            code, _, _ = c.cmd("EHLO " + ehlo)
            self.assertEqual(code, 250)
        return c
