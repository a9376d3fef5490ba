"""Storage failures and logging: a message that cannot be written gets 451 4.3.0, leaves nothing
behind and the server goes on; JSON logging gives one JSON object per line."""
import json
import os
import resource
import unittest

from harness import Postern


class WriteErrorTest(unittest.TestCase):

    def setUp(self):
        # A real write error without root tricks: the process may not write files over 64 KiB
        # (RLIMIT_FSIZE gives EFBIG, as a full disk gives ENOSPC).
        limit = 64 * 1024
        self.postern = Postern()
        self.addCleanup(self.postern.cleanup)
        self.postern.start(
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))

    def send(self, c, body):
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.net>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(body + b".\r\n")
        return c.reply()

    def test_write_error_gives_451_and_nothing_is_left(self):
        c = self.postern.connect()
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        big = b"Subject: big\r\n\r\n" + (b"x" * 900 + b"\r\n") * 200
        code, text, _ = self.send(c, big)
        self.assertEqual((code, text[:5]), (451, "4.3.0"), text)
        self.assertEqual(self.postern.outbox_names(), [])
        self.assertIn("event=store_failed", self.postern.log())
        # The server goes on: a small message on the same session is stored.
        code, text, _ = self.send(c, b"Subject: small\r\n\r\nok\r\n")
        self.assertEqual(code, 250, text)
        self.assertEqual(len(self.postern.messages()), 1)
        self.assertIsNone(self.postern.proc.poll())


class FreeSpaceFloorTest(unittest.TestCase):
    """[server] min_free_space: below it, MAIL gets 452 4.3.1 and nothing is accepted. The
    test cannot fill the disk, so it sets a floor larger than any disk (2**60 octets)."""

    def test_mail_refused_below_the_floor(self):
        p = Postern(server={"min_free_space": 2 ** 60})
        self.addCleanup(p.cleanup)
        p.start()
        c = p.connect()
        self.assertEqual(c.reply()[0], 220)
        c.cmd("EHLO client.example")
        code, text, _ = c.cmd("MAIL FROM:<a@example.com>")
        self.assertEqual((code, text), (452, "4.3.1 Insufficient system storage"))
        # Not a client error: the session goes on and may try again later.
        self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(p.messages(), {})
        self.assertRegex(p.log(), r"event=storage_low .*min_free_space=1152921504606846976")

    def test_floor_zero_is_off(self):
        p = Postern(server={"min_free_space": 0})
        self.addCleanup(p.cleanup)
        p.start()
        c = p.connect()
        c.reply()
        c.cmd("EHLO client.example")
        self.assertEqual(c.cmd("MAIL FROM:<a@example.com>")[0], 250)
        c.cmd("QUIT")
        self.assertNotIn("storage_low", p.log())


class JsonLogTest(unittest.TestCase):

    def test_every_log_line_is_a_json_object(self):
        p = Postern(extra_toml="")
        with open(p.config_path) as f:
            text = f.read().replace('level = "debug"', 'level = "debug"\nformat = "json"')
        with open(p.config_path, "w") as f:
            f.write(text)
        self.addCleanup(p.cleanup)
        p.start()
        c = p.connect()
        self.addCleanup(c.close)
        c.reply()
        c.cmd("EHLO client.test")
        c.cmd('MAIL FROM:<"odd \\"quoted\\" \\\\ name"@example.org>')
        c.cmd("RCPT TO:<b@example.net>")
        c.cmd("DATA")
        c.cmd("Subject: j\r\n\r\nx\r\n.")
        c.cmd("BOGUS \x7f\u00e9")
        c.cmd("QUIT")
        p.stop()
        events = [json.loads(line) for line in p.log().splitlines()]
        names = [e["event"] for e in events]
        for name in ("listening", "started", "connect", "queued", "reject", "disconnect",
                     "shutdown", "stopped"):
            self.assertIn(name, names)
        queued = next(e for e in events if e["event"] == "queued")
        self.assertEqual(queued["from"], '"odd \\"quoted\\" \\\\ name"@example.org')
        self.assertTrue(all("ts" in e and "level" in e for e in events))


if __name__ == "__main__":
    unittest.main()
