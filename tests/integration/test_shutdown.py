"""Graceful shutdown on SIGTERM: idle sessions are told 421 4.3.2 at once, the listener stops
accepting, a transaction in flight may finish within server.shutdown_grace, one that does not is
cut with 421 and stores nothing; the process exits 0 in every case."""
import signal
import socket
import time
import unittest

from harness import QUEUED, Postern, wait_for



class ShutdownTest(unittest.TestCase):

    def start(self, server=None):
        p = Postern(server=server)
        self.addCleanup(p.cleanup)
        p.start()
        return p

    def session(self, p):
        c = p.connect()
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        return c

    def open_data(self, p):
        """A session inside DATA with the first half of a message sent."""
        c = self.session(p)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.net>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
        return c

    def terminate(self, p):
        p.proc.send_signal(signal.SIGTERM)
        self.assertTrue(wait_for(lambda: "event=shutdown " in p.log()), p.log())

    def wait_exit(self, p, timeout):
        start = time.monotonic()
        rc = p.proc.wait(timeout)
        return rc, time.monotonic() - start

    def assertRefused(self, p):
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", p.port), timeout=2).close()

    def test_idle_session_is_closed_with_421(self):
        p = self.start()
        c = self.session(p)
        d = self.session(p)
        # One of them has a half-typed command: still idle (no transaction).
        d.send("NOO")
        start = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        for conn in (c, d):
            code, text, lines = conn.reply()
            self.assertEqual(lines, ["421 4.3.2 Service shutting down, closing connection"])
            self.assertTrue(conn.closed())
        self.assertLess(time.monotonic() - start, 2.0)  # not after the 5 s grace
        rc, _ = self.wait_exit(p, 5)
        self.assertEqual(rc, 0, p.log())
        self.assertLess(time.monotonic() - start, 2.5)
        self.assertNotIn("event=shutdown_forced", p.log())

    def test_idle_session_before_ehlo(self):
        p = self.start()
        c = p.connect()
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        p.proc.send_signal(signal.SIGTERM)
        # No EHLO: no enhanced code.
        self.assertEqual(c.reply()[2], ["421 Service shutting down, closing connection"])
        self.assertTrue(c.closed())
        self.assertEqual(self.wait_exit(p, 5)[0], 0)

    def test_transaction_in_flight_finishes(self):
        p = self.start()
        c = self.open_data(p)
        idle = self.session(p)
        self.terminate(p)
        # The idle session goes at once; the listener no longer accepts.
        self.assertEqual(idle.reply()[0], 421)
        self.assertRefused(p)
        # The message in flight is still received and stored.
        time.sleep(0.5)
        self.assertIsNone(p.proc.poll())
        c.send(b"second half\r\n.\r\n")
        code, text, lines = c.reply()
        self.assertEqual(code, 250, lines)
        m = QUEUED.match(text)
        self.assertIsNotNone(m, text)
        msgs = p.messages()
        self.assertEqual(list(msgs), [m.group(1)])
        self.assertIn(b"first half\r\nsecond half\r\n", msgs[m.group(1)][0])
        # The transaction is over: the next command is answered with 421 and the session ends.
        try:
            c.send("MAIL FROM:<again@example.org>\r\n")
        except OSError:
            pass  # already closed by the server; the 421 is in our receive buffer
        code, text, lines = c.reply()
        self.assertEqual((code, text.split(" ")[0]), (421, "4.3.2"), lines)
        self.assertTrue(c.closed())
        rc, waited = self.wait_exit(p, 5)
        self.assertEqual(rc, 0, p.log())
        # Did not wait for the end of the 5 s grace (at most the 2 s postern reads on after its
        # 421, as this client keeps its socket open).
        self.assertLess(waited, 4.0)
        self.assertNotIn("event=shutdown_forced", p.log())
        self.assertEqual(len(p.messages()), 1)

    def test_mail_pipelined_after_the_message_is_refused(self):
        # The end of data and a new MAIL in one write: the message is stored, the MAIL (received
        # while draining) gets 421 4.3.2 and the connection closes.
        p = self.start()
        c = self.open_data(p)
        self.terminate(p)
        self.assertRefused(p)
        c.send(b".\r\nMAIL FROM:<next@example.org>\r\nRCPT TO:<b@example.net>\r\n")
        code, text, lines = c.reply()
        self.assertEqual(code, 250, lines)
        self.assertEqual(c.reply()[2], ["421 4.3.2 Service shutting down, closing connection"])
        self.assertTrue(c.closed())
        self.assertEqual(c.buf, b"")  # the pipelined RCPT got no reply
        self.assertEqual(len(p.messages()), 1)
        self.assertEqual(self.wait_exit(p, 5)[0], 0)

    def test_transaction_in_flight_with_bdat(self):
        p = self.start()
        c = self.session(p)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.net>")[0], 250)
        c.send(b"BDAT 20\r\nSubject: chunked\r\n\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.terminate(p)
        self.assertRefused(p)
        c.send(b"BDAT 6 LAST\r\nbody\r\n")
        code, text, lines = c.reply()
        self.assertEqual(code, 250, lines)
        self.assertEqual(len(p.messages()), 1)
        self.assertEqual(c.reply()[0], 421)
        self.assertEqual(self.wait_exit(p, 5)[0], 0)

    def test_transaction_over_the_grace_is_cut(self):
        p = self.start(server={"shutdown_grace": "2s"})
        c = self.open_data(p)
        start = time.monotonic()
        self.terminate(p)
        c.sock.settimeout(10)
        code, text, lines = c.reply()
        cut_after = time.monotonic() - start
        self.assertEqual((code, text.split(" ")[0]), (421, "4.3.2"), lines)
        self.assertTrue(c.closed())
        self.assertGreater(cut_after, 1.7)  # the grace was given
        self.assertLess(cut_after, 4.0)
        rc, _ = self.wait_exit(p, 8)
        self.assertEqual(rc, 0, p.log())
        self.assertEqual(p.outbox_names(), [])
        self.assertIn("event=shutdown_forced", p.log())


class SighupTest(unittest.TestCase):

    def test_sighup_does_not_stop_postern(self):
        """SIGHUP reloads certificates only (none here): logged, and postern keeps serving."""
        p = Postern().start()
        self.addCleanup(p.cleanup)
        p.proc.send_signal(signal.SIGHUP)
        self.assertTrue(wait_for(lambda: "event=reload " in p.log()), p.log())
        self.assertIn("other configuration changes need a restart", p.log())
        self.assertIsNone(p.proc.poll())
        c = p.connect()
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)


if __name__ == "__main__":
    unittest.main()
