"""SMTP smuggling: no end-of-data variant of ../shared/testdata/smtp/eod-sequences.tsv may end a
message early, under either bare_lf policy, and the commands hidden after it are never run."""
import os
import socket
import unittest

from harness import SHARED, Postern

TSV = os.path.join(SHARED, "testdata", "smtp", "eod-sequences.tsv")
SMUGGLED = (b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nevil\r\n")


def load_sequences():
    rows = []
    with open(TSV, encoding="ascii") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, escaped, _ = line.rstrip("\n").split("\t", 2)
            rows.append((name, escaped.encode("ascii").decode("unicode_escape").encode("latin-1")))
    return rows


SEQUENCES = load_sequences()


def well_framed(data):
    """Every LF is preceded by CR and every CR followed by LF."""
    for i, b in enumerate(data):
        if b == 0x0A and (i == 0 or data[i - 1] != 0x0D):
            return False
        if b == 0x0D and (i + 1 >= len(data) or data[i + 1] != 0x0A):
            return False
    return True


class SmugglingTest(unittest.TestCase):
    POLICY = "reject"

    @classmethod
    def setUpClass(cls):
        cls.postern = Postern(listener={"bare_lf": cls.POLICY}).start()

    @classmethod
    def tearDownClass(cls):
        cls.postern.cleanup()

    def open_transaction(self):
        c = self.postern.connect()
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.net>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        return c

    def test_table_is_loaded(self):
        self.assertGreaterEqual(len(SEQUENCES), 17)
        self.assertEqual(SEQUENCES[0], ("valid", b"\r\n.\r\n"))

    def test_no_sequence_ends_the_data(self):
        for name, seq in SEQUENCES:
            if name in ("valid", "crlf_dot_eof"):
                continue
            with self.subTest(sequence=name):
                before = set(self.postern.messages())
                c = self.open_transaction()
                c.send(b"Subject: smuggle " + name.encode() + b"\r\n\r\nhello" + seq + SMUGGLED
                       + b"\r\n.\r\n")
                code, text, _ = c.reply()
                # One reply for the whole stream, then QUIT answered next: the hidden MAIL,
                # RCPT and DATA produced no replies of their own.
                self.assertEqual(c.cmd("QUIT")[0], 221)
                new = {q: m for q, m in self.postern.messages().items() if q not in before}
                has_nul = b"\x00" in seq
                if self.POLICY == "reject" or has_nul:
                    self.assertEqual(code, 550, f"{name}: {text}")
                    self.assertEqual(new, {}, name)
                    continue
                self.assertEqual(code, 250, f"{name}: {text}")
                self.assertEqual(len(new), 1, name)
                eml, env = next(iter(new.values()))
                self.assertEqual(env["mail_from"], "a@example.org")
                self.assertEqual([r["address"] for r in env["recipients"]], ["b@example.net"])
                self.assertIn(b"MAIL FROM:<evil@example.org>", eml)
                self.assertTrue(well_framed(eml), f"{name}: stored copy has a bare CR or LF")

    def test_dot_then_close_stores_nothing(self):
        before = set(self.postern.messages())
        c = self.open_transaction()
        c.send(b"Subject: cut\r\n\r\nhello\r\n.")
        c.sock.shutdown(socket.SHUT_WR)
        self.assertTrue(c.closed())
        self.assertEqual(c.buf, b"")  # no reply: the message never ended
        self.assertEqual(set(self.postern.messages()), before)

    def test_valid_end_then_pipelined_commands_run(self):
        c = self.open_transaction()
        c.send(b"Subject: ok\r\n\r\nhello\r\n.\r\nNOOP\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[0], 250)  # the NOOP, a real command after a real end


class NormalizeSmugglingTest(SmugglingTest):
    POLICY = "normalize"



if __name__ == "__main__":
    unittest.main()
