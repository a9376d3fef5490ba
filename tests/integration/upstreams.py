"""Upstream peers for postern's relay tests: a test PKI made with the openssl CLI, a real
smarthost (aiosmtpd, in its own process), Postfix's smtp-sink, and a scripted misbehaving SMTP
server (FakeServer) for the STARTTLS attacks of ../shared/testdata/starttls; and RelayTestCase,
the base of the relay tests (a postern with delivery = "passthrough" in front of those peers,
a raw client, postern's logfmt log parsed).

Every fixture lives in a temporary directory of its own and leaves nothing behind after
cleanup()/stop(). Run with Debian's /usr/bin/python3 (it has aiosmtpd).
"""
import base64
import json
import os
import re
import select
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
from types import SimpleNamespace

from harness import BINARY, Postern, smtp_transaction, toml_value

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = os.path.join(HERE, "upstream_server.py")


def _free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def closed_port(host="127.0.0.1"):
    """A loopback port that nothing listens on (connections to it are refused)."""
    return _free_port(host)


def port_listening(port, host="127.0.0.1"):
    """Whether a TCP socket listens on host:port, read from /proc/net/tcp so that checking
    does not open a connection (which servers that count sessions would count)."""
    want = "%08X:%04X" % (int.from_bytes(socket.inet_aton(host), "little"), port)
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[1] == want and parts[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def _wait(predicate, timeout, step=0.02):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# --- PKI ------------------------------------------------------------------------------------

def _openssl(*args, cwd=None):
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=30)
    if out.returncode != 0:
        raise RuntimeError("openssl %s failed:\n%s%s" % (" ".join(args), out.stdout, out.stderr))
    return out.stdout


_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def _serial():
    return "0x" + os.urandom(8).hex()


def _leaf_ext(path, sans, usage="serverAuth"):
    with open(path, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                f"extendedKeyUsage={usage}\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid\n")
        if sans:
            f.write("subjectAltName=" + sans + "\n")
    return path


def _make_ca(d, name, cn):
    key, cert = os.path.join(d, name + ".key"), os.path.join(d, name + ".pem")
    _openssl("req", "-x509", *_EC, "-keyout", key, "-out", cert, "-days", "30",
             "-subj", "/CN=" + cn, "-set_serial", _serial(),
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash")
    return SimpleNamespace(cert=cert, key=key)


def _make_leaf(d, name, cn, sans, ca, usage="serverAuth"):
    key, csr = os.path.join(d, name + ".key"), os.path.join(d, name + ".csr")
    cert = os.path.join(d, name + ".pem")
    _openssl("req", "-new", *_EC, "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
    _openssl("x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-set_serial",
             _serial(), "-days", "30", "-sha256", "-out", cert,
             "-extfile", _leaf_ext(os.path.join(d, name + ".ext"), sans, usage))
    return SimpleNamespace(cert=cert, key=key)


def _make_expired(d, name, cn, sans, ca):
    """notBefore 2020-01-01, notAfter 2020-02-01. `openssl x509 -req` of OpenSSL 3.0 cannot set
    dates (no -not_before/-not_after before 3.4; -days -1 gives notAfter < notBefore), so this
    goes through `openssl ca` with -startdate/-enddate and a throw-away CA database."""
    key, csr = os.path.join(d, name + ".key"), os.path.join(d, name + ".csr")
    cert = os.path.join(d, name + ".pem")
    _openssl("req", "-new", *_EC, "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
    db = os.path.join(d, "ca-db")
    os.makedirs(os.path.join(db, "new"), exist_ok=True)
    open(os.path.join(db, "index.txt"), "w").close()
    with open(os.path.join(db, "serial"), "w") as f:
        f.write(os.urandom(8).hex().upper() + "\n")
    conf = os.path.join(db, "ca.cnf")
    with open(conf, "w") as f:
        f.write("[ca]\ndefault_ca = test_ca\n[test_ca]\n"
                f"database = {db}/index.txt\nnew_certs_dir = {db}/new\nserial = {db}/serial\n"
                "default_md = sha256\npolicy = policy_any\nunique_subject = no\n"
                "copy_extensions = none\n[policy_any]\ncommonName = supplied\n")
    _openssl("ca", "-batch", "-notext", "-config", conf, "-cert", ca.cert, "-keyfile", ca.key,
             "-in", csr, "-out", cert, "-startdate", "20200101000000Z",
             "-enddate", "20200201000000Z",
             "-extfile", _leaf_ext(os.path.join(d, name + ".ext"), sans))
    return SimpleNamespace(cert=cert, key=key)


def _make_self_signed(d, name, cn, sans):
    key, cert = os.path.join(d, name + ".key"), os.path.join(d, name + ".pem")
    _openssl("req", "-x509", *_EC, "-keyout", key, "-out", cert, "-days", "30",
             "-subj", "/CN=" + cn, "-set_serial", _serial(),
             "-addext", "subjectAltName=" + sans,
             "-addext", "extendedKeyUsage=serverAuth")
    return SimpleNamespace(cert=cert, key=key)


def make_pki(directory):
    """Generates a test PKI in `directory` (EC P-256 keys, PEM files) and returns:
      ca            the trusted test CA (.cert, .key): give .cert to postern as ca_file
      localhost     leaf signed by ca for DNS:localhost, IP:127.0.0.1 (valid 30 days)
      wrong_name    leaf signed by ca for DNS:wrong.example only      -> hostname mismatch
      expired       leaf signed by ca for localhost, valid Jan 2020    -> certificate has expired
      self_signed   self-signed leaf for localhost (not the CA)        -> self-signed certificate
      other_ca      an untrusted CA; other_ca_leaf: a localhost leaf it signed
                                                   -> unable to get local issuer certificate
      client        a clientAuth leaf signed by ca (CN postern.test)
    Each leaf has .cert and .key (paths). Takes about half a second."""
    os.makedirs(directory, exist_ok=True)
    local = "DNS:localhost,IP:127.0.0.1"
    ca = _make_ca(directory, "ca", "postern test CA")
    other_ca = _make_ca(directory, "other-ca", "untrusted test CA")
    return SimpleNamespace(
        dir=directory,
        ca=ca,
        ca_file=ca.cert,
        localhost=_make_leaf(directory, "localhost", "localhost", local, ca),
        wrong_name=_make_leaf(directory, "wrong-name", "wrong.example", "DNS:wrong.example", ca),
        expired=_make_expired(directory, "expired", "localhost", local, ca),
        self_signed=_make_self_signed(directory, "self-signed", "localhost", local),
        other_ca=other_ca,
        other_ca_leaf=_make_leaf(directory, "other-ca-leaf", "localhost", local, other_ca),
        client=_make_leaf(directory, "client", "postern.test", "DNS:postern.test", ca,
                          usage="clientAuth"),
    )


def client_context(ca_file=None, verify=True):
    """An ssl.SSLContext for test clients: verifying against ca_file, or not verifying."""
    ctx = ssl.create_default_context(cafile=ca_file) if verify else \
        ssl._create_unverified_context()
    return ctx


# --- aiosmtpd smarthost ---------------------------------------------------------------------

DEFAULT_RCPT_REPLIES = {
    "refuse": "550 5.1.1 No such user here",
    "defer": "451 4.3.0 Try later",
}


class AiosmtpdUpstream:
    """Debian's aiosmtpd as a real smarthost, in a subprocess on 127.0.0.1.

    tls: "none" | "starttls" | "implicit" (cert/key required for the last two).
    users: {name: password} for AUTH PLAIN and LOGIN (offered only under TLS when tls is
    "starttls"; offered in the clear when tls is "none"). auth_required: MAIL needs AUTH first.
    require_tls (starttls only, default True): commands other than EHLO/NOOP/STARTTLS/QUIT get
    "530 Must issue a STARTTLS command first" before TLS.
    rcpt_replies: {local-part prefix: reply}; default: "refuse..." -> 550 5.1.1, "defer..." ->
    451 4.3.0. Messages with "X-Test-Reply: 452" (or a full reply, or "drop") in their header
    are answered so at end of data and not stored; "X-Test-Delay: SECONDS" delays the reply.
    port: 0 picks a free port; stop() then start() keeps the port, spool and events.
    """

    def __init__(self, tls="none", cert=None, key=None, users=None, auth_required=False,
                 require_tls=True, rcpt_replies=None, mail_replies=None, port=0,
                 hostname="upstream.test", ehlo_hide=(), ehlo_extra=(),
                 enhanced_status_codes=True, data_size_limit=2 ** 25, timeout=300,
                 client_ca=None, directory=None):
        if tls not in ("none", "starttls", "implicit"):
            raise ValueError("tls: " + tls)
        if tls != "none" and not (cert and key):
            raise ValueError("tls=%s needs cert and key" % tls)
        self.own_dir = directory is None
        self.dir = directory or tempfile.mkdtemp(prefix="postern-upstream-")
        self.spool = os.path.join(self.dir, "spool")
        self.events_path = os.path.join(self.dir, "events.jsonl")
        self.stderr_path = os.path.join(self.dir, "server.stderr")
        self.config = {
            "host": "127.0.0.1", "port": port, "tls": tls, "cert": cert, "key": key,
            "client_ca": client_ca, "require_tls": require_tls, "users": dict(users or {}),
            "auth_required": auth_required,
            "rcpt_replies": DEFAULT_RCPT_REPLIES if rcpt_replies is None else rcpt_replies,
            "mail_replies": dict(mail_replies or {}), "hostname": hostname,
            "ehlo_hide": list(ehlo_hide), "ehlo_extra": list(ehlo_extra),
            "enhanced_status_codes": enhanced_status_codes,
            "data_size_limit": data_size_limit, "timeout": timeout,
            "spool": self.spool, "events": self.events_path,
        }
        self.port = port or None
        self.proc = None

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=10):
        if self.port:
            self.config["port"] = self.port
        config_path = os.path.join(self.dir, "config.json")
        with open(config_path, "w") as f:
            json.dump(self.config, f)
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([PYTHON, SERVER_SCRIPT, config_path], stdout=subprocess.PIPE,
                                     stderr=self._stderr, stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        line = b""
        while time.time() < deadline and not line.endswith(b"\n"):
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 256)
                if not chunk:
                    break
                line += chunk
        m = re.match(rb"READY (\d+)\n", line)
        if not m:
            self.stop()
            raise RuntimeError("aiosmtpd upstream did not start: %r\n%s" % (line, self.stderr()))
        self.port = int(m.group(1))
        return self

    def stop(self, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.proc.stdout.close()
            self._stderr.close()
        self.proc = None

    def cleanup(self):
        self.stop()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def events(self, name=None):
        """The recorded events (dicts with "event", "conn", ...), optionally of one kind:
        connect, ehlo, helo, starttls, tls, auth, mail, rcpt, data, rset, noop, quit,
        disconnect."""
        out = []
        try:
            with open(self.events_path) as f:
                for line in f:
                    if line.endswith("\n"):
                        e = json.loads(line)
                        if name is None or e["event"] == name:
                            out.append(e)
        except FileNotFoundError:
            pass
        return out

    def connection_count(self):
        """SMTP sessions opened so far (with implicit TLS: those whose handshake succeeded)."""
        return len(self.events("connect"))

    def open_connections(self):
        return self.connection_count() - len(self.events("disconnect"))

    def messages(self):
        """Stored messages in arrival order: dicts with "data" (the exact DATA bytes as
        received, dot-unstuffed), "mail_from", "mail_line" (the raw MAIL argument),
        "mail_options" (upper-cased by aiosmtpd), "rcpt_tos", "rcpt_lines", "conn", "helo",
        "tls", "tls_version", "auth_user", "auth_mechanism", "client_cert", "size"."""
        out = []
        if not os.path.isdir(self.spool):
            return out
        for name in sorted(os.listdir(self.spool)):
            if name.endswith(".json"):
                with open(os.path.join(self.spool, name)) as f:
                    meta = json.load(f)
                with open(os.path.join(self.spool, name[:-5] + ".eml"), "rb") as f:
                    meta["data"] = f.read()
                out.append(meta)
        return out

    def wait_messages(self, count, timeout=10):
        _wait(lambda: len(self.messages()) >= count, timeout)
        return self.messages()


# --- Postfix smtp-sink ----------------------------------------------------------------------

SMTP_SINK = next((p for p in ("/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink")
                  if os.path.exists(p)), None)


class SmtpSink:
    """Postfix's smtp-sink on 127.0.0.1. It advertises PIPELINING, 8BITMIME, AUTH PLAIN LOGIN
    (and answers any AUTH with "250 2.0.0 Ok": pass -a to hide AUTH), XCLIENT, XFORWARD,
    ENHANCEDSTATUSCODES and DSN; no STARTTLS, SIZE, SMTPUTF8 or CHUNKING. Its last EHLO line
    is "250 " (an empty keyword). options: extra smtp-sink flags, e.g. ["-r", "RCPT"] (4xx to
    every RCPT), ["-Q", "MAIL"] (421 and hang up), ["-w", "5"] (slow DATA)."""

    def __init__(self, dump=True, options=(), hostname="sink.test", port=0, directory=None):
        if not SMTP_SINK:
            raise RuntimeError("smtp-sink is not installed (Debian package postfix)")
        self.own_dir = directory is None
        self.dir = directory or tempfile.mkdtemp(prefix="postern-sink-")
        os.chmod(self.dir, 0o755)  # smtp-sink drops to nobody before writing dumps
        self.dump_dir = os.path.join(self.dir, "dump") if dump else None
        if self.dump_dir:
            os.makedirs(self.dump_dir, exist_ok=True)
            os.chmod(self.dump_dir, 0o777)
        self.counter_path = os.path.join(self.dir, "counters")
        self.options = list(options)
        self.hostname = hostname
        self.port = port or None
        self.proc = None

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=10):
        if not self.port:
            self.port = _free_port()
        cmd = [SMTP_SINK, "-c", "-h", self.hostname]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # required when run as root
        if self.dump_dir:
            cmd += ["-d", os.path.join(self.dump_dir, "%Y%m%d%H%M%S.")]
        cmd += self.options + [f"127.0.0.1:{self.port}", "64"]
        self._out = open(self.counter_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        if not _wait(lambda: port_listening(self.port) or self.proc.poll() is not None,
                     timeout) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("smtp-sink did not start: " + self.output())
        return self

    def stop(self, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._out.close()
        self.proc = None

    def cleanup(self):
        self.stop()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    def output(self):
        try:
            with open(self.counter_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def counters(self):
        """{"sess": ended sessions, "quit": QUITs, "mesg": messages (final ".")}, from -c."""
        found = re.findall(r"sess=(\d+) quit=(\d+) mesg=(\d+)", self.output())
        if not found:
            return {"sess": 0, "quit": 0, "mesg": 0}
        sess, quit_, mesg = found[-1]
        return {"sess": int(sess), "quit": int(quit_), "mesg": int(mesg)}

    def connection_count(self):
        """Sessions that have ended (smtp-sink counts a session when it closes)."""
        return self.counters()["sess"]

    def messages(self):
        """Dumped messages, oldest first: dicts with "helo", "mail_args", "rcpt_args",
        "mail_from", "rcpt_tos", "client_addr", "proto" and "data". The dump is LF-terminated
        text: data has CR removed (a bare LF cannot be told from a CRLF); "data_crlf" puts the
        CRs back on every line."""
        if not self.dump_dir:
            return []
        names = sorted(os.listdir(self.dump_dir),
                       key=lambda n: (os.stat(os.path.join(self.dump_dir, n)).st_mtime_ns, n))
        out = []
        for name in names:
            with open(os.path.join(self.dump_dir, name), "rb") as f:
                raw = f.read()
            out.append(self._parse(raw, name))
        return out

    @staticmethod
    def _parse(raw, name):
        lines = raw.split(b"\n")
        msg = {"file": name, "rcpt_args": [], "helo": None}
        i = 0
        while i < len(lines):
            line = lines[i].decode("utf-8", "replace")
            i += 1
            key, _, value = line.partition(": ")
            if key == "X-Client-Addr":
                msg["client_addr"] = value
            elif key == "X-Client-Proto":
                msg["proto"] = value
            elif key == "X-Helo-Args":
                msg["helo"] = value
            elif key == "X-Mail-Args":
                msg["mail_args"] = value
            elif key == "X-Rcpt-Args":
                msg["rcpt_args"].append(value)
            elif key == "Received":
                while i < len(lines) and lines[i].startswith(b"\t"):
                    i += 1
                break
        body = b"\n".join(lines[i:])
        if body.endswith(b"\n\n"):  # smtp-sink appends an empty line to every dump
            body = body[:-1]
        msg["data"] = body
        msg["data_crlf"] = body.replace(b"\n", b"\r\n")
        addr = re.compile(r"<([^>]*)>")
        m = addr.match(msg.get("mail_args", ""))
        msg["mail_from"] = m.group(1) if m else None
        msg["rcpt_tos"] = [m.group(1) for m in (addr.match(a) for a in msg["rcpt_args"]) if m]
        return msg

    def wait_messages(self, count, timeout=10):
        _wait(lambda: len(self.messages()) >= count, timeout)
        return self.messages()


# --- FakeServer: a scripted, misbehaving SMTP server ------------------------------------------

# ../shared/testdata/starttls/fake-mail-server-smtp/Negotiation: STARTTLS must never be
# treated as done unless the server answered 220 and the handshake completed.
NEGOTIATION_CASES = {
    # O_1: STARTTLS not advertised (AUTH is, in the clear); STARTTLS answered 502.
    "O_1": dict(ehlo=("AUTH PLAIN LOGIN",), starttls_reply="502 Command not implemented",
                starttls_transition=False),
    "O_2": dict(ehlo=("STARTTLS",), starttls_reply="502 Command not implemented",
                starttls_transition=False),
    "O_3": dict(ehlo=("STARTTLS",),
                starttls_reply="454 TLS not available due to temporary reason",
                starttls_transition=False),
    "O_4": dict(ehlo=("STARTTLS",), starttls_reply="354 do something else",
                starttls_transition=False),
}

# Buffering/B_1: the 220 to STARTTLS and a forged EHLO reply in the same write; a client that
# keeps reading its plaintext buffer after the handshake would take the forged reply as the
# server's answer to its post-TLS EHLO.
INJECTION_REPLY = b"220 Ready to start TLS\r\n250-example.org\r\n250 AUTH LOGIN\r\n"


class FakeServer:
    """A scripted SMTP server in a thread, for behaviour real servers do not show.

    greeting           the first reply (e.g. "421 4.3.2 Try later"); a non-2xx greeting is
                       followed by a hang-up unless hangup_after_greeting=False
    silent             accept connections and never send anything (timeouts)
    ehlo / ehlo_tls    EHLO keywords before / after TLS
    starttls_reply     str (CRLF added) or bytes (sent as they are, in ONE write)
    starttls_transition  do the TLS handshake after starttls_reply (needs cert/key)
    implicit_tls       TLS from the first byte (needs cert/key)
    stall_on           verbs after which the server stops answering ("EHLO", "MAIL",
                       "RCPT", "DATA" = after the 354, "." = after the message, ...)
    rcpt_reply, data_reply, auth_reply  the replies to RCPT, end of data, AUTH
    BDAT is understood (advertise it with "CHUNKING" in ehlo/ehlo_tls).

    Records every line received: commands() / verbs() / records (dicts with conn, tls, line),
    connections, tls_handshakes, tls_failures (handshake errors, as text) and messages (the
    payloads of DATA, dot-unstuffed, or of BDAT, as bytes). Anything that arrives after STARTTLS in the clear is kept in
    plaintext_after_starttls.
    """

    def __init__(self, greeting="220 fake.test ESMTP fake", silent=False,
                 hangup_after_greeting=True,
                 ehlo=("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "STARTTLS"),
                 ehlo_tls=("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "AUTH PLAIN LOGIN"),
                 starttls_reply="220 2.0.0 Ready to start TLS", starttls_transition=True,
                 cert=None, key=None, implicit_tls=False, stall_on=(),
                 rcpt_reply="250 2.1.5 Ok", data_reply="250 2.0.0 Ok: queued as FAKE",
                 auth_reply="235 2.7.0 Authentication successful", hostname="fake.test"):
        self.greeting = greeting
        self.silent = silent
        self.hangup_after_greeting = hangup_after_greeting
        self.ehlo = list(ehlo)
        self.ehlo_tls = list(ehlo_tls)
        self.starttls_reply = starttls_reply if isinstance(starttls_reply, bytes) \
            else starttls_reply.encode() + b"\r\n"
        self.starttls_transition = starttls_transition
        self.implicit_tls = implicit_tls
        self.stall_on = {v.upper() for v in stall_on}
        self.rcpt_reply, self.data_reply, self.auth_reply = rcpt_reply, data_reply, auth_reply
        self.hostname = hostname
        self.ctx = None
        if cert and key:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(cert, key)
        if implicit_tls and not self.ctx:
            raise ValueError("implicit_tls needs cert and key")
        if not self.ctx:
            # Without a certificate STARTTLS can only be answered, never carried out.
            self.starttls_transition = False
        self.lock = threading.Lock()
        self.records = []
        self.messages = []
        self.connections = 0
        self.tls_handshakes = 0
        self.tls_failures = []
        self.plaintext_after_starttls = []
        self.port = None
        self._stop = threading.Event()
        self._threads = []
        self._socks = []
        self._listener = None

    @classmethod
    def negotiation_case(cls, name, **kwargs):
        """One of NEGOTIATION_CASES ("O_1".."O_4")."""
        return cls(**{**NEGOTIATION_CASES[name], **kwargs})

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    # -- inspection

    def commands(self, tls=None):
        """The command lines received (without CRLF), optionally only those in the clear
        (tls=False) or under TLS (tls=True). AUTH continuation lines are included."""
        with self.lock:
            return [r["line"] for r in self.records if tls is None or r["tls"] == tls]

    def verbs(self, tls=None):
        return [line.split(" ", 1)[0].upper() for line in self.commands(tls)]

    def saw(self, verb, tls=None):
        return verb.upper() in self.verbs(tls)

    # -- life

    def start(self):
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port or 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        with self.lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(5)
        if self._listener:
            self._listener.close()
            self._listener = None
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

    cleanup = stop

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _accept_loop(self):
        conn_id = 0
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn_id += 1
            with self.lock:
                self.connections += 1
                self._socks.append(sock)
            t = threading.Thread(target=self._serve, args=(sock, conn_id), daemon=True)
            t.start()
            self._threads.append(t)

    # -- one connection

    def _record(self, conn, tls, line):
        with self.lock:
            self.records.append({"conn": conn, "tls": tls, "line": line})

    def _track(self, old, new):
        with self.lock:
            if old in self._socks:
                self._socks.remove(old)
            self._socks.append(new)

    def _handshake(self, sock, conn):
        try:
            tls_sock = self.ctx.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self.lock:
                self.tls_failures.append(str(e))
            return None
        with self.lock:
            self.tls_handshakes += 1
        self._track(sock, tls_sock)
        return tls_sock

    def _serve(self, sock, conn):
        sock.settimeout(60)
        try:
            self._session(sock, conn)
        except (OSError, ValueError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _session(self, sock, conn):
        if self.silent:
            self._stop.wait()
            return
        tls = False
        if self.implicit_tls:
            sock = self._handshake(sock, conn)
            if sock is None:
                return
            tls = True
        buf = b""

        def send(data):
            sock.sendall(data if isinstance(data, bytes) else data.encode() + b"\r\n")

        def readline():
            nonlocal buf
            while b"\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                buf += chunk
            line, buf = buf.split(b"\n", 1)
            return line.rstrip(b"\r").decode("utf-8", "replace")

        def read_data():
            """The DATA payload up to CRLF.CRLF, dot-unstuffed, bytes exact otherwise."""
            nonlocal buf
            while True:
                end = (b"\r\n" + buf).find(b"\r\n.\r\n")
                if end >= 0:
                    break
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                buf += chunk
            content, buf = buf[:end], buf[end + 3:]
            return b"\r\n".join(line[1:] if line.startswith(b".") else line
                                 for line in content.split(b"\r\n"))

        def read_exactly(n):
            nonlocal buf
            while len(buf) < n:
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                buf += chunk
            data, buf = buf[:n], buf[n:]
            return data

        chunks = []

        def stall():
            self._stop.wait()

        send(self.greeting)
        if not self.greeting.startswith("2") and self.hangup_after_greeting:
            return
        while True:
            line = readline()
            if line is None:
                return
            self._record(conn, tls, line)
            verb = line.split(" ", 1)[0].upper()
            if not self.greeting.startswith("2") and verb != "QUIT":
                send("503 5.5.1 Error: service not available")
                continue
            if verb in self.stall_on and verb != "DATA":
                return stall()
            if verb == "EHLO":
                keywords = [self.hostname] + (self.ehlo_tls if tls else self.ehlo)
                send("\r\n".join(("250-" if i + 1 < len(keywords) else "250 ") + k
                                 for i, k in enumerate(keywords)))
            elif verb == "HELO":
                send("250 " + self.hostname)
            elif verb == "STARTTLS":
                if tls:
                    send("503 5.5.1 Error: TLS already active")
                    continue
                send(self.starttls_reply)
                if self.starttls_transition and self.starttls_reply.startswith(b"220"):
                    if buf:
                        with self.lock:
                            self.plaintext_after_starttls.append(buf)
                        buf = b""
                    sock = self._handshake(sock, conn)
                    if sock is None:
                        return
                    tls = True
            elif verb == "AUTH":
                parts = line.split()
                if len(parts) >= 2 and parts[1].upper() == "LOGIN":
                    prompts = [] if len(parts) > 2 else [b"Username:"]
                    for prompt in prompts + [b"Password:"]:
                        send("334 " + base64.b64encode(prompt).decode())
                        answer = readline()
                        if answer is None:
                            return
                        self._record(conn, tls, answer)
                elif len(parts) == 2 and parts[1].upper() == "PLAIN":
                    send("334 ")
                    answer = readline()
                    if answer is None:
                        return
                    self._record(conn, tls, answer)
                send(self.auth_reply)
            elif verb == "MAIL":
                send("250 2.1.0 Ok")
            elif verb == "RCPT":
                send(self.rcpt_reply)
            elif verb == "DATA":
                send("354 End data with <CR><LF>.<CR><LF>")
                if "DATA" in self.stall_on:
                    return stall()
                payload = read_data()
                if payload is None:
                    return
                with self.lock:
                    self.messages.append(payload)
                if "." in self.stall_on:
                    return stall()
                send(self.data_reply)
            elif verb == "BDAT":
                m = re.fullmatch(r"BDAT (\d+)( LAST)?", line, re.I)
                if not m:
                    send("501 5.5.4 Syntax: BDAT size [LAST]")
                    continue
                chunk = read_exactly(int(m.group(1)))
                if chunk is None:
                    return
                chunks.append(chunk)
                if not m.group(2):
                    send("250 2.0.0 %d octets received" % len(chunk))
                    continue
                with self.lock:
                    self.messages.append(b"".join(chunks))
                chunks = []
                if "." in self.stall_on:
                    return stall()
                send(self.data_reply)
            elif verb in ("RSET", "NOOP"):
                chunks = []
                send("250 2.0.0 Ok")
            elif verb == "QUIT":
                send("221 2.0.0 Bye")
                return
            else:
                send("502 5.5.2 Error: command not recognized")


# --- postern's side: relay test cases -------------------------------------------------------

_LOGFMT_PAIR = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_LOGFMT_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.)")


def parse_logfmt(line):
    """One logfmt line as a dict; quoted values unescaped (\\" \\\\ \\xNN)."""
    out = {}
    for key, value in _LOGFMT_PAIR.findall(line):
        if value.startswith('"'):
            value = _LOGFMT_ESCAPE.sub(
                lambda m: chr(int(m.group(1)[1:], 16)) if len(m.group(1)) == 3 else m.group(1),
                value[1:-1])
        out[key] = value
    return out


def log_events(log_text, event=None):
    """The logfmt lines of postern's log (of one event), parsed; each also has "_line"."""
    out = []
    for line in log_text.splitlines():
        if "event=" not in line:
            continue
        fields = parse_logfmt(line)
        if event is None or fields.get("event") == event:
            fields["_line"] = line
            out.append(fields)
    return out


class RelayTestCase(unittest.TestCase):
    """postern in front of test upstreams: one PKI per class, and for each test the upstreams,
    the postern (delivery = "passthrough", route default -> upstream "smart") and a raw SMTP
    client, all stopped in cleanups even when the test fails."""

    UPSTREAM_DEFAULTS = {
        "tls": "starttls",
        "server_name": "localhost",
        "helo_name": "postern.test",
        "max_connections": 4,
        "connect_timeout": "3s",
        "greeting_timeout": "3s",
        "command_timeout": "5s",
        "data_init_timeout": "5s",
        "data_block_timeout": "5s",
        "data_done_timeout": "10s",
        "host_down_time": "30s",
    }

    @classmethod
    def setUpClass(cls):
        cls.pki_dir = tempfile.mkdtemp(prefix="postern-pki-")
        cls.pki = make_pki(cls.pki_dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki_dir, ignore_errors=True)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="postern-relay-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    # -- peers

    def upstream(self, **kwargs):
        """An AiosmtpdUpstream, started; leaf= picks the certificate (default: localhost)."""
        leaf = kwargs.pop("leaf", self.pki.localhost)
        if kwargs.get("tls", "none") != "none":
            kwargs.setdefault("cert", leaf.cert)
            kwargs.setdefault("key", leaf.key)
        up = AiosmtpdUpstream(**kwargs)
        self.addCleanup(up.cleanup)
        return up.start()

    def fake(self, **kwargs):
        kwargs.setdefault("cert", self.pki.localhost.cert)
        kwargs.setdefault("key", self.pki.localhost.key)
        f = FakeServer(**kwargs)
        self.addCleanup(f.stop)
        return f.start()

    def sink(self, **kwargs):
        s = SmtpSink(**kwargs)
        self.addCleanup(s.cleanup)
        return s.start()

    # -- postern

    def secret_file(self, text, name="secret"):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text + "\n")
        os.chmod(path, 0o600)
        return path

    def upstream_toml(self, name, keys):
        """[upstream.NAME] with UPSTREAM_DEFAULTS and ca_file = the test CA under `keys`; a key
        set to None is left out; password="x" becomes a password_file holding x."""
        merged = dict(self.UPSTREAM_DEFAULTS, ca_file=self.pki.ca_file)
        merged.update(keys)
        if "password" in keys and not keys.get("inline_password"):
            merged["password_file"] = self.secret_file(merged.pop("password"), "pw-" + name)
        merged.pop("inline_password", None)
        lines = [f"[upstream.{name}]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in merged.items() if v is not None]
        return "\n".join(lines) + "\n"

    def postern_config(self, upstream=None, upstreams=None, routes=None, listener=None,
                       extra_toml=""):
        upstreams = dict(upstreams or {})
        if upstream is not None:
            upstreams["smart"] = upstream
        listener = dict({"delivery": "passthrough"}, **(listener or {}))
        routes = routes or {"default": {"upstream": "smart"}}
        toml = "".join(self.upstream_toml(n, k) for n, k in upstreams.items()) + extra_toml
        return dict(listener=listener, routes=routes, extra_toml=toml)

    def postern(self, upstream=None, upstreams=None, routes=None, listener=None, extra_toml="",
                start=True):
        """A postern relaying through [upstream.smart] = upstream (keys over the defaults) and
        any further `upstreams` ({name: keys})."""
        p = Postern(**self.postern_config(upstream, upstreams, routes, listener, extra_toml))
        self.addCleanup(p.cleanup)
        return p.start() if start else p

    def check_config(self, **kwargs):
        """`postern check-config` on the configuration postern() would write:
        (returncode, stdout + stderr)."""
        p = Postern(**self.postern_config(**kwargs))
        self.addCleanup(shutil.rmtree, p.dir, True)
        out = subprocess.run([BINARY, "check-config", "--config", p.config_path],
                             capture_output=True, text=True, timeout=20,
                             stdin=subprocess.DEVNULL)
        return out.returncode, out.stdout + out.stderr

    # -- client

    def client(self, p, ehlo="client.test", timeout=15):
        c = p.connect(timeout=timeout)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        if ehlo:
            self.assertEqual(c.cmd("EHLO " + ehlo)[0], 250)
        return c

    def transaction(self, c, mail_from, rcpts, body, mail_params="", quit=True):
        """harness.smtp_transaction, then QUIT unless told not to."""
        out = smtp_transaction(c, mail_from, rcpts, body, mail_params)
        if quit:
            c.cmd("QUIT")
        return out

    def send(self, p, mail_from="app@example.org", rcpts=("someone@example.net",),
             body=b"Subject: relay test\r\n\r\nhello\r\n", mail_params=""):
        return self.transaction(self.client(p), mail_from, list(rcpts), body, mail_params)

    # -- postern's log

    def events(self, p, event):
        return log_events(p.log(), event)

    def wait_event(self, p, event, timeout=5, where=None):
        """Waits until postern logged `event` (and where(fields) holds); returns those lines."""
        def found():
            return [e for e in self.events(p, event) if where is None or where(e)]
        _wait(lambda: bool(found()), timeout)
        events = found()
        self.assertTrue(events, f"no event={event} in postern's log:\n{p.log()[-4000:]}")
        return events

    def assertTempFail(self, reply, enhanced="4.4.1"):
        code, text = reply
        self.assertEqual(code, 451, reply)
        self.assertTrue(text.startswith(enhanced), reply)
