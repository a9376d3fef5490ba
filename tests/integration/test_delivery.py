"""Delivery into the outbox: byte-exact storage, envelope sidecar, swaks and smtplib clients,
PIPELINING, BDAT, concurrency."""
import re
import smtplib
import subprocess
import threading
import unittest

from harness import QUEUED, PosternTestCase, strip_received



class DeliveryTest(PosternTestCase):
    # 200 clients at once from 127.0.0.1 (the default per-address cap is 50).
    LISTENER = {"max_connections_per_ip": 500}

    def queued_id(self, code, text):
        self.assertEqual(code, 250, text)
        m = QUEUED.match(text)
        self.assertIsNotNone(m, text)
        return m.group(1)

    def test_swaks_delivers_into_outbox(self):
        out = subprocess.run(["swaks", "--server", f"127.0.0.1:{self.postern.port}",
                              "--to", "someone@example.net", "--from", "app@example.org",
                              "--header", "Subject: swaks test"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        m = re.search(r"<-  250 2\.0\.0 Ok: queued as (\S+)", out.stdout)
        self.assertIsNotNone(m, out.stdout)
        eml, env = self.postern.messages()[m.group(1)]
        self.assertEqual(env["mail_from"], "app@example.org")
        self.assertEqual([r["address"] for r in env["recipients"]], ["someone@example.net"])
        self.assertIn(b"Subject: swaks test\r\n", eml)
        self.assertIn(("id " + m.group(1)).encode(), eml.split(b"\r\n\r\n")[0])

    def test_raw_message_is_stored_byte_for_byte(self):
        body = (b"From: a@example.org\r\nTo: b@example.net\r\nSubject: exact\r\n"
                b"X-Odd:  two  spaces\t tab\r\n\r\n"
                b"line one\r\n..dot-stuffed line\r\n.\r\nnot the end\r\n"
                b"\xc3\xa9 8-bit\r\n \r\n\r\n")
        wire = body.replace(b"\r\n.", b"\r\n..")
        c = self.greet()
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org> BODY=8BITMIME")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.net>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(wire + b".\r\n")
        code, text, _ = c.reply()
        qid = self.queued_id(code, text)
        eml, env = self.postern.messages()[qid]
        self.assertEqual(strip_received(eml), body)
        self.assertEqual(env["mail_params"], {"body": "8BITMIME"})
        self.assertEqual(env["client_ip"], "127.0.0.1")
        self.assertEqual(env["helo"], "client.test")
        self.assertEqual(env["protocol"], "ESMTP")
        header = eml[:eml.index(b"\r\n\r\n")].split(b"\r\n")
        self.assertEqual(header[0], b"Received: from client.test ([127.0.0.1])")
        self.assertEqual(header[1], b"\tby postern.test (postern) with ESMTP id " + qid.encode())
        self.assertTrue(header[2].startswith(b"\tfor <b@example.net>; "), header[2])

    def test_received_header_with_several_recipients(self):
        # RFC 5322 3.6.7: ";" before the date even without a "for" clause.
        c = self.greet()
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.net>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<c@example.net>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        code, text, _ = c.cmd("Subject: two\r\n\r\nx\r\n.")
        qid = QUEUED.match(text).group(1)
        eml, _ = self.postern.messages()[qid]
        header = eml[:eml.index(b"\r\n\r\n")].split(b"\r\n")
        self.assertEqual(header[1],
                         b"\tby postern.test (postern) with ESMTP id " + qid.encode() + b";")
        self.assertRegex(header[2], rb"^\t[A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} ")
        self.assertEqual(strip_received(eml), b"Subject: two\r\n\r\nx\r\n")

    def test_envelope_parameters_are_kept(self):
        c = self.greet()
        self.assertEqual(c.cmd("MAIL FROM:<s@example.org> SIZE=100 RET=HDRS ENVID=abc+2Bd "
                               "SMTPUTF8")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<r1@example.net> NOTIFY=SUCCESS,FAILURE "
                               "ORCPT=rfc822;r1+40example.net")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<\u00fcser@b\u00fccher.example>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        code, text, _ = c.cmd("Subject: p\r\n\r\nx\r\n.")
        qid = self.queued_id(code, text)
        _, env = self.postern.messages()[qid]
        self.assertEqual(env["mail_params"], {"size": 100, "smtputf8": True, "ret": "HDRS",
                                              "envid": "abc+2Bd"})
        self.assertEqual(env["recipients"][0], {"address": "r1@example.net",
                                                "notify": "SUCCESS,FAILURE",
                                                "orcpt": "rfc822;r1+40example.net"})
        self.assertEqual(env["recipients"][1]["address"], "\u00fcser@b\u00fccher.example")
        self.assertEqual(env["protocol"], "UTF8SMTP")

    def test_smtplib_client(self):
        with smtplib.SMTP("127.0.0.1", self.postern.port, timeout=10) as s:
            refused = s.sendmail("app@example.org", ["x@example.net", "y@example.net"],
                                 b"Subject: smtplib\r\n\r\nhello\r\n")
            self.assertEqual(refused, {})
        found = [env for _, env in self.postern.messages().values()
                 if [r["address"] for r in env["recipients"]] == ["x@example.net",
                                                                   "y@example.net"]]
        self.assertEqual(len(found), 1)

    def test_pipelined_group_gets_replies_in_order(self):
        c = self.greet()
        c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
               "RCPT TO:<bad address>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n")
        codes = [c.reply()[0] for _ in range(5)]
        self.assertEqual(codes, [250, 250, 501, 250, 354])
        c.send("Subject: pipelined\r\n\r\nx\r\n.\r\nRSET\r\nMAIL FROM:<d@example.org>\r\n"
               "RCPT TO:<e@example.net>\r\nDATA\r\n")
        code, text, _ = c.reply()
        self.queued_id(code, text)
        self.assertEqual([c.reply()[0] for _ in range(4)], [250, 250, 250, 354])
        code, text, _ = c.cmd("Subject: second\r\n\r\ny\r\n.")
        qid = self.queued_id(code, text)
        self.assertEqual(self.postern.messages()[qid][1]["mail_from"], "d@example.org")
        # The whole first group is answered by one write: all five replies in one segment is
        # not observable reliably over loopback, so check the order only (above).

    def test_bdat_in_several_chunks(self):
        c = self.greet()
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.net>")[0], 250)
        parts = [b"Subject: chunks\r\n\r\n", b"first .\r\n.\r\n", b"..second\r\nthird"]
        c.send(b"BDAT %d\r\n%s" % (len(parts[0]), parts[0]))
        self.assertEqual(c.reply()[0], 250)
        # Two chunks pipelined in one write, the last with LAST.
        c.send(b"BDAT %d\r\n%sBDAT %d LAST\r\n%s" % (len(parts[1]), parts[1], len(parts[2]),
                                                     parts[2]))
        self.assertEqual(c.reply()[0], 250)
        code, text, _ = c.reply()
        qid = self.queued_id(code, text)
        eml, _ = self.postern.messages()[qid]
        # No dot handling in BDAT; a final CRLF is added when the content lacks one.
        self.assertEqual(strip_received(eml), b"".join(parts) + b"\r\n")

    def test_bdat_zero_last_and_errors_keep_framing(self):
        c = self.greet()
        # BDAT before MAIL: refused, but its 5 octets are consumed, not run as a command.
        c.send(b"BDAT 6\r\nNOOP\r\n")
        self.assertEqual(c.reply()[0], 503)
        self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.net>")[0], 250)
        c.send(b"BDAT 12\r\nSubject: z\r\nBDAT 0 LAST\r\n")
        self.assertEqual(c.reply()[0], 250)
        code, text, _ = c.reply()
        qid = self.queued_id(code, text)
        self.assertEqual(strip_received(self.postern.messages()[qid][0]), b"Subject: z\r\n")
        self.assertEqual(c.cmd("DATA")[0], 503)

    def test_two_hundred_concurrent_clients(self):
        before = len(self.postern.messages())
        errors = []
        # Every client is connected and greeted before any of them sends: 200 sessions at once.
        barrier = threading.Barrier(200, timeout=60)

        def send(i):
            try:
                with smtplib.SMTP("127.0.0.1", self.postern.port, timeout=60) as s:
                    s.ehlo("client.test")
                    barrier.wait()
                    s.sendmail(f"c{i}@example.org", [f"r{i}@example.net"],
                               f"Subject: concurrent {i}\r\nMessage-ID: <{i}@it>\r\n\r\nx\r\n")
            except Exception as e:  # noqa: BLE001 - collected and reported below
                errors.append((i, repr(e)))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        msgs = self.postern.messages()
        self.assertEqual(len(msgs) - before, 200)
        senders = {env["mail_from"] for _, env in msgs.values()}
        self.assertTrue({f"c{i}@example.org" for i in range(200)} <= senders)
        self.assertFalse([n for n in self.postern.outbox_names() if n.startswith(".tmp-")])


if __name__ == "__main__":
    unittest.main()
