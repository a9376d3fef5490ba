"""client_ca: a client certificate verified by the listener's client CA authenticates the client
as the user its subject's CN names (a [user.NAME] table or a users_file entry), with that
user's allowed_senders; a missing, unverifiable or unknown certificate leaves the client
unauthenticated (event=tls_client_refused for the latter two), and AUTH still works."""
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import unittest

from harness import BINARY, Postern, wait_for
from upstreams import AiosmtpdUpstream, make_pki


class ClientCertificateTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="postern-client-cert-")
        cls.pki = make_pki(os.path.join(cls.tmp, "pki"))
        hashed = subprocess.run([BINARY, "passwd"], input="pw\n", capture_output=True,
                                text=True, check=True).stdout.strip()
        cls.users = os.path.join(cls.tmp, "users")
        with open(cls.users, "w") as f:
            f.write(f"someone:{hashed}\n")
        cls.p = Postern(listener={"tls": "starttls", "certificate": cls.pki.localhost.cert,
                                  "private_key": cls.pki.localhost.key,
                                  "client_ca": cls.pki.ca_file, "relay": "authenticated",
                                  "trusted_networks": []},
                        extra_toml=f'[auth]\nusers_file = "{cls.users}"\nfailure_delay = "0s"\n'
                                   '[user."postern.test"]\nallowed_senders = ["@example.com"]\n')
        cls.p.start()

    @classmethod
    def tearDownClass(cls):
        cls.p.cleanup()
        shutil.rmtree(cls.tmp, True)

    def session(self, cert=None):
        """EHLO, STARTTLS (presenting `cert`, a leaf of make_pki), EHLO: a file-like pair."""
        raw = socket.create_connection(("127.0.0.1", self.p.port), timeout=10)
        f = raw.makefile("rb")

        def reply(stream):
            lines = []
            while True:
                line = stream.readline()
                lines.append(line)
                if line[3:4] != b"-":
                    return lines

        reply(f)
        raw.sendall(b"EHLO client.test\r\n")
        reply(f)
        raw.sendall(b"STARTTLS\r\n")
        self.assertTrue(reply(f)[0].startswith(b"220"))
        ctx = ssl._create_unverified_context()
        if cert:
            ctx.load_cert_chain(cert.cert, cert.key)
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        self.addCleanup(tls.close)
        tf = tls.makefile("rb")

        def cmd(line):
            tls.sendall(line.encode() + b"\r\n")
            return reply(tf)

        ehlo = b"".join(cmd("EHLO client.test"))
        return cmd, ehlo

    def test_verified_certificate_authenticates_as_its_cn(self):
        cmd, ehlo = self.session(self.pki.client)
        self.assertNotIn(b"AUTH PLAIN", ehlo, "AUTH is not offered once authenticated")
        self.assertTrue(cmd("MAIL FROM:<app@example.org>")[0].startswith(b"553 5.7.1"))
        self.assertTrue(cmd("MAIL FROM:<app@example.com>")[0].startswith(b"250"))
        self.assertTrue(cmd("RCPT TO:<someone@example.net>")[0].startswith(b"250"))
        self.assertTrue(cmd("DATA")[0].startswith(b"354"))
        self.assertTrue(cmd("Subject: cert\r\n\r\nhi\r\n.")[0].startswith(b"250"))
        self.assertTrue(wait_for(lambda: 'user=postern.test mechanism=certificate'
                                 in self.p.log()), self.p.log())
        [m] = [m for m in self.p.messages().values() if b"Subject: cert" in m[0]]
        self.assertIn(b"with ESMTPSA", m[0])

    def test_no_or_untrusted_certificate_stays_unauthenticated(self):
        for cert in (None, self.pki.other_ca_leaf):
            cmd, ehlo = self.session(cert)
            self.assertIn(b"AUTH PLAIN LOGIN", ehlo)
            self.assertTrue(cmd("MAIL FROM:<app@example.com>")[0].startswith(b"530 5.7.0"))
        self.assertIn("event=tls_client_refused", self.p.log())

    def test_header_from_must_be_owned_too(self):
        """check_header_from on another listener: the From: field of an authenticated user's
        message must name only addresses it owns (550 5.7.1 at the end of data, nothing
        stored); a message from an owned address passes."""
        p = Postern(listener={"tls": "starttls", "certificate": self.pki.localhost.cert,
                              "private_key": self.pki.localhost.key,
                              "client_ca": self.pki.ca_file, "relay": "authenticated",
                              "trusted_networks": [], "check_header_from": True},
                    extra_toml=f'[auth]\nusers_file = "{self.users}"\n'
                               '[user."postern.test"]\nallowed_senders = ["@example.com"]\n')
        p.start()
        self.addCleanup(p.cleanup)
        saved, self.p = self.p, p
        self.addCleanup(setattr, self, "p", saved)
        cmd, _ = self.session(self.pki.client)
        for header, code in [(b"From: Boss <ceo@example.org>", b"550 5.7.1"),
                             (b"From: app@example.com, ceo@example.org", b"550 5.7.1"),
                             (b"Subject: no from", b"550 5.7.1"),
                             (b"From: App (ceo@example.org) <app@example.com>", b"250")]:
            self.assertTrue(cmd("MAIL FROM:<app@example.com>")[0].startswith(b"250"))
            self.assertTrue(cmd("RCPT TO:<someone@example.net>")[0].startswith(b"250"))
            self.assertTrue(cmd("DATA")[0].startswith(b"354"))
            r = cmd(header.decode() + "\r\nX-Case: 1\r\n\r\nhi\r\n.")[0]
            self.assertTrue(r.startswith(code), (header, r))
        self.assertEqual(len(p.messages()), 1)
        self.assertIn("event=header_from_refused", p.log())

    def test_header_from_is_judged_before_streaming_upstream(self):
        """Passthrough with check_header_from: a message larger than the first piece postern
        streams (256 KiB) is judged on its header section before anything is sent, and refused
        for its From: address (not for a missing From: in a later piece); the upstream
        receives nothing, and an owned From: passes through."""
        up = AiosmtpdUpstream(tls="none")
        self.addCleanup(up.cleanup)
        up.start()
        p = Postern(listener={"tls": "starttls", "certificate": self.pki.localhost.cert,
                              "private_key": self.pki.localhost.key,
                              "client_ca": self.pki.ca_file, "relay": "authenticated",
                              "trusted_networks": [], "check_header_from": True,
                              "delivery": "passthrough"},
                    routes={"default": {"upstream": "smart"}},
                    extra_toml=f'[auth]\nusers_file = "{self.users}"\n'
                               '[user."postern.test"]\nallowed_senders = ["@example.com"]\n'
                               f'[upstream.smart]\nhosts = ["{up.address}"]\ntls = "none"\n'
                               'allow_plaintext = true\n')
        p.start()
        self.addCleanup(p.cleanup)
        saved, self.p = self.p, p
        self.addCleanup(setattr, self, "p", saved)
        cmd, _ = self.session(self.pki.client)
        big = ("x" * 998 + "\r\n") * 600  # about 600 KB: streamed in pieces
        for header, code in [("From: Boss <ceo@example.org>", b"550 5.7.1 Header From: <ceo"),
                             ("From: <app@example.com>", b"250")]:
            self.assertTrue(cmd("MAIL FROM:<app@example.com>")[0].startswith(b"250"))
            self.assertTrue(cmd("RCPT TO:<someone@example.net>")[0].startswith(b"250"))
            self.assertTrue(cmd("DATA")[0].startswith(b"354"))
            r = cmd(header + "\r\nSubject: big\r\n\r\n" + big + ".")[0]
            self.assertTrue(r.startswith(code), (header, r))
        messages = up.wait_messages(1)
        self.assertEqual(len(messages), 1)
        self.assertIn(b"From: <app@example.com>", messages[0]["data"])

    def test_check_config_needs_a_readable_client_ca(self):
        p = Postern(listener={"tls": "starttls", "certificate": self.pki.localhost.cert,
                              "private_key": self.pki.localhost.key,
                              "client_ca": os.path.join(self.tmp, "absent.pem")})
        self.addCleanup(shutil.rmtree, p.dir, True)
        out = subprocess.run([BINARY, "check-config", "--config", p.config_path],
                             capture_output=True, text=True, timeout=20)
        self.assertEqual(out.returncode, 1)
        self.assertIn("cannot read the client CA file", out.stderr)


if __name__ == "__main__":
    unittest.main()
