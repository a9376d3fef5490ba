"""Listener limits: command and text line lengths, recipients per message, message size (SIZE,
DATA, BDAT), command and data timeouts, error budget, connection limits in total and per
address."""
import re
import select
import socket
import time
import unittest

from harness import QUEUED, PosternTestCase, wait_for



class LimitsTestCase(PosternTestCase):

    def transaction(self, c, rcpts=("b@example.net",)):
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        for r in rcpts:
            self.assertEqual(c.cmd(f"RCPT TO:<{r}>")[0], 250)

    def new_messages(self, before):
        return {q: m for q, m in self.postern.messages().items() if q not in before}

    def log_count(self, event):
        return len(re.findall(r"\bevent=%s\b" % event, self.postern.log()))

    def wait_sessions_closed(self, open_sessions=0):
        """All but open_sessions of the sessions the server accepted have ended (their
        connection slots are free again)."""
        self.assertTrue(
            wait_for(lambda: self.log_count("connect") - self.log_count("disconnect")
                     == open_sessions),
            self.postern.log()[-2000:])


class LineAndSizeLimitsTest(LimitsTestCase):
    LISTENER = {"max_message_size": "64KiB", "max_recipients": 100, "max_errors": 5}

    def test_long_command_line(self):
        c = self.greet()
        line = "NOOP " + "x" * 593
        self.assertEqual(len(line) + 2, 600)
        code, text, lines = c.cmd(line)
        self.assertEqual((code, text.split(" ")[0]), (500, "5.5.6"), lines)
        self.assertEqual(c.cmd("NOOP")[2], ["250 2.0.0 Ok"])

    def test_command_line_at_the_limit_is_accepted(self):
        c = self.greet()
        # 512 octets with CRLF is the RFC 5321 4.5.3.1.4 maximum; it must not be refused.
        line = "NOOP " + "x" * 505
        self.assertEqual(len(line) + 2, 512)
        self.assertEqual(c.cmd(line)[0], 250)
        self.assertEqual(c.cmd(line + "x")[0], 500)

    def test_long_line_in_several_writes_gives_one_reply(self):
        c = self.greet()
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # 5000 octets, in 10 writes spaced out so that the server reads them separately.
        for _ in range(10):
            c.send(b"y" * 500)
            time.sleep(0.03)
        c.send(b"\r\nNOOP\r\n")
        code, text, lines = c.reply()
        self.assertEqual((code, text.split(" ")[0]), (500, "5.5.6"), lines)
        # The next reply is the NOOP's: exactly one 500 for the whole over-long line, and no
        # piece of it was run as a command.
        self.assertEqual(c.reply()[2], ["250 2.0.0 Ok"])
        c.send(b"NOOP\r\n")
        self.assertEqual(c.reply()[2], ["250 2.0.0 Ok"])

    def test_long_text_line_in_data(self):
        before = set(self.postern.messages())
        c = self.greet()
        self.transaction(c)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: long\r\n\r\n" + b"z" * 1200 + b"\r\nend\r\n.\r\n")
        code, text, lines = c.reply()
        self.assertEqual((code, text.split(" ")[0]), (550, "5.6.0"), lines)
        self.assertEqual(self.new_messages(before), {})
        # The transaction is over, the session is not.
        self.assertEqual(c.cmd("DATA")[0], 503)
        self.assertEqual(c.cmd("NOOP")[0], 250)

    def test_text_line_of_998_octets_is_accepted(self):
        c = self.greet()
        self.transaction(c)
        self.assertEqual(c.cmd("DATA")[0], 354)
        code, text, _ = c.cmd("Subject: edge\r\n\r\n" + "z" * 998 + "\r\n.")
        self.assertEqual(code, 250, text)

    def test_max_recipients(self):
        before = set(self.postern.messages())
        c = self.greet()
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        # 110 recipients pipelined: 10 over the limit, twice max_errors.
        c.send("".join(f"RCPT TO:<r{i}@example.net>\r\n" for i in range(110)))
        replies = [c.reply() for _ in range(110)]
        self.assertEqual([r[0] for r in replies], [250] * 100 + [452] * 10)
        self.assertTrue(all(r[1].startswith("4.5.3 ") for r in replies[100:]), replies[100])
        # The 452s are not errors: the session is still open (max_errors is 5).
        self.assertEqual(c.cmd("DATA")[0], 354)
        code, text, _ = c.cmd("Subject: many\r\n\r\nx\r\n.")
        m = QUEUED.match(text)
        self.assertEqual(code, 250, text)
        self.assertIsNotNone(m, text)
        new = self.new_messages(before)
        self.assertEqual(list(new), [m.group(1)])
        env = new[m.group(1)][1]
        self.assertEqual([r["address"] for r in env["recipients"]],
                         [f"r{i}@example.net" for i in range(100)])
        # The client sends the others in a new transaction (RFC 5321 4.5.3.1.10).
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<r100@example.net>")[0], 250)

    def test_message_of_exactly_the_limit(self):
        before = set(self.postern.messages())
        c = self.greet()
        line = b"x" * 98 + b"\r\n"
        exact = line * 655 + b"y" * 34 + b"\r\n"
        self.assertEqual(len(exact), 64 * 1024)
        self.transaction(c)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(exact + b".\r\n")
        self.assertEqual(c.reply()[0], 250)
        # One octet more is too big.
        self.transaction(c)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(exact.replace(b"y\r\n", b"yy\r\n") + b".\r\n")
        self.assertEqual(c.reply()[0], 552)
        new = self.new_messages(before)
        self.assertEqual(len(new), 1)
        self.assertTrue(next(iter(new.values()))[0].endswith(exact))

    def test_declared_size_too_big(self):
        c = self.greet()
        code, text, lines = c.cmd("MAIL FROM:<a@example.org> SIZE=999999999")
        self.assertEqual((code, text.split(" ")[0]), (552, "5.3.4"), lines)
        self.assertEqual(c.cmd("RCPT TO:<b@example.net>")[0], 503)  # no transaction
        # Exactly the limit is fine.
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org> SIZE=65536")[0], 250)

    def test_ehlo_advertises_the_configured_size(self):
        c = self.greet(ehlo=None)
        code, _, lines = c.cmd("EHLO client.test")
        self.assertIn("250-SIZE 65536", lines)

    def test_data_stream_over_the_limit(self):
        before = set(self.postern.messages())
        c = self.greet()
        self.transaction(c)
        self.assertEqual(c.cmd("DATA")[0], 354)
        line = b"0123456789" * 9 + b"\r\n"
        body = b"Subject: big\r\n\r\n" + line * 1000  # about 92 KiB
        self.assertGreater(len(body), 64 * 1024)
        c.send(body)
        # Nothing is answered before the end of data: the client is still sending.
        c.sock.settimeout(0.5)
        with self.assertRaises(socket.timeout):
            c.reply()
        c.sock.settimeout(10)
        c.send(b".\r\n")
        code, text, lines = c.reply()
        self.assertEqual((code, text.split(" ")[0]), (552, "5.3.4"), lines)
        self.assertEqual(self.new_messages(before), {})
        # The session goes on, with a fresh transaction.
        self.assertEqual(c.cmd("NOOP")[0], 250)
        self.transaction(c)
        self.assertEqual(c.cmd("DATA")[0], 354)
        code, text, _ = c.cmd("Subject: small\r\n\r\nx\r\n.")
        self.assertEqual(code, 250, text)
        self.assertEqual(len(self.new_messages(before)), 1)

    def test_bdat_over_the_limit(self):
        before = set(self.postern.messages())
        c = self.greet()
        self.transaction(c)
        chunk = b"x" * 38 + b"\r\n"
        part = chunk * 1000  # 40000 octets
        c.send(b"BDAT %d\r\n" % len(part) + part)
        self.assertEqual(c.reply()[0], 250)
        c.send(b"BDAT %d LAST\r\n" % len(part) + part)
        code, text, lines = c.reply()
        self.assertEqual((code, text.split(" ")[0]), (552, "5.3.4"), lines)
        self.assertEqual(self.new_messages(before), {})
        # Framing kept, transaction reset, session open.
        self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 503)

    def test_bdat_error_repeats_until_last(self):
        before = set(self.postern.messages())
        c = self.greet()
        self.transaction(c)
        part = b"x" * 70000
        c.send(b"BDAT %d\r\n" % len(part) + part)
        self.assertEqual(c.reply()[0], 552)
        c.send(b"BDAT 5\r\nabcde")
        self.assertEqual(c.reply()[0], 552)
        c.send(b"BDAT 0 LAST\r\n")
        self.assertEqual(c.reply()[0], 552)
        self.assertEqual(self.new_messages(before), {})
        self.assertEqual(c.cmd("NOOP")[0], 250)


class ErrorBudgetTest(LimitsTestCase):
    LISTENER = {"max_errors": 5}

    def test_fifth_error_closes(self):
        c = self.greet()
        for i in range(4):
            self.assertEqual(c.cmd(f"BOGUS{i}")[0], 500)
        self.assertEqual(c.cmd("NOOP")[0], 250)  # successes do not reset or add
        code, text, lines = c.cmd("BOGUS4")
        self.assertEqual(lines, ["500 5.5.2 Error: command not recognized"])
        code, text, lines = c.reply()
        self.assertEqual((code, text.split(" ")[0]), (421, "4.7.0"), lines)
        self.assertTrue(c.closed())
        self.assertTrue(wait_for(lambda: 'reason="too many errors"' in self.postern.log()),
                        self.postern.log()[-2000:])

    def test_final_replies_survive_unread_pipelined_input(self):
        # The client pipelines far more than postern reads before it gives up: the replies,
        # the 421 included, must still arrive (no reset from closing with unread input).
        c = self.greet()
        c.send(b"BOGUS\r\n" * 10 + b"NOOP\r\n" * 20000)
        codes = []
        while True:
            code, _, _ = c.reply()
            codes.append(code)
            if code == 421:
                break
        self.assertEqual(codes, [500] * 5 + [421])
        self.assertTrue(c.closed())

    def test_mixed_errors_count(self):
        c = self.greet()
        self.assertEqual(c.cmd("RCPT TO:<b@example.net>")[0], 503)
        self.assertEqual(c.cmd("MAIL FROM:<bad address>")[0], 501)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org> FOO=1")[0], 555)
        self.assertEqual(c.cmd("EXPN x")[0], 502)
        self.assertEqual(c.cmd("NOOP")[0], 250)
        c.send("DATA\r\n")
        self.assertEqual(c.reply()[0], 503)
        self.assertEqual(c.reply()[0], 421)
        self.assertTrue(c.closed())

    def test_errors_are_counted_per_session(self):
        c = self.greet()
        for i in range(4):
            self.assertEqual(c.cmd(f"BOGUS{i}")[0], 500)
        d = self.greet()
        for i in range(4):
            self.assertEqual(d.cmd(f"BOGUS{i}")[0], 500)
        self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assertEqual(d.cmd("NOOP")[0], 250)


class TimeoutTest(LimitsTestCase):
    LISTENER = {"command_timeout": "1s", "data_timeout": "1s"}

    def test_command_timeout(self):
        c = self.greet()
        start = time.monotonic()
        code, text, lines = c.reply()
        elapsed = time.monotonic() - start
        self.assertEqual((code, text.split(" ")[0]), (421, "4.4.2"), lines)
        self.assertTrue(c.closed())
        self.assertGreater(elapsed, 0.8)
        self.assertLess(elapsed, 3.0)

    def test_trickled_command_line_is_cut_at_the_deadline(self):
        # command_timeout bounds a whole command line: an octet every 0.3 s does not extend it.
        c = self.greet()
        start = time.monotonic()
        answered = None
        for octet in b"NOOP with a very slow client":
            try:
                c.send(bytes([octet]))
            except OSError:
                break
            ready, _, _ = select.select([c.sock], [], [], 0.3)
            if ready:
                answered = time.monotonic() - start
                break
        self.assertIsNotNone(answered, "no reply while trickling")
        code, text, _ = c.reply()
        self.assertEqual((code, text.split(" ")[0]), (421, "4.4.2"))
        self.assertGreater(answered, 0.8)
        self.assertLess(answered, 2.0)

    def test_command_after_a_long_data_transfer_gets_a_fresh_deadline(self):
        # The message takes 2 s (each read well inside data_timeout); the next command starts in
        # the same segment as the end of data and is finished 0.5 s later: it must not inherit
        # a deadline from before the DATA.
        c = self.greet()
        self.transaction(c)
        self.assertEqual(c.cmd("DATA")[0], 354)
        for _ in range(4):
            c.send(b"X-Slow: line\r\n")
            time.sleep(0.5)
        c.send(b"\r\nbody\r\n.\r\nNOO")
        code, text, _ = c.reply()
        self.assertEqual(code, 250, text)
        time.sleep(0.5)
        c.send(b"P\r\n")
        self.assertEqual(c.reply()[0], 250)

    def test_activity_restarts_the_command_timer(self):
        c = self.greet()
        start = time.monotonic()
        for _ in range(4):
            time.sleep(0.5)
            self.assertEqual(c.cmd("NOOP")[0], 250)
        # 2 s of session, each gap shorter than the timeout: still open.
        self.assertGreater(time.monotonic() - start, 1.9)
        code, text, _ = c.reply()
        self.assertEqual(code, 421)

    def test_partial_command_line_then_silence_times_out(self):
        c = self.greet()
        c.send("NO")
        start = time.monotonic()
        code, text, lines = c.reply()
        elapsed = time.monotonic() - start
        self.assertEqual((code, text.split(" ")[0]), (421, "4.4.2"), lines)
        self.assertGreater(elapsed, 0.8)
        self.assertLess(elapsed, 3.0)
        self.assertTrue(c.closed())

    def test_timeout_before_ehlo(self):
        c = self.greet(ehlo=None)
        code, text, lines = c.reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(c.closed())

    def test_data_timeout(self):
        before = set(self.postern.messages())
        c = self.greet()
        self.transaction(c)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: slow\r\n\r\nfirst half\r\n")
        start = time.monotonic()
        code, text, lines = c.reply()
        elapsed = time.monotonic() - start
        self.assertEqual((code, text.split(" ")[0]), (421, "4.4.2"), lines)
        self.assertGreater(elapsed, 0.8)
        self.assertLess(elapsed, 3.0)
        self.assertTrue(c.closed())
        self.assertEqual(self.new_messages(before), {})


class MaxConnectionsTest(LimitsTestCase):
    LISTENER = {"max_connections": 3}

    def test_fourth_connection_refused(self):
        self.wait_sessions_closed()
        conns = [self.greet(source=src) for src in ("127.0.0.1", "127.0.0.1", "127.0.0.2")]
        extra = self.postern.connect(source="127.0.0.2")
        self.addCleanup(extra.close)
        code, text, lines = extra.reply()
        self.assertEqual(lines, ["421 4.7.0 Error: too many connections"])
        self.assertTrue(extra.closed())
        # The three admitted sessions are unaffected.
        for c in conns:
            self.assertEqual(c.cmd("NOOP")[0], 250)
        # Releasing one slot admits a new connection.
        self.assertEqual(conns[0].cmd("QUIT")[0], 221)
        self.assertTrue(conns[0].closed())
        self.wait_sessions_closed(open_sessions=2)
        again = self.greet()
        self.assertEqual(again.cmd("NOOP")[0], 250)
        self.assertIn("reason=max_connections", self.postern.log())


class MaxConnectionsPerIpTest(LimitsTestCase):
    LISTENER = {"max_connections": 3, "max_connections_per_ip": 2}

    def test_per_address_limit(self):
        self.wait_sessions_closed()
        first = [self.greet(), self.greet()]
        third = self.postern.connect()
        self.addCleanup(third.close)
        code, text, lines = third.reply()
        self.assertEqual(lines, ["421 4.7.0 Error: too many connections from your address"])
        self.assertTrue(third.closed())
        # Another address still gets in.
        other = self.greet(source="127.0.0.2")
        self.assertEqual(other.cmd("NOOP")[0], 250)
        for c in first:
            self.assertEqual(c.cmd("NOOP")[0], 250)
        # Slots are given back when a session ends, even without QUIT.
        first[0].close()
        self.wait_sessions_closed(open_sessions=2)
        again = self.greet()
        self.assertEqual(again.cmd("NOOP")[0], 250)
        # And the refused connection did not leak a slot: 127.0.0.1 is at 2 again.
        refused = self.postern.connect()
        self.addCleanup(refused.close)
        self.assertEqual(refused.reply()[0], 421)
        self.assertIn("reason=max_connections_per_ip", self.postern.log())


if __name__ == "__main__":
    unittest.main()
