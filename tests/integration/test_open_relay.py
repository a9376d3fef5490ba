"""Relay permission: every open-relay address form of
../shared/testdata/smtp/open-relay-address-forms.tsv is refused for a client outside
trusted_networks, and a trusted client's addresses are relayed exactly as parsed."""
import os
import unittest

from harness import SHARED, Postern

TSV = os.path.join(SHARED, "testdata", "smtp", "open-relay-address-forms.tsv")
RELAY = "postern.test"
IP = "[127.0.0.1]"


def load_forms():
    forms = []
    with open(TSV, encoding="ascii") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, arg, _ = line.rstrip("\n").split("\t", 2)
            sender = "<>" if "(MAIL FROM:<>)" in arg else "<probe@example.org>"
            arg = arg.split(" (")[0].replace("RELAY", RELAY).replace("[IP]", IP)
            forms.append((name, sender, arg))
    return forms


FORMS = load_forms()


class OpenRelayTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        # Only 127.0.0.1 is trusted; the untrusted client binds to 127.0.0.2.
        cls.postern = Postern(listener={"trusted_networks": ["127.0.0.1/32"]}).start()

    @classmethod
    def tearDownClass(cls):
        cls.postern.cleanup()

    def session(self, source):
        c = self.postern.connect(source=source)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO probe.example")[0], 250)
        return c

    def test_every_form_is_refused_for_an_untrusted_client(self):
        self.assertGreaterEqual(len(FORMS), 16)
        for name, sender, arg in FORMS:
            # A session per form: refusals count toward max_errors (as in Postfix).
            c = self.session("127.0.0.2")
            with self.subTest(form=name):
                self.assertEqual(c.cmd(f"MAIL FROM:{sender}")[0], 250)
                code, text, _ = c.cmd(f"RCPT TO:{arg}")
                self.assertEqual((code, text), (554, "5.7.1 Relay access denied"), name)
                self.assertEqual(c.cmd("DATA")[0], 503)  # nothing was accepted
                self.assertEqual(c.cmd("RSET")[0], 250)
        self.assertEqual(self.postern.messages(), {})
        self.assertIn("event=reject", self.postern.log())

    # What a trusted client's RCPT becomes: the mailbox as parsed (a source route dropped, as
    # RFC 5321 4.1.2 and appendix C allow), or None for 501 (not a Path).
    TRUSTED_EXPECTED = {
        "plain_external": "user@ext.example",
        "null_sender_external": "user@ext.example",
        "percent_hack_literal": f"user%ext.example@{IP}",
        "percent_hack_name": f"user%ext.example@{RELAY}",
        "quoted_at": None,
        "quoted_percent": None,
        "double_at_literal": None,
        "quoted_at_literal": f'"user@ext.example"@{IP}',
        "double_at_name": None,
        "source_route_literal": "user@ext.example",
        "source_route_name": "user@ext.example",
        "bang_path": None,
        "bang_path_literal": f"ext.example!user@{IP}",
        "bang_path_name": f"ext.example!user@{RELAY}",
        "quoted_percent_at_relay": f'"user%ext.example"@{RELAY}',
        "multi_route": "user@ext.example",
    }

    def test_trusted_client_addresses_are_relayed_as_parsed(self):
        self.assertEqual(sorted(self.TRUSTED_EXPECTED), sorted(n for n, _, _ in FORMS))
        for name, sender, arg in FORMS:
            expected = self.TRUSTED_EXPECTED[name]
            c = self.session("127.0.0.1")
            with self.subTest(form=name):
                self.assertEqual(c.cmd(f"MAIL FROM:{sender}")[0], 250)
                code, text, _ = c.cmd(f"RCPT TO:{arg}")
                if expected is None:
                    self.assertEqual(code, 501, f"{name}: {text}")
                    continue
                self.assertEqual(code, 250, f"{name}: {text}")
                self.assertEqual(c.cmd("DATA")[0], 354)
                code, text, _ = c.cmd(f"Subject: {name}\r\n\r\nx\r\n.")
                self.assertEqual(code, 250, text)
                qid = text.rsplit(" ", 1)[1]
                env = self.postern.messages()[qid][1]
                # Exactly the mailbox that was parsed: no %-hack, bang path or quote undone.
                self.assertEqual([r["address"] for r in env["recipients"]], [expected], name)


if __name__ == "__main__":
    unittest.main()
