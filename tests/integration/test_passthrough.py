"""delivery = "passthrough": the client's transaction is relayed live. MAIL is answered locally;
at the first RCPT postern takes an upstream connection from the pool and sends MAIL and RCPT;
from then on the upstream's replies (code, enhanced code, text) are the client's replies, at
RCPT and at the end of the data. The message arrives byte-exact but for postern's Received
header. Routes pick the upstream by [[route_rule]]."""
import threading
import unittest

from harness import SmtpConn, free_port, strip_received
from upstreams import RelayTestCase, closed_port


class PassthroughTest(RelayTestCase):

    def setUp(self):
        super().setUp()
        self.up = self.upstream(tls="starttls", users={"app": "s3cret"}, auth_required=True)
        self.p = self.postern({"hosts": [self.up.address], "username": "app",
                               "password": "s3cret"})

    def test_recipient_refusal_reaches_the_client_and_others_get_the_mail(self):
        c = self.client(self.p)
        self.assertEqual(c.cmd("MAIL FROM:<app@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<refuse@example.net>")[:2],
                         (550, "5.1.1 No such user here"))
        self.assertEqual(c.cmd("RCPT TO:<ok@example.net>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<defer@example.net>")[:2], (451, "4.3.0 Try later"))
        self.assertEqual(c.cmd("DATA")[0], 354)
        body = b"Subject: partial\r\n\r\nx\r\n"
        code, text, _ = c.cmd(body.decode() + ".")
        self.assertEqual(code, 250, text)
        [m] = self.up.wait_messages(1)
        self.assertEqual(m["rcpt_tos"], ["ok@example.net"])
        self.assertEqual(strip_received(m["data"]), body)
        # postern's Received header names only the recipients the upstream took, or none.
        received = m["data"][:m["data"].index(b"\r\n\r\n")]
        self.assertNotIn(b"refuse@example.net", received)
        self.wait_event(self.p, "relayed")

    def test_only_refused_recipients(self):
        result = self.send(self.p, rcpts=["refuse@example.net", "refuse2@example.net"])
        self.assertEqual(result["rcpt"], [(550, "5.1.1 No such user here")] * 2)
        self.assertIsNone(result["data"])
        self.assertEqual(self.up.messages(), [])

    def test_end_of_data_reply_reaches_the_client(self):
        result = self.send(self.p, body=b"Subject: full\r\nX-Test-Reply: 452\r\n\r\nx\r\n")
        self.assertEqual(result["rcpt"][0][0], 250)
        self.assertEqual(result["data"], (452, "4.3.1 Insufficient system storage"))
        result = self.send(self.p, body=b"Subject: no\r\nX-Test-Reply: 554 5.7.1 Go away\r\n"
                                        b"\r\nx\r\n")
        self.assertEqual(result["data"], (554, "5.7.1 Go away"))
        self.assertEqual(self.up.messages(), [])

    def test_connection_lost_at_end_of_data_is_a_temporary_failure(self):
        result = self.send(self.p, body=b"Subject: drop\r\nX-Test-Reply: drop\r\n\r\nx\r\n")
        code, text = result["data"]
        self.assertTrue(400 <= code < 500, result)
        # The pool recovers: the next message goes over a new connection.
        result = self.send(self.p)
        self.assertEqual(result["data"][0], 250, result)
        self.assertEqual(len(self.up.wait_messages(1)), 1)

    def test_sender_refusal_reaches_the_client_at_rcpt(self):
        up = self.upstream(tls="starttls", mail_replies={"badsender": "553 5.7.1 Not you"})
        p = self.postern({"hosts": [up.address]})
        result = self.send(p, mail_from="badsender@example.org")
        self.assertEqual(result["mail"][0], 250)  # local
        code, text = result["rcpt"][0]
        self.assertTrue(code >= 400, result)
        self.assertIsNone(result["data"])
        self.assertEqual(up.messages(), [])

    def test_message_is_byte_exact_with_8bit_and_dots(self):
        body = (b"From: a@example.org\r\nTo: b@example.net\r\nSubject: exact\r\n"
                b"X-Odd:  two  spaces\t tab\r\n\r\n"
                b"line one\r\n..dot-stuffed line\r\n.\r\nnot the end\r\n"
                b"\xc3\xa9 8-bit\r\n \r\n" + b"x" * 990 + b"\r\n\r\n")
        result = self.send(self.p, mail_from="a@example.org", rcpts=["b@example.net"],
                           body=body, mail_params="BODY=8BITMIME")
        self.assertEqual(result["data"][0], 250, result)
        [m] = self.up.wait_messages(1)
        self.assertEqual(strip_received(m["data"]), body)
        self.assertIn("BODY=8BITMIME", m["mail_options"])
        self.assertTrue(m["data"].startswith(b"Received: from client.test ([127.0.0.1])\r\n"),
                        m["data"][:200])

    def test_smtputf8_addresses(self):
        result = self.send(self.p, mail_from="\u00fcser@example.org",
                           rcpts=["j\u00f6rg@b\u00fccher.example"],
                           body="Subject: caf\u00e9\r\n\r\n\u00e9\r\n".encode(),
                           mail_params="SMTPUTF8 BODY=8BITMIME")
        self.assertEqual(result["data"][0], 250, result)
        [m] = self.up.wait_messages(1)
        self.assertTrue(m["smtputf8"])
        self.assertEqual(m["mail_from"], "\u00fcser@example.org")
        self.assertEqual(m["rcpt_tos"], ["j\u00f6rg@b\u00fccher.example"])

    def test_dsn_parameters_are_not_sent_to_a_server_without_dsn(self):
        # aiosmtpd does not offer DSN and refuses RET/ENVID/NOTIFY/ORCPT with 555.
        c = self.client(self.p)
        self.assertEqual(c.cmd("MAIL FROM:<app@example.org> RET=HDRS ENVID=abc")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<someone@example.net> NOTIFY=FAILURE "
                               "ORCPT=rfc822;someone@example.net")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        self.assertEqual(c.cmd("Subject: dsn\r\n\r\nx\r\n.")[0], 250)
        [m] = self.up.wait_messages(1)
        self.assertNotIn("RET=", m["mail_line"].upper())
        self.assertEqual(m["rcpt_options"], [])

    def test_bdat_from_the_client_becomes_data_upstream(self):
        # aiosmtpd has no CHUNKING: postern must send DATA, dot-stuffing what needs it.
        c = self.client(self.p)
        self.assertEqual(c.cmd("MAIL FROM:<app@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<someone@example.net>")[0], 250)
        parts = [b"Subject: chunks\r\n\r\n", b".first\r\n.\r\n", b"..second\r\nlast\r\n"]
        c.send(b"BDAT %d\r\n%s" % (len(parts[0]), parts[0]))
        self.assertEqual(c.reply()[0], 250)
        c.send(b"BDAT %d\r\n%sBDAT %d LAST\r\n%s" % (len(parts[1]), parts[1], len(parts[2]),
                                                     parts[2]))
        self.assertEqual(c.reply()[0], 250)
        code, text, _ = c.reply()
        self.assertEqual(code, 250, text)
        [m] = self.up.wait_messages(1)
        self.assertEqual(strip_received(m["data"]), b"".join(parts))

    def test_several_transactions_in_one_session(self):
        c = self.client(self.p)
        first = self.transaction(c, "a@example.org", ["one@example.net"],
                                 b"Subject: 1\r\n\r\nx\r\n", quit=False)
        self.assertEqual(c.cmd("RSET")[0], 250)
        # A transaction abandoned after RCPT (the upstream transaction must be reset too).
        self.assertEqual(c.cmd("MAIL FROM:<b@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<abandoned@example.net>")[0], 250)
        self.assertEqual(c.cmd("RSET")[0], 250)
        second = self.transaction(c, "c@example.org", ["two@example.net", "three@example.net"],
                                  b"Subject: 2\r\n\r\ny\r\n")
        self.assertEqual(first["data"][0], 250, first)
        self.assertEqual(second["data"][0], 250, second)
        messages = self.up.wait_messages(2)
        self.assertEqual([(m["mail_from"], m["rcpt_tos"]) for m in messages],
                         [("a@example.org", ["one@example.net"]),
                          ("c@example.org", ["two@example.net", "three@example.net"])])

    def test_pipelined_client_gets_upstream_replies_in_order(self):
        c = self.client(self.p)
        c.send("MAIL FROM:<app@example.org>\r\nRCPT TO:<ok1@example.net>\r\n"
               "RCPT TO:<refuse@example.net>\r\nRCPT TO:<ok2@example.net>\r\nDATA\r\n")
        replies = [c.reply()[:2] for _ in range(5)]
        self.assertEqual([code for code, _ in replies], [250, 250, 550, 250, 354], replies)
        self.assertEqual(replies[2][1], "5.1.1 No such user here")
        code, text, _ = c.cmd("Subject: pipelined\r\n\r\nx\r\n.")
        self.assertEqual(code, 250, text)
        [m] = self.up.wait_messages(1)
        self.assertEqual(m["rcpt_tos"], ["ok1@example.net", "ok2@example.net"])

    def test_client_quits_mid_transaction(self):
        c = self.client(self.p)
        self.assertEqual(c.cmd("MAIL FROM:<app@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<someone@example.net>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: half\r\n\r\nhalf a mess")
        c.close()
        # Nothing is delivered, and the next client is served normally.
        self.assertEqual(self.send(self.p)["data"][0], 250)
        messages = self.up.wait_messages(1)
        self.assertEqual(len(messages), 1)
        self.assertIn(b"Subject: relay test", messages[0]["data"])

    def test_concurrent_clients(self):
        results = []

        def one(i):
            c = self.client(self.p)
            results.append(self.transaction(c, f"s{i}@example.org", [f"r{i}@example.net"],
                                            b"Subject: %d\r\n\r\nx\r\n" % i))
        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual([r["data"][0] for r in results], [250] * 8, results)
        messages = self.up.wait_messages(8)
        self.assertEqual(sorted((m["mail_from"], m["rcpt_tos"][0]) for m in messages),
                         sorted((f"s{i}@example.org", f"r{i}@example.net") for i in range(8)))


class ChunkingUpstreamTest(RelayTestCase):

    def test_upstream_with_chunking_gets_the_exact_bytes_by_bdat(self):
        fake = self.fake(ehlo_tls=("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING"))
        p = self.postern({"hosts": [fake.address]})
        body = (b"Subject: bdat\r\n\r\n.leading dot\r\n.\r\nafter a lone dot\r\n"
                b"\xc3\xa9\r\n")
        result = self.send(p, body=body, mail_params="BODY=8BITMIME")
        self.assertEqual(result["data"][0], 250, result)
        [payload] = fake.messages
        self.assertEqual(strip_received(payload), body)
        self.assertIn("BDAT", fake.verbs(tls=True))
        self.assertNotIn("DATA", fake.verbs())
        self.assertEqual(fake.verbs(tls=False), ["EHLO", "STARTTLS"])


class UnreachableTest(RelayTestCase):

    def test_mail_is_local_and_rcpt_gets_451(self):
        p = self.postern({"hosts": [f"127.0.0.1:{closed_port()}"]})
        c = self.client(p)
        self.assertEqual(c.cmd("MAIL FROM:<app@example.org>")[0], 250)
        self.assertTempFail(c.cmd("RCPT TO:<someone@example.net>")[:2])
        # Still no upstream: every further RCPT of the transaction is refused the same way.
        self.assertTempFail(c.cmd("RCPT TO:<other@example.net>")[:2])
        self.assertIn(c.cmd("DATA")[0], (503, 554))
        self.assertEqual(c.cmd("QUIT")[0], 221)


class RouteRuleTest(RelayTestCase):

    def test_rules_pick_the_upstream(self):
        default = self.upstream(tls="starttls")
        other = self.upstream(tls="starttls")
        second_port = free_port()
        p = self.postern(upstreams={"smart": {"hosts": [default.address]},
                                    "other": {"hosts": [other.address]}},
                         routes={"default": {"upstream": "smart"},
                                 "other": {"upstream": "other"}},
                         extra_toml='[[listener]]\n'
                                    'name = "another"\n'
                                    f'address = "127.0.0.1:{second_port}"\n'
                                    'trusted_networks = ["127.0.0.0/8"]\n'
                                    'delivery = "passthrough"\n'
                                    '[[route_rule]]\n'
                                    'sender_domain = ["example.com", "*.example.org"]\n'
                                    'route = "other"\n'
                                    '[[route_rule]]\n'
                                    'recipient_domain = "b.test"\n'
                                    'listener = ["test"]\n'
                                    'route = "other"\n'
                                    '[[route_rule]]\n'
                                    'recipient_domain = "c.test"\n'
                                    'sender_domain = "example.net"\n'
                                    'listener = ["another"]\n'
                                    'route = "other"\n')
        cases = [  # listener port, sender, recipient, the upstream that must get it
            (p.port, "a@example.com", "x@a.test", other),
            (p.port, "a@Sub.Example.Org", "x@a.test", other),
            (p.port, "a@example.org", "x@a.test", default),  # *.example.org: subdomains only
            (p.port, "a@notexample.com", "x@a.test", default),
            (p.port, "a@example.net", "x@B.test", other),
            (second_port, "a@example.net", "x@b.test", default),  # rule of the other listener
            (p.port, "a@example.net", "x@c.test", default),
            (second_port, "a@example.net", "x@c.test", other),
            (second_port, "a@example.com", "x@c.test", other),
            (second_port, "a@example.info", "x@c.test", default),  # both conditions must hold
        ]
        for port, sender, rcpt, _ in cases:
            c = SmtpConn(("127.0.0.1", port), timeout=15)
            self.addCleanup(c.close)
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.test")[0], 250)
            result = self.transaction(c, sender, [rcpt], b"Subject: route\r\n\r\nx\r\n")
            self.assertEqual(result["data"][0], 250, (port, sender, rcpt, result))
        for up in (other, default):
            want = [(s, [r]) for _, s, r, u in cases if u is up]
            got = [(m["mail_from"], m["rcpt_tos"]) for m in up.wait_messages(len(want))]
            self.assertEqual(got, want, "other" if up is other else "default")


if __name__ == "__main__":
    unittest.main()
