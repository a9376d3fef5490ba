"""SIGHUP reloads the certificates of TLS listeners without dropping connections.

A listener with tls = "starttls" serves the certificate in its certificate/private_key files.
After the files are replaced and postern gets SIGHUP (event=tls_reloaded), new handshakes get
the new certificate while a session already in TLS carries on. Files that do not load (a
broken certificate, a key of another certificate) are refused with event=tls_reload_failed and
the certificate in use stays."""
import os
import shutil
import signal
import socket
import ssl
import tempfile
import unittest

from harness import Postern, wait_for
from upstreams import make_pki


class TlsReloadTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="postern-tls-reload-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.pki = make_pki(os.path.join(self.tmp, "pki"))
        self.cert = os.path.join(self.tmp, "cert.pem")
        self.key = os.path.join(self.tmp, "key.pem")
        self.install(self.pki.localhost)

    def install(self, leaf, key=None):
        shutil.copyfile(leaf.cert, self.cert)
        shutil.copyfile(key or leaf.key, self.key)

    def handshake(self, p):
        """A session in TLS: (ssl socket, the DER certificate postern presented)."""
        raw = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        f = raw.makefile("rb")
        self.assertTrue(f.readline().startswith(b"220 "))
        raw.sendall(b"EHLO client.test\r\n")
        while True:
            line = f.readline()
            if line[3:4] == b" ":
                break
        raw.sendall(b"STARTTLS\r\n")
        self.assertTrue(f.readline().startswith(b"220 "))
        ctx = ssl._create_unverified_context()
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        self.addCleanup(tls.close)
        return tls, tls.getpeercert(binary_form=True)

    @staticmethod
    def ehlo(tls):
        tls.sendall(b"EHLO client.test\r\n")
        data = b""
        while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] != b" ":
            chunk = tls.recv(4096)
            if not chunk:
                break
            data += chunk
        return data

    @staticmethod
    def der(path):
        with open(path) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())

    def test_sighup_swaps_the_certificate_and_keeps_sessions(self):
        p = Postern(listener={"tls": "starttls", "certificate": self.cert,
                              "private_key": self.key}).start()
        self.addCleanup(p.cleanup)
        old_session, first = self.handshake(p)
        self.assertEqual(first, self.der(self.pki.localhost.cert))

        self.install(self.pki.wrong_name)
        p.proc.send_signal(signal.SIGHUP)
        self.assertTrue(wait_for(lambda: p.log().count("event=tls_reloaded") == 1), p.log())
        _, second = self.handshake(p)
        self.assertEqual(second, self.der(self.pki.wrong_name.cert))
        # The session that was in TLS before the reload goes on.
        self.assertIn(b"250 CHUNKING", self.ehlo(old_session))

        # A key that is not the certificate's, then a broken certificate: refused, logged, and
        # the certificate in use stays.
        self.install(self.pki.localhost, key=self.pki.wrong_name.key)
        p.proc.send_signal(signal.SIGHUP)
        self.assertTrue(wait_for(lambda: "event=tls_reload_failed" in p.log()), p.log())
        self.assertIn("does not belong to the certificate", p.log())
        with open(self.cert, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        p.proc.send_signal(signal.SIGHUP)
        self.assertTrue(wait_for(lambda: p.log().count("event=tls_reload_failed") == 2), p.log())
        self.assertIn("cannot load the certificate", p.log())
        _, third = self.handshake(p)
        self.assertEqual(third, self.der(self.pki.wrong_name.cert))
        self.assertIsNone(p.proc.poll())


if __name__ == "__main__":
    unittest.main()
