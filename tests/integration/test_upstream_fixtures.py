"""The upstream fixtures themselves (upstreams.py), checked with smtplib, swaks and raw sockets
before postern is pointed at them: the test PKI, the aiosmtpd smarthost (TLS modes, AUTH,
scripted replies, connection counting), smtp-sink, and FakeServer's STARTTLS misbehaviour."""
import base64
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import unittest

from harness import SmtpConn
from upstreams import (INJECTION_REPLY, NEGOTIATION_CASES, AiosmtpdUpstream, FakeServer,
                       SmtpSink, client_context, closed_port, make_pki)


HAVE_SSLEAY = subprocess.run(["perl", "-MNet::SSLeay", "-e1"], capture_output=True).returncode == 0


def b64(text):
    return base64.b64encode(text.encode()).decode()


class PkiTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="postern-pki-")
        cls.pki = make_pki(cls.dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def verify(self, leaf):
        out = subprocess.run(["openssl", "verify", "-CAfile", self.pki.ca_file, leaf.cert],
                             capture_output=True, text=True, timeout=10)
        return out.returncode, out.stdout + out.stderr

    def test_chain_verification(self):
        for name, expected in (("localhost", None), ("wrong_name", None),
                               ("client", None),
                               ("expired", "certificate has expired"),
                               ("self_signed", "self-signed certificate"),
                               ("other_ca_leaf", "unable to get local issuer certificate")):
            with self.subTest(leaf=name):
                code, text = self.verify(getattr(self.pki, name))
                if expected is None:
                    self.assertEqual(code, 0, text)
                else:
                    self.assertNotEqual(code, 0, text)
                    self.assertIn(expected, text)

    def test_names(self):
        def check(leaf, *args):
            return subprocess.run(["openssl", "x509", "-noout", "-in", leaf.cert, *args],
                                  capture_output=True, text=True, timeout=10).stdout
        self.assertIn("does match", check(self.pki.localhost, "-checkhost", "localhost"))
        self.assertIn("does match", check(self.pki.localhost, "-checkip", "127.0.0.1"))
        self.assertIn("does NOT match", check(self.pki.wrong_name, "-checkhost", "localhost"))
        self.assertIn("does match", check(self.pki.wrong_name, "-checkhost", "wrong.example"))
        self.assertIn("notAfter=Feb  1 00:00:00 2020 GMT", check(self.pki.expired, "-enddate"))


class AiosmtpdTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="postern-pki-")
        cls.pki = make_pki(cls.dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def upstream(self, **kwargs):
        leaf = kwargs.pop("leaf", self.pki.localhost)
        if kwargs.get("tls", "none") != "none":
            kwargs.setdefault("cert", leaf.cert)
            kwargs.setdefault("key", leaf.key)
        up = AiosmtpdUpstream(**kwargs)
        self.addCleanup(up.cleanup)
        return up.start()

    def raw(self, up):
        c = SmtpConn(("127.0.0.1", up.port), timeout=5)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        return c

    def test_plain_message_is_stored_byte_exact(self):
        up = self.upstream()
        body = (b"From: a@example.org\r\nSubject: exact\r\nX-Odd:  two  spaces\t tab\r\n\r\n"
                b"line\r\n.leading dot\r\n..two dots\r\n\xc3\xa9 8-bit\r\nbare\nlf\r\n \r\n")
        c = self.raw(up)
        code, _, lines = c.cmd("EHLO client.test")
        self.assertEqual(code, 250)
        self.assertIn("250-8BITMIME", lines)
        self.assertIn("250-SMTPUTF8", lines)
        self.assertNotIn("PIPELINING", "\n".join(lines))
        self.assertNotIn("CHUNKING", "\n".join(lines))
        self.assertNotIn("AUTH", "\n".join(lines))
        self.assertEqual(c.cmd("MAIL FROM:<\u00fc@example.org> BODY=8BITMIME SMTPUTF8 SIZE=200")[0],
                         250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.net>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(body.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        code, text, _ = c.reply()
        self.assertEqual(code, 250, text)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        [m] = up.messages()
        self.assertEqual(m["data"], body)
        self.assertEqual(m["mail_from"], "\u00fc@example.org")
        self.assertEqual(m["mail_line"], "FROM:<\u00fc@example.org> BODY=8BITMIME SMTPUTF8 SIZE=200")
        self.assertEqual(m["mail_options"], ["BODY=8BITMIME", "SMTPUTF8", "SIZE=200"])
        self.assertTrue(m["smtputf8"])
        self.assertEqual(m["rcpt_tos"], ["b@example.net"])
        self.assertEqual(m["helo"], "client.test")
        self.assertFalse(m["tls"])
        self.assertIsNone(m["auth_user"])

    def test_recipient_replies_and_partial_delivery(self):
        up = self.upstream()
        c = self.raw(up)
        c.cmd("EHLO client.test")
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<refuse1@example.net>"),
                         (550, "5.1.1 No such user here", ["550 5.1.1 No such user here"]))
        self.assertEqual(c.cmd("RCPT TO:<defer@example.net>")[:2], (451, "4.3.0 Try later"))
        self.assertEqual(c.cmd("RCPT TO:<ok@example.net>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        self.assertEqual(c.cmd("Subject: x\r\n\r\ny\r\n.")[0], 250)
        [m] = up.messages()
        self.assertEqual(m["rcpt_tos"], ["ok@example.net"])
        self.assertEqual([e["reply"][:3] for e in up.events("rcpt")], ["550", "451", "250"])

    def test_end_of_data_reply_override(self):
        up = self.upstream()
        with smtplib.SMTP("127.0.0.1", up.port, timeout=5) as s:
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                s.sendmail("a@example.org", ["b@example.net"],
                           b"Subject: x\r\nX-Test-Reply: 452\r\n\r\nbody\r\n")
            self.assertEqual(cm.exception.smtp_code, 452)
            self.assertEqual(cm.exception.smtp_error, b"4.3.1 Insufficient system storage")
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                s.sendmail("a@example.org", ["b@example.net"],
                           b"Subject: x\r\nX-Test-Reply: 554 5.7.1 Go away\r\n\r\nbody\r\n")
            self.assertEqual((cm.exception.smtp_code, cm.exception.smtp_error),
                             (554, b"5.7.1 Go away"))
            # Only the header counts: the marker in the body is ignored.
            s.sendmail("a@example.org", ["b@example.net"],
                       b"Subject: x\r\n\r\nX-Test-Reply: 452\r\n")
        self.assertEqual(len(up.messages()), 1)
        with smtplib.SMTP("127.0.0.1", up.port, timeout=5) as s:
            with self.assertRaises(smtplib.SMTPServerDisconnected):
                s.sendmail("a@example.org", ["b@example.net"],
                           b"Subject: x\r\nX-Test-Reply: drop\r\n\r\nbody\r\n")
        self.assertEqual(len(up.messages()), 1)

    def test_connections_are_counted(self):
        up = self.upstream()
        with smtplib.SMTP("127.0.0.1", up.port, timeout=5) as s:
            for i in range(3):
                s.sendmail("a@example.org", ["b@example.net"], b"Subject: %d\r\n\r\nx\r\n" % i)
        for _ in range(2):
            with smtplib.SMTP("127.0.0.1", up.port, timeout=5) as s:
                s.sendmail("a@example.org", ["b@example.net"], b"Subject: y\r\n\r\nx\r\n")
        messages = up.messages()
        self.assertEqual(len(messages), 5)
        self.assertEqual([m["conn"] for m in messages], [1, 1, 1, 2, 3])
        self.assertEqual(up.connection_count(), 3)
        self.assertEqual(len(up.events("ehlo")), 3)
        self.assertTrue(up.open_connections() == 0 or up.open_connections() == 1)

    def test_starttls_required_then_auth_plain_and_login(self):
        up = self.upstream(tls="starttls", users={"app": "s3cret"}, auth_required=True)
        c = self.raw(up)
        code, _, lines = c.cmd("EHLO client.test")
        self.assertIn("250-STARTTLS", lines)
        self.assertNotIn("AUTH", "\n".join(lines))  # not offered in the clear
        self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0app\0s3cret"))[0], 530)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 530)
        ctx = client_context(self.pki.ca_file)
        for mechanism in ("PLAIN", "LOGIN"):
            with smtplib.SMTP("localhost", up.port, timeout=5) as s:
                s.starttls(context=ctx)
                s.ehlo()
                self.assertIn("login", s.esmtp_features["auth"].lower())
                self.assertIn("plain", s.esmtp_features["auth"].lower())
                with self.assertRaises(smtplib.SMTPSenderRefused) as cm:
                    s.sendmail("a@example.org", ["b@example.net"], b"Subject: x\r\n\r\nx\r\n")
                self.assertEqual(cm.exception.smtp_code, 530)
                s.user, s.password = "app", "wrong"
                with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
                    s.auth(mechanism, getattr(s, "auth_" + mechanism.lower()),
                           initial_response_ok=mechanism == "PLAIN")
                self.assertEqual(cm.exception.smtp_code, 535)
                s.user, s.password = "app", "s3cret"
                code, _ = s.auth(mechanism, getattr(s, "auth_" + mechanism.lower()),
                                 initial_response_ok=mechanism == "PLAIN")
                self.assertEqual(code, 235)
                s.sendmail("a@example.org", ["b@example.net"],
                           b"Subject: %s\r\n\r\nx\r\n" % mechanism.encode())
        messages = up.messages()
        self.assertEqual([(m["auth_mechanism"], m["auth_user"], m["tls"]) for m in messages],
                         [("PLAIN", "app", True), ("LOGIN", "app", True)])
        self.assertEqual([(e["mechanism"], e["ok"]) for e in up.events("auth")],
                         [("PLAIN", False), ("PLAIN", True), ("LOGIN", False), ("LOGIN", True)])

    def test_auth_in_the_clear_when_tls_is_none(self):
        up = self.upstream(users={"app": "s3cret"})
        with smtplib.SMTP("127.0.0.1", up.port, timeout=5) as s:
            s.ehlo()
            self.assertNotIn("starttls", s.esmtp_features)
            s.login("app", "s3cret")
            s.sendmail("a@example.org", ["b@example.net"], b"Subject: x\r\n\r\nx\r\n")
        [m] = up.messages()
        self.assertEqual((m["auth_user"], m["tls"]), ("app", False))

    def test_implicit_tls(self):
        up = self.upstream(tls="implicit", users={"app": "s3cret"})
        with smtplib.SMTP_SSL("localhost", up.port, timeout=5,
                              context=client_context(self.pki.ca_file)) as s:
            s.ehlo()
            self.assertNotIn("starttls", s.esmtp_features)
            s.login("app", "s3cret")
            s.sendmail("a@example.org", ["b@example.net"], b"Subject: x\r\n\r\nx\r\n")
        [m] = up.messages()
        self.assertTrue(m["tls"])
        self.assertEqual(m["auth_user"], "app")
        self.assertIn(m["tls_version"], ("TLSv1.2", "TLSv1.3"))

    def test_verifying_client_refuses_bad_certificates(self):
        cases = (("wrong_name", "Hostname mismatch"), ("expired", "certificate has expired"),
                 ("self_signed", "self-signed certificate"),
                 ("other_ca_leaf", "unable to get local issuer certificate"))
        for leaf, message in cases:
            with self.subTest(leaf=leaf):
                up = self.upstream(tls="implicit", leaf=getattr(self.pki, leaf))
                with self.assertRaises(ssl.SSLCertVerificationError) as cm:
                    smtplib.SMTP_SSL("localhost", up.port, timeout=5,
                                     context=client_context(self.pki.ca_file))
                self.assertIn(message, cm.exception.verify_message)
                # An unverifying client gets through (the certificate is served as given).
                with smtplib.SMTP_SSL("localhost", up.port, timeout=5,
                                      context=client_context(verify=False)) as s:
                    self.assertEqual(s.noop()[0], 250)

    def swaks(self, up, *args):
        return subprocess.run(["swaks", "--server", "localhost", "--port", str(up.port),
                               "--auth-user", "app", "--auth-password", "s3cret",
                               "--from", "a@example.org", "--to", "b@example.net",
                               "--header", "Subject: swaks", *args],
                              capture_output=True, text=True, timeout=20)

    def test_swaks_auth_login_in_the_clear(self):
        up = self.upstream(users={"app": "s3cret"})
        out = self.swaks(up, "--auth", "LOGIN")
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        [m] = up.messages()
        self.assertEqual((m["auth_mechanism"], m["tls"]), ("LOGIN", False))
        self.assertIn(b"Subject: swaks\r\n", m["data"])

    @unittest.skipUnless(HAVE_SSLEAY, "swaks needs Net::SSLeay (libnet-ssleay-perl) for TLS")
    def test_swaks_starttls_auth_plain(self):
        up = self.upstream(tls="starttls", users={"app": "s3cret"})
        out = self.swaks(up, "--auth", "PLAIN", "--tls", "--tls-verify", "--tls-ca-path",
                         self.pki.ca_file)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        [m] = up.messages()
        self.assertEqual((m["auth_mechanism"], m["tls"]), ("PLAIN", True))

    def test_restart_keeps_port_and_messages(self):
        up = self.upstream()
        with smtplib.SMTP("127.0.0.1", up.port, timeout=5) as s:
            s.sendmail("a@example.org", ["b@example.net"], b"Subject: 1\r\n\r\nx\r\n")
        port = up.port
        up.stop()
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        up.start()
        self.assertEqual(up.port, port)
        with smtplib.SMTP("127.0.0.1", up.port, timeout=5) as s:
            s.sendmail("a@example.org", ["b@example.net"], b"Subject: 2\r\n\r\nx\r\n")
        self.assertEqual([m["id"] for m in up.messages()], [1, 2])


class SmtpSinkTest(unittest.TestCase):

    def test_dump_counters_and_capabilities(self):
        sink = SmtpSink()
        self.addCleanup(sink.cleanup)
        sink.start()
        body = b"Subject: sink\r\n\r\nline\r\n.dot\r\n"
        for i in range(2):
            with smtplib.SMTP("127.0.0.1", sink.port, timeout=5) as s:
                s.ehlo("client.test")
                for k in ("pipelining", "8bitmime", "dsn", "enhancedstatuscodes"):
                    self.assertIn(k, s.esmtp_features)
                for k in ("starttls", "size", "smtputf8", "chunking"):
                    self.assertNotIn(k, s.esmtp_features)
                s.sendmail("a@example.org", ["b@example.net", "c@example.net"], body,
                           mail_options=["BODY=8BITMIME"])
        messages = sink.wait_messages(2)
        self.assertEqual(len(messages), 2)
        self.assertTrue(sink.proc.poll() is None)
        m = messages[0]
        self.assertEqual(m["mail_from"], "a@example.org")
        self.assertIn("BODY=8BITMIME", m["mail_args"])
        self.assertEqual(m["rcpt_tos"], ["b@example.net", "c@example.net"])
        self.assertEqual(m["helo"], "client.test")
        self.assertEqual(m["data_crlf"], body)
        from harness import wait_for
        self.assertTrue(wait_for(lambda: sink.counters()["sess"] == 2), sink.output())
        self.assertEqual(sink.counters(), {"sess": 2, "quit": 2, "mesg": 2})


class FakeServerTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="postern-pki-")
        cls.pki = make_pki(cls.dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def fake(self, **kwargs):
        kwargs.setdefault("cert", self.pki.localhost.cert)
        kwargs.setdefault("key", self.pki.localhost.key)
        f = FakeServer(**kwargs)
        self.addCleanup(f.stop)
        return f.start()

    def raw(self, f):
        c = SmtpConn(("127.0.0.1", f.port), timeout=5)
        self.addCleanup(c.close)
        return c

    def test_negotiation_cases_never_make_the_transition(self):
        for name, case in NEGOTIATION_CASES.items():
            with self.subTest(case=name):
                f = self.fake(**case)
                c = self.raw(f)
                self.assertEqual(c.reply()[0], 220)
                _, _, lines = c.cmd("EHLO client.test")
                self.assertEqual("STARTTLS" in "\n".join(lines), "STARTTLS" in case["ehlo"])
                code, text, _ = c.cmd("STARTTLS")
                self.assertEqual(f"{code} {text}", case["starttls_reply"])
                # Still plaintext: the server answers the next command in the clear.
                self.assertEqual(c.cmd("NOOP")[0], 250)
                self.assertEqual(c.cmd("QUIT")[0], 221)
                self.assertEqual(f.verbs(tls=False), ["EHLO", "STARTTLS", "NOOP", "QUIT"])
                self.assertEqual(f.tls_handshakes, 0)

    def test_response_injection_comes_in_one_write(self):
        f = self.fake(starttls_reply=INJECTION_REPLY)
        sock = socket.create_connection(("127.0.0.1", f.port), timeout=5)
        self.addCleanup(sock.close)
        buf = b""
        while not buf.endswith(b"\r\n"):
            buf += sock.recv(4096)
        sock.sendall(b"EHLO client.test\r\n")
        buf = b""
        while not buf.endswith(b"250 STARTTLS\r\n"):
            buf += sock.recv(4096)
        sock.sendall(b"STARTTLS\r\n")
        got = sock.recv(4096)
        self.assertEqual(got, INJECTION_REPLY)  # one segment: the 220 and the forged lines
        # The server then really does TLS; the buffered plaintext is the client's problem.
        tls = client_context(self.pki.ca_file).wrap_socket(sock, server_hostname="localhost")
        self.addCleanup(tls.close)
        tls.sendall(b"EHLO client.test\r\n")
        reply = b""
        while b"\r\n250 " not in reply:
            reply += tls.recv(4096)
        self.assertIn(b"AUTH PLAIN LOGIN", reply)
        self.assertEqual(f.tls_handshakes, 1)
        self.assertEqual(f.verbs(tls=False), ["EHLO", "STARTTLS"])
        self.assertEqual(f.verbs(tls=True), ["EHLO"])

    def test_full_session_records_what_was_sent_in_the_clear(self):
        f = self.fake()
        with smtplib.SMTP("localhost", f.port, timeout=5) as s:
            s.starttls(context=client_context(self.pki.ca_file))
            s.login("app", "pw")
            s.sendmail("a@example.org", ["b@example.net"], b"Subject: x\r\n\r\nx\r\n")
        self.assertEqual(f.verbs(tls=False), ["EHLO", "STARTTLS"])
        self.assertEqual(f.verbs(tls=True)[:3], ["EHLO", "AUTH", "MAIL"])
        self.assertIn("DATA", f.verbs(tls=True))
        self.assertEqual(f.messages, [b"Subject: x\r\n\r\nx\r\n"])
        self.assertEqual(f.plaintext_after_starttls, [])

    def test_data_and_bdat_payloads_are_exact(self):
        f = self.fake(ehlo=("CHUNKING", "8BITMIME"))
        c = self.raw(f)
        c.reply()
        self.assertIn("250 8BITMIME", c.cmd("EHLO client.test")[2])
        body = b"Subject: x\r\n\r\n.dot\r\nbare\nlf\r\n..two\r\n"
        c.cmd("MAIL FROM:<a@example.org>")
        c.cmd("RCPT TO:<b@example.net>")
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(body.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        self.assertEqual(c.reply()[0], 250)
        c.cmd("MAIL FROM:<a@example.org>")
        c.cmd("RCPT TO:<b@example.net>")
        c.send(b"BDAT 10\r\n" + body[:10])
        self.assertEqual(c.reply()[0], 250)
        c.send(b"BDAT %d LAST\r\n" % (len(body) - 10) + body[10:])
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(f.messages, [body, body])
        self.assertIn("BDAT", f.verbs())

    def test_greeting_421_hangs_up(self):
        f = self.fake(greeting="421 4.3.2 Service not available")
        c = self.raw(f)
        self.assertEqual(c.reply()[:2], (421, "4.3.2 Service not available"))
        self.assertTrue(c.closed(timeout=2))

    def test_silent_server_never_speaks(self):
        f = self.fake(silent=True)
        sock = socket.create_connection(("127.0.0.1", f.port), timeout=0.3)
        self.addCleanup(sock.close)
        with self.assertRaises(socket.timeout):
            sock.recv(100)
        self.assertEqual(f.connections, 1)

    def test_stall_on_mail(self):
        f = self.fake(stall_on=("MAIL",))
        c = self.raw(f)
        c.reply()
        c.cmd("EHLO client.test")
        c.send("MAIL FROM:<a@example.org>\r\n")
        self.assertFalse(c.closed(timeout=0.3))
        self.assertEqual(f.verbs(), ["EHLO", "MAIL"])

    def test_closed_port_refuses(self):
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", closed_port()), timeout=2)


if __name__ == "__main__":
    unittest.main()
