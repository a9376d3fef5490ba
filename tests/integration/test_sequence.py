"""RFC 5321 command sequence and syntax: the order of commands, the replies of every verb, the
enhanced status codes (RFC 2034: only after EHLO), the EHLO keywords, address and parameter
syntax, and command lines holding a bare LF, bare CR or NUL."""
import socket
import unittest

from harness import wait_for, PosternTestCase

# DSN is not advertised until something honours NOTIFY (the queue issue); its parameters are
# still accepted and kept on the envelope.
EHLO_KEYWORDS = ["PIPELINING", "SIZE 26214400", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
                 "CHUNKING"]


class SequenceTest(PosternTestCase):

    def connect(self):
        """A connection that has read the greeting and sent no EHLO/HELO."""
        return self.greet(ehlo=None)

    def assertReply(self, reply, code, enhanced=None, text=None):
        """reply is (code, last-line text, lines). enhanced: the RFC 3463 code expected at the
        start of the text, or "" for none."""
        got_code, got_text, lines = reply
        self.assertEqual(got_code, code, lines)
        if enhanced is not None:
            first = got_text.split(" ", 1)[0]
            looks_enhanced = first.count(".") == 2 and first.replace(".", "").isdigit()
            if enhanced == "":
                self.assertFalse(looks_enhanced, f"unexpected enhanced code: {lines}")
            else:
                self.assertEqual(first, enhanced, lines)
        if text is not None:
            self.assertIn(text, got_text, lines)

    # --- order of commands ---------------------------------------------------------------

    def test_mail_before_ehlo(self):
        c = self.connect()
        # No EHLO yet: no enhanced code in any reply (RFC 2034 3).
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 503, "",
                         "Error: send EHLO or HELO first")
        self.assertReply(c.cmd("NOOP"), 250, "", "Ok")
        # The session goes on normally once greeted.
        self.assertReply(c.cmd("EHLO client.test"), 250)
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 250, "2.1.0")

    def test_rcpt_before_mail(self):
        c = self.greet()
        self.assertReply(c.cmd("RCPT TO:<b@example.net>"), 503, "5.5.1", "need MAIL")

    def test_data_without_recipient(self):
        c = self.greet()
        self.assertReply(c.cmd("DATA"), 503, "5.5.1", "need MAIL")
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 250, "2.1.0")
        self.assertReply(c.cmd("DATA"), 503, "5.5.1", "need RCPT")
        # A refused recipient does not count as an accepted one.
        self.assertReply(c.cmd("RCPT TO:<bad address>"), 501, "5.1.3")
        self.assertReply(c.cmd("DATA"), 503, "5.5.1", "need RCPT")
        # And no 354 went out: the next command is answered as a command.
        self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_nested_mail(self):
        c = self.greet()
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 250, "2.1.0")
        self.assertReply(c.cmd("MAIL FROM:<b@example.org>"), 503, "5.5.1", "nested MAIL")
        # The first transaction is still open.
        self.assertReply(c.cmd("RCPT TO:<c@example.net>"), 250, "2.1.5")

    def test_rset_resets_the_transaction(self):
        c = self.greet()
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 250, "2.1.0")
        self.assertReply(c.cmd("RCPT TO:<b@example.net>"), 250, "2.1.5")
        self.assertReply(c.cmd("RSET"), 250, "2.0.0")
        self.assertReply(c.cmd("RCPT TO:<b@example.net>"), 503, "5.5.1")
        self.assertReply(c.cmd("DATA"), 503, "5.5.1")
        self.assertReply(c.cmd("MAIL FROM:<x@example.org>"), 250, "2.1.0")
        self.assertReply(c.cmd("RCPT TO:<y@example.net>"), 250, "2.1.5")
        self.assertEqual(c.cmd("DATA")[0], 354)
        code, text, _ = c.cmd("Subject: after rset\r\n\r\nx\r\n.")
        self.assertEqual(code, 250, text)
        qid = text.rsplit(" ", 1)[1]
        env = self.postern.messages()[qid][1]
        self.assertEqual(env["mail_from"], "x@example.org")
        self.assertEqual([r["address"] for r in env["recipients"]], ["y@example.net"])

    def test_rset_takes_no_argument(self):
        c = self.greet()
        self.assertReply(c.cmd("RSET now"), 501, "5.5.4")

    def test_second_ehlo_resets_the_transaction(self):
        c = self.greet()
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 250, "2.1.0")
        self.assertReply(c.cmd("RCPT TO:<b@example.net>"), 250, "2.1.5")
        self.assertReply(c.cmd("EHLO again.test"), 250)
        self.assertReply(c.cmd("DATA"), 503, "5.5.1", "need MAIL")
        self.assertReply(c.cmd("RCPT TO:<b@example.net>"), 503, "5.5.1")
        # Not "nested": the first MAIL is gone.
        self.assertReply(c.cmd("MAIL FROM:<z@example.org>"), 250, "2.1.0")

    # --- HELO, EHLO and enhanced status codes -------------------------------------------

    def test_helo_single_line_and_no_enhanced_codes(self):
        c = self.connect()
        code, text, lines = c.cmd("HELO client.test")
        self.assertEqual(code, 250)
        self.assertEqual(lines, ["250 postern.test"])
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 250, "", "Ok")
        self.assertReply(c.cmd("RCPT TO:<b@example.net>"), 250, "", "Ok")
        self.assertReply(c.cmd("RCPT TO:<bad address>"), 501, "", "Bad recipient address")
        self.assertReply(c.cmd("MAIL FROM:<c@example.org>"), 503, "", "nested MAIL")
        self.assertReply(c.cmd("XYZZY"), 500, "", "command not recognized")
        self.assertReply(c.cmd("VRFY someone"), 252, "")
        self.assertReply(c.cmd("RSET"), 250, "", "Ok")
        self.assertReply(c.cmd("MAIL FROM:<a@example.org> FOO=1"), 555, "")
        self.assertEqual(c.cmd("QUIT")[2], ["221 Bye"])

    def test_helo_message_is_stored_as_smtp(self):
        c = self.connect()
        self.assertEqual(c.cmd("HELO old.client.test")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.net>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        code, text, _ = c.cmd("Subject: helo\r\n\r\nx\r\n.")
        self.assertEqual(code, 250)
        self.assertTrue(text.startswith("Ok: queued as "), text)
        env = self.postern.messages()[text.rsplit(" ", 1)[1]][1]
        self.assertEqual(env["protocol"], "SMTP")
        self.assertEqual(env["helo"], "old.client.test")

    def test_every_reply_after_ehlo_has_an_enhanced_code(self):
        c = self.greet()
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 250, "2.1.0", "Ok")
        self.assertReply(c.cmd("RCPT TO:<b@example.net>"), 250, "2.1.5", "Ok")
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 503, "5.5.1")
        self.assertReply(c.cmd("RCPT TO:<b@example.net> NOTIFY=SOMETIMES"), 501, "5.5.4")
        self.assertReply(c.cmd("RCPT TO:b@example.net"), 501, "5.5.4")
        self.assertReply(c.cmd("RSET"), 250, "2.0.0")
        self.assertReply(c.cmd("MAIL FROM:a@example.org"), 501, "5.5.4")
        self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
        self.assertReply(c.cmd("VRFY someone"), 252, "2.5.0")
        self.assertReply(c.cmd("HELP"), 214, "2.0.0")
        self.assertReply(c.cmd("EXPN list"), 502, "5.5.1")
        self.assertReply(c.cmd("XYZZY"), 500, "5.5.2")
        self.assertReply(c.cmd("QUIT"), 221, "2.0.0", "Bye")

    def test_ehlo_keywords(self):
        c = self.connect()
        code, _, lines = c.cmd("EHLO client.test")
        self.assertEqual(code, 250)
        self.assertEqual(lines[0], "250-postern.test")
        self.assertTrue(all(line.startswith("250-") for line in lines[:-1]), lines)
        self.assertTrue(lines[-1].startswith("250 "), lines)
        self.assertEqual([line[4:] for line in lines[1:]], EHLO_KEYWORDS)

    def test_ehlo_address_literal(self):
        c = self.connect()
        self.assertEqual(c.cmd("EHLO [127.0.0.1]")[0], 250)
        self.assertEqual(c.cmd("EHLO [IPv6:::1]")[0], 250)
        # Trailing spaces are tolerated (as Postfix does); the name is kept without them.
        self.assertEqual(c.cmd("EHLO spaced.test  ")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.net>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        code, text, _ = c.cmd("Subject: s\r\n\r\nx\r\n.")
        self.assertEqual(code, 250, text)
        self.assertEqual(self.postern.messages()[text.rsplit(" ", 1)[1]][1]["helo"], "spaced.test")

    def test_esmtp_only_after_ehlo(self):
        c = self.connect()
        self.assertEqual(c.cmd("HELO client.test")[0], 250)
        self.assertReply(c.cmd("MAIL FROM:<a@example.org> SIZE=10"), 555, "", "require EHLO")
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 250)
        self.assertReply(c.cmd("RCPT TO:<b@example.net> NOTIFY=NEVER"), 555, "", "require EHLO")
        self.assertReply(c.cmd("RCPT TO:<b@example.net>"), 250)
        # BDAT after HELO is refused, and its chunk is still read (never run as commands).
        c.send(b"BDAT 6\r\nQUIT\r\n")
        self.assertReply(c.reply(), 503, "", "BDAT requires EHLO")
        self.assertReply(c.cmd("NOOP"), 250)

    def test_bare_ip_in_ehlo_and_ipv6_in_source_route(self):
        c = self.connect()
        self.assertEqual(c.cmd("EHLO 192.0.2.7")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<@[IPv6:::1]:b@example.net>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@1.2.3.999>")[0], 501)

    def test_auth_arguments_are_never_logged(self):
        c = self.connect()
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        self.assertEqual(c.cmd("AUTH PLAIN AHVzZXIAc2VjcmV0cGFzcw==")[0], 502)
        c.send(b"AUTH PLAIN AHVzZXIAc2VjcmV0MjI=\n")  # refused for its bare LF: not logged either
        self.assertEqual(c.reply()[0], 500)
        c.cmd("QUIT")
        self.assertTrue(wait_for(lambda: "cmd=AUTH" in self.postern.log()))
        self.assertNotIn("AHVzZXIAc2VjcmV0cGFzcw", self.postern.log())
        self.assertNotIn("AHVzZXIAc2VjcmV0MjI", self.postern.log())

    def test_ehlo_without_or_with_invalid_argument(self):
        c = self.connect()
        for line in ["EHLO", "EHLO ", "EHLO bad..domain", "EHLO -bad.example",
                     "EHLO a b", "EHLO [300.1.1.1]",
                     "HELO", "HELO exa mple"]:
            with self.subTest(line=line):
                # Not greeted yet: no enhanced code.
                self.assertReply(c.cmd(line), 501, "", "Syntax")
        # None of them counted as a greeting.
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 503, "", "send EHLO or HELO")
        # After a good EHLO, a bad one is refused with an enhanced code and the session is
        # still greeted.
        self.assertReply(c.cmd("EHLO client.test"), 250)
        self.assertReply(c.cmd("EHLO"), 501, "5.5.4")
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 250, "2.1.0")

    # --- the other verbs ------------------------------------------------------------------

    def test_vrfy_help_noop(self):
        c = self.greet()
        self.assertReply(c.cmd("VRFY postmaster"), 252, "2.5.0", "Cannot VRFY")
        code, text, lines = c.cmd("HELP")
        self.assertEqual(code, 214, lines)
        self.assertIn("EHLO", text)
        self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
        self.assertReply(c.cmd("noop"), 250, "2.0.0")  # verbs are case-insensitive

    def test_vrfy_without_argument(self):
        # RFC 5321 4.1.1.6: vrfy = "VRFY" SP String CRLF; without its argument the command is
        # a syntax error (501, RFC 5321 4.2.4), as Postfix answers "501 5.5.4 Syntax: VRFY
        # address".
        c = self.greet()
        self.assertReply(c.cmd("VRFY"), 501, "5.5.4")

    def test_quit_closes(self):
        c = self.greet()
        self.assertReply(c.cmd("QUIT"), 221, "2.0.0")
        self.assertTrue(c.closed())
        self.assertEqual(c.buf, b"")  # nothing after the 221

    def test_client_that_talks_before_the_greeting(self):
        # The first read of a new connection waits for epoll instead of trying recv() first
        # (proxy/server/accept.cpp): commands that were already there when the connection was
        # accepted must still be read. Many connections at once, so that some are accepted
        # together and their data is there before their session first reads.
        conns = []
        for _ in range(30):
            s = socket.create_connection(("127.0.0.1", self.postern.port), timeout=10)
            s.sendall(b"EHLO early.test\r\nQUIT\r\n")
            conns.append(s)
        for s in conns:
            received = b""
            while True:
                chunk = s.recv(4096)  # a hang here fails with the socket timeout
                if not chunk:
                    break
                received += chunk
            s.close()
            codes = [line[:4] for line in received.split(b"\r\n") if line[3:4] == b" "]
            self.assertEqual(codes, [b"220 ", b"250 ", b"221 "], received)

    def test_unknown_command(self):
        c = self.greet()
        self.assertReply(c.cmd("XYZZY"), 500, "5.5.2", "not recognized")
        self.assertReply(c.cmd("MAILFROM:<a@example.org>"), 500, "5.5.2")
        self.assertReply(c.cmd(""), 500, "5.5.2")
        self.assertReply(c.cmd("NOOP"), 250)

    def test_expn_not_supported(self):
        c = self.greet()
        self.assertReply(c.cmd("EXPN staff"), 502, "5.5.1")

    def test_starttls_and_auth_not_implemented(self):
        c = self.greet()
        self.assertReply(c.cmd("STARTTLS"), 502, "5.5.1")
        self.assertReply(c.cmd("AUTH PLAIN AGFAAGI="), 502, "5.5.1")
        # Still plain SMTP: no TLS handshake was expected from us.
        self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    # --- addresses ------------------------------------------------------------------------

    def test_bad_sender_syntax(self):
        c = self.greet()
        for addr in ["<bad address>", "<a@@example.org>", "<a@example..org>", "<@example.org>",
                     "<a@>", "<a@example.org", "<a b@example.org>"]:
            with self.subTest(addr=addr):
                self.assertReply(c.cmd("MAIL FROM:" + addr), 501, None)
                code, text, lines = c.cmd("NOOP")  # never a transaction
                self.assertEqual(code, 250)
        self.assertReply(c.cmd("MAIL FROM:<a@@example.org>"), 501, "5.1.7")
        self.assertReply(c.cmd("MAIL FROM:<bad address>"), 501, "5.1.7")
        self.assertReply(c.cmd("RCPT TO:<b@example.net>"), 503, "5.5.1")

    def test_bad_recipient_syntax(self):
        c = self.greet()
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 250, "2.1.0")
        for addr in ["<bad address>", "<b@@example.net>", "<b@example..net>", "<b@>", "<>"]:
            with self.subTest(addr=addr):
                self.assertReply(c.cmd("RCPT TO:" + addr), 501, "5.1.3")
        self.assertReply(c.cmd("DATA"), 503, "5.5.1", "need RCPT")

    def test_null_sender(self):
        c = self.greet()
        self.assertReply(c.cmd("MAIL FROM:<>"), 250, "2.1.0")
        self.assertReply(c.cmd("RCPT TO:<b@example.net>"), 250, "2.1.5")
        self.assertEqual(c.cmd("DATA")[0], 354)
        code, text, _ = c.cmd("Subject: bounce\r\n\r\nx\r\n.")
        self.assertEqual(code, 250, text)
        env = self.postern.messages()[text.rsplit(" ", 1)[1]][1]
        self.assertEqual(env["mail_from"], "")

    def test_postmaster_recipient(self):
        c = self.greet()
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 250, "2.1.0")
        self.assertReply(c.cmd("RCPT TO:<postmaster>"), 250, "2.1.5")
        self.assertReply(c.cmd("RCPT TO:<Postmaster>"), 250, "2.1.5")
        self.assertReply(c.cmd("RCPT TO:<someoneelse>"), 501, "5.1.3")
        # The null path is a reverse-path only.
        self.assertReply(c.cmd("RCPT TO:<>"), 501, "5.1.3")

    def test_source_route_is_dropped(self):
        c = self.greet()
        self.assertReply(c.cmd("MAIL FROM:<@relay.example.org:a@example.org>"), 250, "2.1.0")
        self.assertReply(c.cmd("RCPT TO:<@hop1.example,@hop2.example:user@example.net>"), 250,
                         "2.1.5")
        self.assertEqual(c.cmd("DATA")[0], 354)
        code, text, _ = c.cmd("Subject: routed\r\n\r\nx\r\n.")
        self.assertEqual(code, 250, text)
        env = self.postern.messages()[text.rsplit(" ", 1)[1]][1]
        self.assertEqual([r["address"] for r in env["recipients"]], ["user@example.net"])
        self.assertEqual(env["mail_from"], "a@example.org")

    def test_utf8_address_needs_smtputf8(self):
        c = self.greet()
        self.assertReply(c.cmd("MAIL FROM:<j\u00f6rg@example.org>"), 553, "5.6.7")
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 250, "2.1.0")
        self.assertReply(c.cmd("RCPT TO:<\u00fcser@example.net>"), 553, "5.6.7")
        self.assertReply(c.cmd("RCPT TO:<user@b\u00fccher.example>"), 553, "5.6.7")
        self.assertReply(c.cmd("RSET"), 250)
        self.assertReply(c.cmd("MAIL FROM:<j\u00f6rg@example.org> SMTPUTF8"), 250, "2.1.0")
        self.assertReply(c.cmd("RCPT TO:<\u00fcser@b\u00fccher.example>"), 250, "2.1.5")
        self.assertEqual(c.cmd("DATA")[0], 354)
        code, text, _ = c.cmd("Subject: utf8\r\n\r\nx\r\n.")
        self.assertEqual(code, 250, text)
        env = self.postern.messages()[text.rsplit(" ", 1)[1]][1]
        self.assertEqual(env["mail_from"], "j\u00f6rg@example.org")
        self.assertEqual(env["recipients"][0]["address"], "\u00fcser@b\u00fccher.example")

    # --- parameters -----------------------------------------------------------------------

    def test_unknown_mail_parameter(self):
        c = self.greet()
        self.assertReply(c.cmd("MAIL FROM:<a@example.org> XFOO=bar"), 555, "5.5.4")
        # AUTH= (RFC 4954 5) is known: checked, then not passed on.
        self.assertReply(c.cmd("MAIL FROM:<a@example.org> AUTH=<>"), 250, "2.1.0")
        self.assertReply(c.cmd("RSET"), 250, "2.0.0")
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 250, "2.1.0")  # no transaction
        self.assertReply(c.cmd("RCPT TO:<b@example.net> XFOO"), 555, "5.5.4")

    def test_malformed_body_parameter(self):
        c = self.greet()
        for params in ["BODY=", "BODY", "BODY=9BIT", "BODY=BINARYMIME", "BODY=8BITMIME=x"]:
            with self.subTest(params=params):
                self.assertReply(c.cmd("MAIL FROM:<a@example.org> " + params), 501, "5.5.4")
        self.assertReply(c.cmd("MAIL FROM:<a@example.org> body=7bit"), 250, "2.1.0")

    def test_space_after_colon_accepted(self):
        c = self.greet()
        self.assertReply(c.cmd("MAIL FROM: <a@example.org>"), 250, "2.1.0")
        self.assertReply(c.cmd("RCPT TO: <b@example.net>"), 250, "2.1.5")
        self.assertEqual(c.cmd("DATA")[0], 354)
        code, text, _ = c.cmd("Subject: space\r\n\r\nx\r\n.")
        self.assertEqual(code, 250, text)
        env = self.postern.messages()[text.rsplit(" ", 1)[1]][1]
        self.assertEqual(env["mail_from"], "a@example.org")
        self.assertEqual(env["recipients"][0]["address"], "b@example.net")

    # --- command-line framing -------------------------------------------------------------

    def test_bare_lf_in_command_line(self):
        c = self.greet()
        # A line ends at its LF; one that ends with a bare LF is refused whole, so this MAIL
        # never runs. What follows the LF is the next line (docs/smtp.md, strict framing).
        c.send(b"MAIL FROM:<a@example.org>\nRCPT TO:<b@example.net>\r\nNOOP\r\n")
        self.assertReply(c.reply(), 500, "5.5.2", "bare <CR>, bare <LF>")
        self.assertReply(c.reply(), 503, "5.5.1", "need MAIL")  # the MAIL did not run
        self.assertReply(c.reply(), 250, "2.0.0")
        self.assertReply(c.cmd("MAIL FROM:<c@example.org>"), 250, "2.1.0")

    def test_bare_lf_alone(self):
        c = self.greet()
        c.send(b"NOOP\n")
        self.assertReply(c.reply(), 500, "5.5.2")
        self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_nul_in_command_line(self):
        c = self.greet()
        self.assertReply(c.cmd("MAIL FROM:<a\x00@example.org>"), 500, "5.5.2")
        self.assertReply(c.cmd("NOOP\x00"), 500, "5.5.2")
        self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
        # The MAIL with a NUL did not open a transaction.
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 250, "2.1.0")

    def test_bare_cr_in_command_line(self):
        c = self.greet()
        c.send(b"MAIL FROM:<a@example.org>\rRCPT TO:<b@example.net>\r\n")
        self.assertReply(c.reply(), 500, "5.5.2")
        # One line, one reply: the next reply belongs to the NOOP.
        self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 250, "2.1.0")

    def test_bad_line_before_ehlo_has_no_enhanced_code(self):
        c = self.connect()
        c.send(b"EHLO client.test\n")
        self.assertReply(c.reply(), 500, "", "bare <CR>, bare <LF>")
        self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 503, "")


if __name__ == "__main__":
    unittest.main()
