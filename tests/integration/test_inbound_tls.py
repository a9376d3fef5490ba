"""Inbound TLS on listeners (issue 5, the TLS part): STARTTLS (RFC 3207) offered or required,
implicit TLS (RFC 8314), the STARTTLS command's errors, the plaintext injection of
CVE-2011-0411, the session reset after the handshake, the handshake timeout, old protocol
versions refused, min_tls_version and ciphers, the Received header of a message that came over
TLS, and the configuration checks of the listener's TLS keys.

One test PKI (upstreams.make_pki) for the whole module; one postern per test class. After every
test the server must still be up and greet a new client."""
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
import warnings

from harness import BINARY, QUEUED, Postern, SmtpConn, strip_received, wait_for
from upstreams import client_context, log_events, make_pki, port_listening

PKI = None
PKI_DIR = None


def setUpModule():
    global PKI, PKI_DIR
    PKI_DIR = tempfile.mkdtemp(prefix="postern-tls-pki-")
    PKI = make_pki(PKI_DIR)


def tearDownModule():
    shutil.rmtree(PKI_DIR, ignore_errors=True)


# The first lines of postern's Received header for a message that came over TLS (the cipher
# depends on the OpenSSL versions of both ends).
RECEIVED_TLS = re.compile(
    rb"^Received: from (?P<helo>\S+) \(\[127\.0\.0\.1\]\)\r\n"
    rb"\t\(using (?P<version>TLSv1\.[23]) with cipher (?P<cipher>[A-Za-z0-9_-]+) "
    rb"\((?P<bits>\d+)/(?P<alg_bits>\d+) bits\)\)\r\n"
    rb"\tby postern\.test \(postern\) with (?P<protocol>[A-Z0-9]+) id (?P<id>[0-9A-Z]{14})")

SWAKS_QUEUED = re.compile(r"<[-~]  250 2\.0\.0 Ok: queued as (\S+)")

ISSUE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<rest>.*)$")


class TlsConn(SmtpConn):
    """SmtpConn over an already connected socket (a TLS one)."""

    def __init__(self, sock):  # noqa: D107 - no super(): the socket exists already
        self.sock = sock
        self.buf = b""


def old_context(maximum):
    """A client context that really offers TLS versions up to `maximum` (TLS 1.0/1.1 need the
    security level 0 of OpenSSL 3 to be offered at all); no certificate verification."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = maximum
    return ctx


def recv_until_closed(sock, timeout):
    """Reads until the peer closes: (closed, data received, seconds waited)."""
    start = time.time()
    data = b""
    sock.settimeout(0.2)
    while time.time() - start < timeout:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return True, data, time.time() - start
        if not chunk:
            return True, data, time.time() - start
        data += chunk
    return False, data, time.time() - start


class TlsTestCase(unittest.TestCase):
    """One postern per class with TLS = the listener's tls mode and LISTENER over the keys;
    the listener has the localhost certificate of the test PKI and a 1 s handshake timeout."""
    TLS = "starttls"
    LISTENER = {}

    @classmethod
    def setUpClass(cls):
        listener = {"max_connections_per_ip": 200}
        if cls.TLS != "none":
            listener.update({"tls": cls.TLS, "certificate": PKI.localhost.cert,
                             "private_key": PKI.localhost.key, "tls_handshake_timeout": "1s"})
        listener.update(cls.LISTENER)
        cls.postern = Postern(listener=listener).start()

    @classmethod
    def tearDownClass(cls):
        cls.postern.cleanup()

    def tearDown(self):
        self.assert_alive()

    # -- clients

    def ctx(self):
        """Verifies the server against the test CA (the certificate is for localhost)."""
        return client_context(PKI.ca_file)

    def raw_socket(self):
        s = socket.create_connection(("127.0.0.1", self.postern.port), timeout=10)
        self.addCleanup(s.close)
        return s

    def plain(self, ehlo="client.test"):
        """A plaintext client, greeted (and EHLO sent when ehlo)."""
        c = self.postern.connect()
        self.addCleanup(c.close)
        code, _, _ = c.reply()
        self.assertEqual(code, 220)
        if ehlo:
            self.assertEqual(c.cmd("EHLO " + ehlo)[0], 250)
        return c

    def starttls(self, c, ctx=None):
        """STARTTLS on a plaintext client, then the handshake: c now talks TLS."""
        code, text, _ = c.cmd("STARTTLS")
        self.assertEqual((code, text), (220, "2.0.0 Ready to start TLS"))
        self.assertEqual(c.buf, b"", "postern sent more than the 220")
        c.sock = (ctx or self.ctx()).wrap_socket(c.sock, server_hostname="localhost")
        return c

    def implicit(self, ctx=None, ehlo="client.test"):
        """A client of an implicit TLS listener, greeted inside TLS."""
        s = self.raw_socket()
        t = (ctx or self.ctx()).wrap_socket(s, server_hostname="localhost")
        c = TlsConn(t)
        self.addCleanup(c.close)
        code, text, _ = c.reply()
        self.assertEqual(code, 220, text)
        if ehlo:
            self.assertEqual(c.cmd("EHLO " + ehlo)[0], 250)
        return c

    def tls_client(self, ehlo="client.test"):
        """A client with TLS up and EHLO sent inside it, whatever the listener's mode."""
        if self.TLS == "implicit":
            return self.implicit(ehlo=ehlo)
        c = self.starttls(self.plain())
        if ehlo:
            self.assertEqual(c.cmd("EHLO " + ehlo)[0], 250)
        return c

    def assert_alive(self):
        self.assertIsNone(self.postern.proc.poll(), "postern exited:\n" + self.postern.log())
        if self.TLS == "implicit":
            c = self.implicit(ehlo=None)
        else:
            c = self.plain(ehlo=None)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        c.close()

    def send_message(self, c, mail_from="app@example.org", rcpt="someone@example.net",
                     body=b"Subject: tls test\r\n\r\nhello\r\n", params=""):
        """One transaction; returns the queue id."""
        code, text, _ = c.cmd(f"MAIL FROM:<{mail_from}>" + (" " + params if params else ""))
        self.assertEqual(code, 250, text)
        self.assertEqual(c.cmd(f"RCPT TO:<{rcpt}>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(body.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        code, text, _ = c.reply()
        self.assertEqual(code, 250, text)
        m = QUEUED.match(text)
        self.assertIsNotNone(m, text)
        return m.group(1)

    # -- postern's log

    def conn_id(self, sock):
        """postern's conn=N of the connection whose client end is `sock`."""
        port = str(sock.getsockname()[1])
        found = []

        def look():
            found[:] = [e["conn"] for e in log_events(self.postern.log(), "connect")
                        if e.get("port") == port]
            return bool(found)

        self.assertTrue(wait_for(look), "no connect event for client port " + port)
        return found[-1]

    def events(self, event, conn=None):
        return [e for e in log_events(self.postern.log(), event)
                if conn is None or e.get("conn") == conn]

    def wait_event(self, event, conn=None, timeout=5):
        wait_for(lambda: bool(self.events(event, conn)), timeout)
        found = self.events(event, conn)
        self.assertTrue(found, f"no event={event} conn={conn} in postern's log:\n"
                               + self.postern.log()[-4000:])
        return found

    # -- the stored message

    def assert_tls_received(self, qid, helo="client.test", protocol="ESMTPS", sock=None):
        """The message's Received header says TLS (and the version/cipher of `sock`)."""
        eml, env = self.postern.messages()[qid]
        m = RECEIVED_TLS.match(eml)
        self.assertIsNotNone(m, eml[:300])
        self.assertEqual(m.group("helo"), helo.encode())
        self.assertEqual(m.group("protocol"), protocol.encode())
        self.assertEqual(m.group("id"), qid.encode())
        self.assertEqual(env["protocol"], protocol)
        self.assertEqual(env["helo"], helo)
        if sock is not None:
            name, version, bits = sock.cipher()
            self.assertEqual(m.group("version"), version.encode())
            self.assertEqual(m.group("cipher"), name.encode())
            self.assertEqual(int(m.group("bits")), bits)
        return eml, env, m


# --- tls = "starttls" -------------------------------------------------------------------------

class StarttlsListenerTest(TlsTestCase):
    TLS = "starttls"

    def test_swaks_starttls_delivers(self):
        out = subprocess.run(["swaks", "--server", f"127.0.0.1:{self.postern.port}",
                              "--ehlo", "swaks.test", "--to", "someone@example.net",
                              "--from", "app@example.org", "--header", "Subject: swaks tls",
                              "--tls"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("TLS started", out.stdout)
        m = SWAKS_QUEUED.search(out.stdout)
        self.assertIsNotNone(m, out.stdout)
        eml, env, _ = self.assert_tls_received(m.group(1), helo="swaks.test")
        self.assertEqual(env["mail_from"], "app@example.org")
        self.assertIn(b"Subject: swaks tls\r\n", eml)

    def test_ehlo_lists_starttls_only_before_tls(self):
        c = self.postern.connect()
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        code, _, lines = c.cmd("EHLO client.test")
        self.assertEqual(code, 250)
        self.assertIn("STARTTLS", [line[4:] for line in lines])
        self.starttls(c)
        code, _, lines = c.cmd("EHLO client.test")
        self.assertEqual(code, 250)
        self.assertEqual(lines[0], "250-postern.test")
        self.assertNotIn("STARTTLS", [line[4:] for line in lines])
        self.assertIn("PIPELINING", [line[4:] for line in lines])

    def test_tls_event_logged(self):
        c = self.tls_client()
        conn = self.conn_id(c.sock)
        name, version, _ = c.sock.cipher()
        ev = self.wait_event("tls", conn)[0]
        self.assertEqual(ev["client"], "127.0.0.1")
        self.assertEqual(ev["version"], version)
        self.assertEqual(ev["cipher"], name)
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))

    def test_message_over_starttls_has_esmtps_received_header(self):
        c = self.tls_client()
        body = b"Subject: over tls\r\n\r\nline\r\n.dot\r\n"
        qid = self.send_message(c, body=body)
        eml, env, m = self.assert_tls_received(qid, sock=c.sock)
        self.assertEqual(strip_received(eml), body)
        # The by-line follows the (using ...) line; the for-clause and date after it.
        header = eml[:eml.index(b"\r\n\r\n")].split(b"\r\n")
        self.assertTrue(header[1].startswith(b"\t(using "), header)
        self.assertEqual(header[2], b"\tby postern.test (postern) with ESMTPS id " +
                         qid.encode())
        self.assertTrue(header[3].startswith(b"\tfor <someone@example.net>; "), header)

    def test_smtputf8_over_tls_is_utf8smtps(self):
        c = self.tls_client()
        qid = self.send_message(c, mail_from="s@example.org", params="SMTPUTF8")
        self.assert_tls_received(qid, protocol="UTF8SMTPS", sock=c.sock)

    def test_plaintext_message_has_no_tls_in_received_header(self):
        c = self.plain()
        qid = self.send_message(c)
        eml, env = self.postern.messages()[qid]
        header = eml[:eml.index(b"\r\n\r\n")]
        self.assertNotIn(b"(using", header)
        self.assertEqual(header.split(b"\r\n")[1],
                         b"\tby postern.test (postern) with ESMTP id " + qid.encode())
        self.assertEqual(env["protocol"], "ESMTP")

    def test_large_message_over_tls_is_stored_exactly(self):
        # Several TLS records per read: 2 MB of body.
        line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"
        body = b"Subject: big\r\n\r\n" + line * (2 * 1024 * 1024 // len(line))
        c = self.tls_client()
        qid = self.send_message(c, body=body)
        eml, _, _ = self.assert_tls_received(qid, sock=c.sock)
        self.assertEqual(strip_received(eml), body)

    # -- the STARTTLS command's errors

    def test_starttls_before_ehlo(self):
        c = self.plain(ehlo=None)
        code, text, _ = c.cmd("STARTTLS")
        self.assertEqual(code, 503)
        # Without EHLO no enhanced status code (RFC 2034: only once ENHANCEDSTATUSCODES was
        # advertised), as for MAIL before EHLO (test_sequence).
        self.assertEqual(text, "Error: send EHLO or HELO first")
        # Still plaintext and usable.
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        self.starttls(c)
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)

    def test_starttls_with_argument(self):
        c = self.plain()
        code, text, _ = c.cmd("STARTTLS now")
        self.assertEqual(code, 501)
        self.assertTrue(text.startswith("5.5.4 "), text)
        self.assertEqual(c.cmd("NOOP")[0], 250)

    def test_starttls_inside_transaction(self):
        c = self.plain()
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        code, text, _ = c.cmd("STARTTLS")
        self.assertEqual(code, 503)
        self.assertEqual(text, "5.5.1 Error: MAIL transaction in progress")
        # After RSET it is allowed; the transaction does not survive the handshake.
        self.assertEqual(c.cmd("RSET")[0], 250)
        self.starttls(c)
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.net>")[0], 503)

    def test_second_starttls_refused(self):
        c = self.tls_client()
        code, text, _ = c.cmd("STARTTLS")
        self.assertEqual(code, 503)
        self.assertEqual(text, "5.5.1 Error: TLS already active")
        self.assertEqual(c.cmd("NOOP")[0], 250)

    def test_starttls_after_a_message(self):
        c = self.plain()
        self.send_message(c)
        self.starttls(c)
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        qid = self.send_message(c)
        self.assert_tls_received(qid, sock=c.sock)

    def test_commands_before_starttls_in_one_write_are_run(self):
        c = self.plain()
        c.send(b"NOOP\r\nSTARTTLS\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[:2], (220, "2.0.0 Ready to start TLS"))
        self.assertEqual(c.buf, b"")
        c.sock = self.ctx().wrap_socket(c.sock, server_hostname="localhost")
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)

    # -- the session after the handshake

    def test_session_is_reset_after_handshake(self):
        c = self.plain(ehlo="before.test")
        self.starttls(c)
        code, text, _ = c.cmd("MAIL FROM:<a@example.org>")
        self.assertEqual(code, 503, "MAIL accepted after STARTTLS without a new EHLO")
        # The EHLO before TLS no longer counts: not even for enhanced status codes.
        self.assertEqual(text, "Error: send EHLO or HELO first")
        self.assertEqual(c.cmd("EHLO after.test")[0], 250)
        qid = self.send_message(c)
        self.assert_tls_received(qid, helo="after.test", sock=c.sock)

    # -- CVE-2011-0411: plaintext pipelined after STARTTLS

    def injected(self, extra):
        """Sends STARTTLS and `extra` in one plaintext write, then the handshake; returns the
        client inside TLS and postern's conn id."""
        c = self.plain()
        conn = self.conn_id(c.sock)
        c.send(b"STARTTLS\r\n" + extra)
        self.assertEqual(c.reply()[:2], (220, "2.0.0 Ready to start TLS"))
        self.assertEqual(c.buf, b"", "a reply to the injected command came before TLS")
        c.sock = self.ctx().wrap_socket(c.sock, server_hostname="localhost")
        return c, conn

    def assert_first_tls_reply_is_ehlo(self, c):
        code, _, lines = c.cmd("EHLO client.test")
        self.assertEqual(code, 250)
        self.assertEqual(lines[0], "250-postern.test",
                         f"the first reply inside TLS is not EHLO's: {lines}")
        self.assertNotIn("STARTTLS", [line[4:] for line in lines])
        # Nothing else queued behind it.
        code, text, _ = c.cmd("NOOP")
        self.assertEqual((code, text), (250, "2.0.0 Ok"))
        self.assertEqual(c.buf, b"")

    def test_injected_rset_is_discarded(self):
        extra = b"RSET\r\n"
        c, conn = self.injected(extra)
        self.assert_first_tls_reply_is_ehlo(c)
        ev = self.wait_event("starttls_injection", conn)
        self.assertEqual(ev[0]["discarded_octets"], str(len(extra)))

    def test_injected_mail_is_discarded(self):
        extra = b"MAIL FROM:<x@example.org>\r\n"
        c, conn = self.injected(extra)
        self.assert_first_tls_reply_is_ehlo(c)
        code, text, _ = c.cmd("MAIL FROM:<y@example.org>")
        self.assertEqual(code, 250, f"the injected MAIL ran inside TLS: {code} {text}")
        self.assertEqual(c.cmd("RCPT TO:<z@example.net>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        code, text, _ = c.cmd("Subject: i\r\n\r\nx\r\n.")
        qid = QUEUED.match(text).group(1)
        _, env = self.postern.messages()[qid]
        self.assertEqual(env["mail_from"], "y@example.org")
        ev = self.wait_event("starttls_injection", conn)
        self.assertEqual(ev[0]["discarded_octets"], str(len(extra)))
        self.assertEqual(ev[0]["level"], "warn")

    def test_injected_full_transaction_is_discarded(self):
        extra = (b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
                 b"Subject: injected\r\n\r\nx\r\n.\r\n")
        before = set(self.postern.messages())
        c, conn = self.injected(extra)
        self.assert_first_tls_reply_is_ehlo(c)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.wait_event("disconnect", conn)
        new = [env for qid, (_, env) in self.postern.messages().items() if qid not in before]
        self.assertFalse([e for e in new if e["mail_from"] == "evil@example.org"], new)
        ev = self.wait_event("starttls_injection", conn)
        self.assertEqual(ev[0]["discarded_octets"], str(len(extra)))

    # -- the handshake

    def test_handshake_timeout(self):
        c = self.plain()
        conn = self.conn_id(c.sock)
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        closed, data, waited = recv_until_closed(c.sock, 5)
        self.assertTrue(closed, "still open 5 s after STARTTLS (tls_handshake_timeout = 1s)")
        self.assertGreaterEqual(waited, 0.8)
        self.assertEqual(data, b"")
        ev = self.wait_event("tls_failed", conn)[0]
        self.assertEqual(ev["reason"], "handshake timeout")
        self.assertEqual(self.wait_event("disconnect", conn)[0]["reason"],
                         "TLS handshake failed")
        self.assertFalse(self.events("tls", conn))

    def test_late_handshake_gets_no_session(self):
        c = self.plain()
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        time.sleep(1.6)  # past tls_handshake_timeout
        try:
            t = self.ctx().wrap_socket(c.sock, server_hostname="localhost")
            c.sock = t
            t.settimeout(3)
            data = t.recv(1000)
        except (ssl.SSLError, OSError):
            data = b""
        self.assertEqual(data, b"", "a TLS session after tls_handshake_timeout had passed")

    def test_garbage_instead_of_handshake(self):
        c = self.plain()
        conn = self.conn_id(c.sock)
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        c.send(b"EHLO not-tls.test\r\n")
        closed, data, _ = recv_until_closed(c.sock, 5)
        self.assertTrue(closed)
        self.assertNotIn(b"250", data)
        self.assertTrue(self.wait_event("tls_failed", conn)[0]["reason"])
        self.assertFalse(self.events("tls", conn))

    def test_old_tls_versions_refused(self):
        for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            with self.subTest(version=version.name):
                c = self.plain()
                conn = self.conn_id(c.sock)
                self.starttls_refused(c, conn, old_context(version))
        # Control: the same kind of client allowed up to TLS 1.2 gets a session.
        c = self.plain()
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        t = old_context(ssl.TLSVersion.TLSv1_2).wrap_socket(c.sock)
        c.sock = t
        self.assertEqual(t.version(), "TLSv1.2")
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)

    def starttls_refused(self, c, conn, ctx):
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        with self.assertRaises(ssl.SSLError) as caught:
            ctx.wrap_socket(c.sock)
        if "NO_PROTOCOLS_AVAILABLE" in str(caught.exception):
            # The local OpenSSL cannot offer this version at all: nothing reached postern;
            # it has no session at least.
            self.assertFalse(self.events("tls", conn))
            return
        self.wait_event("tls_failed", conn)
        self.assertFalse(self.events("tls", conn))


# --- tls = "starttls_required" ----------------------------------------------------------------

class StarttlsRequiredTest(TlsTestCase):
    TLS = "starttls_required"

    def test_mail_before_starttls_refused(self):
        c = self.plain()
        code, text, _ = c.cmd("MAIL FROM:<a@example.org>")
        self.assertEqual(code, 530)
        self.assertEqual(text, "5.7.0 Must issue a STARTTLS command first")
        # The session goes on: NOOP, RCPT is out of sequence, then STARTTLS and mail.
        self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.net>")[0], 503)
        self.starttls(c)
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        qid = self.send_message(c)
        self.assert_tls_received(qid, sock=c.sock)

    def test_ehlo_lists_starttls(self):
        c = self.postern.connect()
        self.addCleanup(c.close)
        c.reply()
        code, _, lines = c.cmd("EHLO client.test")
        self.assertIn("STARTTLS", [line[4:] for line in lines])

    def test_smtplib_starttls_delivers(self):
        with smtplib.SMTP("127.0.0.1", self.postern.port, timeout=10) as s:
            s.ehlo("client.test")
            self.assertTrue(s.has_extn("starttls"))
            code, _ = s.starttls(context=self.ctx())
            self.assertEqual(code, 220)
            s.ehlo("client.test")
            self.assertFalse(s.has_extn("starttls"))
            refused = s.sendmail("app@example.org", ["x@example.net"],
                                 b"Subject: smtplib starttls\r\n\r\nhello\r\n")
            self.assertEqual(refused, {})
            cipher = s.sock.cipher()
        found = [qid for qid, (eml, env) in self.postern.messages().items()
                 if b"Subject: smtplib starttls" in eml]
        self.assertEqual(len(found), 1)
        eml, _, m = self.assert_tls_received(found[0])
        self.assertEqual(m.group("cipher"), cipher[0].encode())

    def test_smtplib_without_starttls_refused(self):
        with smtplib.SMTP("127.0.0.1", self.postern.port, timeout=10) as s:
            s.ehlo("client.test")
            with self.assertRaises(smtplib.SMTPSenderRefused) as caught:
                s.sendmail("app@example.org", ["x@example.net"], b"Subject: no\r\n\r\nx\r\n")
            self.assertEqual(caught.exception.smtp_code, 530)

    def test_swaks_tls_delivers_and_plain_is_refused(self):
        base = ["swaks", "--server", f"127.0.0.1:{self.postern.port}", "--ehlo", "swaks.test",
                "--to", "someone@example.net", "--from", "app@example.org"]
        out = subprocess.run(base + ["--header", "Subject: swaks required", "--tls"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        m = SWAKS_QUEUED.search(out.stdout)
        self.assertIsNotNone(m, out.stdout)
        self.assert_tls_received(m.group(1), helo="swaks.test")
        out = subprocess.run(base, capture_output=True, text=True, timeout=30)
        self.assertNotEqual(out.returncode, 0, out.stdout)
        self.assertIn("530 5.7.0 Must issue a STARTTLS command first", out.stdout)


# --- tls = "implicit" -------------------------------------------------------------------------

class ImplicitListenerTest(TlsTestCase):
    TLS = "implicit"

    def test_smtp_ssl_delivers(self):
        with smtplib.SMTP_SSL("127.0.0.1", self.postern.port, timeout=10,
                              context=self.ctx()) as s:
            code, _ = s.ehlo("client.test")
            self.assertEqual(code, 250)
            self.assertFalse(s.has_extn("starttls"))
            refused = s.sendmail("app@example.org", ["x@example.net"],
                                 b"Subject: smtp_ssl\r\n\r\nhello\r\n")
            self.assertEqual(refused, {})
            cipher = s.sock.cipher()
        found = [qid for qid, (eml, env) in self.postern.messages().items()
                 if b"Subject: smtp_ssl" in eml]
        self.assertEqual(len(found), 1)
        _, _, m = self.assert_tls_received(found[0])
        self.assertEqual(m.group("cipher"), cipher[0].encode())

    def test_swaks_tlsc_delivers(self):
        out = subprocess.run(["swaks", "--server", f"127.0.0.1:{self.postern.port}",
                              "--ehlo", "swaks.test", "--to", "someone@example.net",
                              "--from", "app@example.org", "--header", "Subject: swaks tlsc",
                              "--tlsc"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        m = SWAKS_QUEUED.search(out.stdout)
        self.assertIsNotNone(m, out.stdout)
        eml, _, _ = self.assert_tls_received(m.group(1), helo="swaks.test")
        self.assertIn(b"Subject: swaks tlsc\r\n", eml)

    def test_greeting_comes_inside_tls(self):
        s = self.raw_socket()
        conn = self.conn_id(s)
        t = self.ctx().wrap_socket(s, server_hostname="localhost")
        c = TlsConn(t)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[:2], (220, "postern.test ESMTP postern"))
        ev = self.wait_event("tls", conn)[0]
        self.assertEqual(ev["version"], t.version())
        self.assertEqual(ev["cipher"], t.cipher()[0])
        code, _, lines = c.cmd("EHLO client.test")
        self.assertEqual(code, 250)
        self.assertNotIn("STARTTLS", [line[4:] for line in lines])
        code, text, _ = c.cmd("STARTTLS")
        self.assertEqual((code, text), (503, "5.5.1 Error: TLS already active"))
        self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_plaintext_client_gets_no_greeting(self):
        s = self.raw_socket()
        conn = self.conn_id(s)
        s.sendall(b"EHLO plain.test\r\n")
        closed, data, _ = recv_until_closed(s, 5)
        self.assertTrue(closed)
        self.assertNotIn(b"220", data)
        self.assertNotIn(b"250", data)
        self.wait_event("tls_failed", conn)
        self.assertFalse(self.events("tls", conn))

    def test_failed_handshake_ends_the_session(self):
        # As on a STARTTLS listener: the session ends right after tls_failed, with that reason
        # (no greeting is attempted on the failed TLS stream).
        s = self.raw_socket()
        conn = self.conn_id(s)
        s.sendall(b"EHLO plain.test\r\n")
        self.assertTrue(recv_until_closed(s, 5)[0])
        self.wait_event("tls_failed", conn)
        self.assertEqual(self.wait_event("disconnect", conn)[0]["reason"],
                         "TLS handshake failed")

    def test_handshake_timeout(self):
        s = self.raw_socket()
        conn = self.conn_id(s)
        closed, data, waited = recv_until_closed(s, 4)
        ev = self.wait_event("tls_failed", conn)[0]
        self.assertEqual(ev["reason"], "handshake timeout")
        self.assertTrue(closed, "a silent client of the implicit listener is still connected "
                                "%.1f s after connecting (tls_handshake_timeout = 1s)" % waited)
        self.assertGreaterEqual(waited, 0.8)
        self.assertEqual(self.wait_event("disconnect", conn)[0]["reason"],
                         "TLS handshake failed")

    def test_late_handshake_gets_no_session(self):
        s = self.raw_socket()
        conn = self.conn_id(s)
        time.sleep(1.6)  # past tls_handshake_timeout
        try:
            t = self.ctx().wrap_socket(s, server_hostname="localhost")
            self.addCleanup(t.close)
            t.settimeout(3)
            data = t.recv(1000)
        except (ssl.SSLError, OSError):
            data = b""
        self.assertEqual(data, b"", "a handshake completed and the greeting %r came after "
                                    "tls_failed reason=\"handshake timeout\" was logged: %s" % (
                                        data, [e["_line"] for e in
                                               self.events("tls_failed", conn)]))

    def test_old_tls_versions_refused(self):
        for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            with self.subTest(version=version.name):
                s = self.raw_socket()
                conn = self.conn_id(s)
                with self.assertRaises(ssl.SSLError) as caught:
                    old_context(version).wrap_socket(s)
                if "NO_PROTOCOLS_AVAILABLE" in str(caught.exception):
                    self.assertFalse(self.events("tls", conn))  # see starttls_refused
                    continue
                self.wait_event("tls_failed", conn)
                self.assertFalse(self.events("tls", conn))
        t = old_context(ssl.TLSVersion.TLSv1_2).wrap_socket(self.raw_socket())
        self.addCleanup(t.close)
        self.assertEqual(t.version(), "TLSv1.2")
        self.assertEqual(TlsConn(t).reply()[0], 220)

    def test_concurrent_tls_clients(self):
        before = len(self.postern.messages())
        errors = []

        def send(i):
            try:
                with smtplib.SMTP_SSL("127.0.0.1", self.postern.port, timeout=30,
                                      context=self.ctx()) as s:
                    s.sendmail(f"c{i}@example.org", [f"r{i}@example.net"],
                               f"Subject: concurrent {i}\r\n\r\nx\r\n")
            except Exception as e:  # noqa: BLE001 - collected and reported below
                errors.append((i, repr(e)))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        msgs = self.postern.messages()
        self.assertEqual(len(msgs) - before, 30)
        self.assertTrue(all(env["protocol"] == "ESMTPS" for _, env in msgs.values()))


# --- tls = "none" -----------------------------------------------------------------------------

class PlainListenerTest(TlsTestCase):
    TLS = "none"

    def test_no_starttls_offered(self):
        c = self.postern.connect()
        self.addCleanup(c.close)
        c.reply()
        code, _, lines = c.cmd("EHLO client.test")
        self.assertEqual(code, 250)
        self.assertNotIn("STARTTLS", [line[4:] for line in lines])
        code, text, _ = c.cmd("STARTTLS")
        self.assertEqual(code, 502)
        self.assertTrue(text.startswith("5.5.1 "), text)
        # Still plaintext, still working.
        qid = self.send_message(c)
        self.assertEqual(self.postern.messages()[qid][1]["protocol"], "ESMTP")


# --- min_tls_version and ciphers --------------------------------------------------------------

class MinTls13Test(TlsTestCase):
    TLS = "starttls"
    LISTENER = {"min_tls_version": "1.3"}

    def test_tls12_client_refused(self):
        c = self.plain()
        conn = self.conn_id(c.sock)
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        ctx = self.ctx()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with self.assertRaises(ssl.SSLError):
            ctx.wrap_socket(c.sock, server_hostname="localhost")
        self.wait_event("tls_failed", conn)
        self.assertFalse(self.events("tls", conn))

    def test_tls13_client_accepted(self):
        c = self.tls_client()
        self.assertEqual(c.sock.version(), "TLSv1.3")
        conn = self.conn_id(c.sock)
        self.assertEqual(self.wait_event("tls", conn)[0]["version"], "TLSv1.3")
        qid = self.send_message(c)
        _, _, m = self.assert_tls_received(qid, sock=c.sock)
        self.assertEqual(m.group("version"), b"TLSv1.3")


class CiphersTest(TlsTestCase):
    TLS = "implicit"
    LISTENER = {"ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305"}

    def tls12(self, ciphers=None):
        ctx = self.ctx()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if ciphers:
            ctx.set_ciphers(ciphers)
        return ctx

    def test_tls12_uses_the_configured_ciphers(self):
        c = self.implicit(ctx=self.tls12())
        # The server's order wins (SSL_OP_CIPHER_SERVER_PREFERENCE).
        self.assertEqual(c.sock.cipher()[0], "ECDHE-ECDSA-AES128-GCM-SHA256")
        qid = self.send_message(c)
        eml, _, m = self.assert_tls_received(qid, sock=c.sock)
        self.assertIn(b"\t(using TLSv1.2 with cipher ECDHE-ECDSA-AES128-GCM-SHA256 "
                      b"(128/128 bits))\r\n", eml)

    def test_tls12_client_without_a_shared_cipher_refused(self):
        s = self.raw_socket()
        conn = self.conn_id(s)
        with self.assertRaises(ssl.SSLError):
            self.tls12("ECDHE-ECDSA-AES256-GCM-SHA384").wrap_socket(
                s, server_hostname="localhost")
        self.wait_event("tls_failed", conn)

    def test_tls13_not_affected(self):
        c = self.implicit()
        self.assertEqual(c.sock.version(), "TLSv1.3")


# --- configuration ----------------------------------------------------------------------------

class TlsConfigTest(unittest.TestCase):

    def config(self, listener):
        p = Postern(listener=listener)
        self.addCleanup(shutil.rmtree, p.dir, True)
        return p

    def check(self, listener):
        p = self.config(listener)
        out = subprocess.run([BINARY, "check-config", "--config", p.config_path],
                             capture_output=True, text=True, timeout=20,
                             stdin=subprocess.DEVNULL)
        issues = []
        for line in out.stderr.splitlines():
            m = ISSUE.match(line)
            if m and m.group("file") == p.config_path:
                issues.append((int(m.group("line")), m.group("rest")))
        return out, issues, p

    def line_of(self, p, key):
        with open(p.config_path) as f:
            for n, line in enumerate(f, 1):
                if line.startswith(key + " ="):
                    return n
        raise AssertionError(key)

    def assert_error(self, listener, key, *fragments):
        """check-config exits 1 with one error, on `key`'s line, holding every fragment."""
        out, issues, p = self.check(listener)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertEqual(out.stdout, "")
        errors = [(n, rest) for n, rest in issues if not rest.startswith("warning:")]
        self.assertEqual(len(errors), 1, out.stderr)
        n, rest = errors[0]
        self.assertEqual(n, self.line_of(p, key), out.stderr)
        for fragment in fragments:
            self.assertIn(fragment, rest)
        self.assertTrue(out.stderr.endswith(f"{p.config_path}: configuration has errors\n"))
        return rest

    def tls(self, **keys):
        listener = {"tls": "starttls", "certificate": PKI.localhost.cert,
                    "private_key": PKI.localhost.key}
        listener.update(keys)
        return {k: v for k, v in listener.items() if v is not None}

    def test_good_tls_listener(self):
        for mode in ("starttls", "starttls_required", "implicit"):
            with self.subTest(mode=mode):
                out, issues, _ = self.check(self.tls(tls=mode, min_tls_version="1.3",
                                                     ciphers="ECDHE-ECDSA-AES128-GCM-SHA256",
                                                     tls_handshake_timeout="10s"))
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertEqual(issues, [])
                self.assertTrue(out.stdout.endswith("ok (1 listener, 1 route, 2 threads)\n"),
                                out.stdout)

    def test_missing_private_key(self):
        rest = self.assert_error(self.tls(private_key=None), "tls",
                                 "tls needs certificate and private_key (PEM files)")
        self.assertTrue(rest.startswith("listener[0].private_key: "), rest)

    def test_missing_certificate(self):
        rest = self.assert_error(self.tls(tls="implicit", certificate=None), "tls",
                                 "tls needs certificate and private_key (PEM files)")
        self.assertTrue(rest.startswith("listener[0].certificate: "), rest)

    def test_private_key_file_absent(self):
        path = os.path.join(PKI_DIR, "absent.key")
        self.assert_error(self.tls(private_key=path), "private_key",
                          f'cannot read the private key "{path}": No such file or directory')

    def test_certificate_file_absent_or_not_a_certificate(self):
        path = os.path.join(PKI_DIR, "absent.pem")
        self.assert_error(self.tls(certificate=path), "certificate",
                          f'cannot read the certificate "{path}": No such file or directory')
        self.assert_error(self.tls(certificate=PKI.localhost.key), "certificate",
                          f'cannot load the certificate "{PKI.localhost.key}"')

    def test_key_of_another_certificate(self):
        for other in (PKI.expired.key, PKI.wrong_name.key):
            with self.subTest(key=os.path.basename(other)):
                self.assert_error(self.tls(private_key=other), "private_key",
                                  f'"{other}"', "does not belong to the certificate",
                                  f'"{PKI.localhost.cert}"')

    def test_bad_cipher_list(self):
        self.assert_error(self.tls(ciphers="NOT-A-CIPHER"), "ciphers",
                          'no usable cipher in "NOT-A-CIPHER"')

    def test_bad_min_tls_version(self):
        for value in ("1.1", "1.0", "TLSv1.3"):
            with self.subTest(value=value):
                self.assert_error(self.tls(min_tls_version=value), "min_tls_version",
                                  f'"{value}" is not one of 1.2 | 1.3')

    def test_bad_tls_mode(self):
        self.assert_error(self.tls(tls="yes"), "tls",
                          '"yes" is not one of none | starttls | starttls_required | implicit')

    def test_tls_keys_on_a_plain_listener_warn(self):
        keys = {"certificate": PKI.localhost.cert, "private_key": PKI.localhost.key,
                "min_tls_version": "1.3", "ciphers": "HIGH",
                "tls_handshake_timeout": "5s"}
        for mode in (None, "none"):
            with self.subTest(tls=mode):
                listener = dict(keys, **({"tls": mode} if mode else {}))
                out, issues, p = self.check(listener)
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertTrue(out.stdout.endswith("ok (1 listener, 1 route, 2 threads)\n"))
                self.assertEqual(sorted(n for n, _ in issues),
                                 sorted(self.line_of(p, k) for k in keys), out.stderr)
                for _, rest in issues:
                    self.assertTrue(rest.startswith("warning: listener[0]."), rest)
                    self.assertIn("not used: the listener has no tls", rest)

    def test_serve_refuses_a_bad_tls_listener(self):
        p = self.config(self.tls(private_key=PKI.expired.key))
        out = subprocess.run([BINARY, "serve", "--config", p.config_path],
                             capture_output=True, text=True, timeout=20,
                             stdin=subprocess.DEVNULL)
        self.assertNotEqual(out.returncode, 0, out.stdout + out.stderr)
        text = out.stdout + out.stderr
        self.assertIn("does not belong to the certificate", text)
        self.assertIn(PKI.expired.key, text)
        self.assertFalse(port_listening(p.port))


if __name__ == "__main__":
    unittest.main()
