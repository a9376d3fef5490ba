"""Relaying through [upstream.NAME]: TLS modes and certificate checks, AUTH, STARTTLS downgrade
and injection attacks, failover between hosts, the connection pool, and check-config on the
upstream keys. postern runs with delivery = "passthrough": a failure to reach a usable upstream
is the client's 451 4.4.1 at RCPT. Peers: upstreams.py (aiosmtpd, smtp-sink, FakeServer)."""
import os
import time
import unittest

from harness import strip_received, wait_for
from upstreams import (INJECTION_REPLY, NEGOTIATION_CASES, RelayTestCase, closed_port)

BODY = (b"From: app@example.org\r\nTo: someone@example.net\r\nSubject: relayed\r\n\r\n"
        b"first line\r\n.leading dot\r\n\xc3\xa9 8-bit\r\n")


class RelayTest(RelayTestCase):
    """Successful relays: what arrives upstream, over which protocol."""

    def assertRelayed(self, up, result, body=BODY, rcpts=("someone@example.net",)):
        self.assertEqual(result["mail"][0], 250, result)
        self.assertEqual([code for code, _ in result["rcpt"]], [250] * len(rcpts), result)
        self.assertEqual(result["data"][0], 250, result)
        [m] = up.wait_messages(1)
        self.assertEqual(strip_received(m["data"]), body)
        self.assertEqual(m["mail_from"], "app@example.org")
        self.assertEqual(m["rcpt_tos"], list(rcpts))
        self.assertEqual(m["helo"], "postern.test")
        return m

    def test_starttls_auth_plain(self):
        up = self.upstream(tls="starttls", users={"app": "s3cret"}, auth_required=True)
        p = self.postern({"hosts": [up.address], "username": "app", "password": "s3cret",
                          "auth": "plain"})
        m = self.assertRelayed(up, self.send(p, body=BODY, mail_params="BODY=8BITMIME"))
        self.assertTrue(m["tls"])
        self.assertEqual((m["auth_user"], m["auth_mechanism"]), ("app", "PLAIN"))
        self.assertIn("BODY=8BITMIME", m["mail_options"])
        # AUTH came after TLS only (aiosmtpd would have refused it before).
        self.assertTrue(all(e["tls"] for e in up.events("auth")))
        relayed = self.wait_event(p, "relayed")
        self.assertRegex(relayed[0]["_line"], r"queue_id=\S+")

    def test_starttls_auth_login(self):
        up = self.upstream(tls="starttls", users={"app": "s3cret"}, auth_required=True)
        p = self.postern({"hosts": [up.address], "username": "app", "password": "s3cret",
                          "auth": "login"})
        m = self.assertRelayed(up, self.send(p, body=BODY, mail_params="BODY=8BITMIME"))
        self.assertEqual((m["auth_user"], m["auth_mechanism"], m["tls"]), ("app", "LOGIN", True))

    def test_auth_auto_and_password_from_environment(self):
        os.environ["POSTERN_TEST_UPSTREAM_PASSWORD"] = "from env"
        self.addCleanup(os.environ.pop, "POSTERN_TEST_UPSTREAM_PASSWORD", None)
        up = self.upstream(tls="starttls", users={"app": "from env"}, auth_required=True)
        p = self.postern({"hosts": [up.address], "username": "app", "auth": "auto",
                          "password_env": "POSTERN_TEST_UPSTREAM_PASSWORD"})
        m = self.assertRelayed(up, self.send(p, body=BODY, mail_params="BODY=8BITMIME"))
        self.assertIn(m["auth_mechanism"], ("PLAIN", "LOGIN"))

    def test_inline_password_is_accepted_with_a_warning(self):
        up = self.upstream(tls="starttls", users={"app": "inline"}, auth_required=True)
        p = self.postern({"hosts": [up.address], "username": "app", "password": "inline",
                          "inline_password": True})
        self.assertRelayed(up, self.send(p, body=BODY, mail_params="BODY=8BITMIME"))
        self.assertRegex(p.log(), r"(?i)warn.*password")

    def test_implicit_tls(self):
        up = self.upstream(tls="implicit", users={"app": "s3cret"}, auth_required=True)
        p = self.postern({"hosts": [up.address], "tls": "implicit", "username": "app",
                          "password": "s3cret"})
        m = self.assertRelayed(up, self.send(p, body=BODY, mail_params="BODY=8BITMIME"))
        self.assertTrue(m["tls"])
        self.assertEqual(m["auth_user"], "app")
        self.assertEqual(up.events("starttls"), [])

    def test_default_server_name_is_the_host_address(self):
        # No server_name: the name checked is 127.0.0.1, which the certificate has as IP SAN.
        up = self.upstream(tls="starttls")
        p = self.postern({"hosts": [up.address], "server_name": None})
        self.assertTrue(self.assertRelayed(up, self.send(p, body=BODY,
                                                         mail_params="BODY=8BITMIME"))["tls"])

    def test_server_name_overrides_the_name_checked(self):
        up = self.upstream(tls="starttls", leaf=self.pki.wrong_name)
        p = self.postern({"hosts": [up.address], "server_name": "wrong.example"})
        self.assertRelayed(up, self.send(p, body=BODY, mail_params="BODY=8BITMIME"))

    def test_verify_certificate_false_accepts_an_unknown_ca(self):
        up = self.upstream(tls="starttls", leaf=self.pki.self_signed)
        p = self.postern({"hosts": [up.address], "verify_certificate": False})
        self.assertTrue(self.assertRelayed(up, self.send(p, body=BODY,
                                                         mail_params="BODY=8BITMIME"))["tls"])

    def test_starttls_optional_uses_tls_when_offered(self):
        up = self.upstream(tls="starttls")
        p = self.postern({"hosts": [up.address], "tls": "starttls_optional"})
        self.assertTrue(self.assertRelayed(up, self.send(p, body=BODY,
                                                         mail_params="BODY=8BITMIME"))["tls"])

    def test_starttls_optional_goes_plaintext_without_starttls(self):
        up = self.upstream(tls="none")
        p = self.postern({"hosts": [up.address], "tls": "starttls_optional"})
        self.assertFalse(self.assertRelayed(up, self.send(p, body=BODY,
                                                          mail_params="BODY=8BITMIME"))["tls"])

    def test_plaintext_to_smtp_sink(self):
        sink = self.sink()
        p = self.postern({"hosts": [sink.address], "tls": "none", "allow_plaintext": True})
        result = self.send(p, body=BODY, mail_params="BODY=8BITMIME")
        self.assertEqual(result["data"][0], 250, result)
        [m] = sink.wait_messages(1)
        self.assertEqual(strip_received(m["data_crlf"]), BODY)
        self.assertEqual((m["mail_from"], m["rcpt_tos"]), ("app@example.org",
                                                           ["someone@example.net"]))
        self.assertEqual(m["helo"], "postern.test")

    def test_plaintext_auth_with_allow_plaintext(self):
        up = self.upstream(tls="none", users={"app": "s3cret"}, auth_required=True)
        p = self.postern({"hosts": [up.address], "tls": "none", "allow_plaintext": True,
                          "username": "app", "password": "s3cret"})
        m = self.assertRelayed(up, self.send(p, body=BODY, mail_params="BODY=8BITMIME"))
        self.assertEqual((m["auth_user"], m["tls"]), ("app", False))


class RefusalTest(RelayTestCase):
    """Every way the upstream can be unusable ends in 451 4.4.1 at RCPT, a log line naming the
    reason, and nothing sensitive sent where it must not be."""

    def assertNoTransaction(self, fake):
        for verb in ("MAIL", "RCPT", "AUTH", "DATA"):
            self.assertFalse(fake.saw(verb), f"{verb} was sent: {fake.commands()}")

    def test_wrong_password(self):
        up = self.upstream(tls="starttls", users={"app": "s3cret"}, auth_required=True)
        p = self.postern({"hosts": [up.address], "username": "app",
                          "password": "Wr0ng-Passw0rd", "auth": "plain"})
        result = self.send(p)
        self.assertEqual(result["mail"][0], 250)  # MAIL is answered locally
        self.assertTempFail(result["rcpt"][0])
        self.assertIsNone(result["data"])
        [line] = self.wait_event(p, "upstream_auth_failed")[:1]
        self.assertEqual(line["level"], "error")
        self.assertIn("535", line["_line"])
        self.assertEqual(up.messages(), [])
        self.assertEqual(up.events("mail"), [])
        self.assertNotIn("Wr0ng-Passw0rd", p.log())  # the password is never logged

    def test_starttls_required_but_not_offered(self):
        cases = dict(NEGOTIATION_CASES)
        cases["none"] = dict(ehlo=("PIPELINING", "8BITMIME", "AUTH PLAIN LOGIN"))
        for name, case in cases.items():
            with self.subTest(case=name):
                fake = self.fake(**case)
                p = self.postern({"hosts": [fake.address], "username": "app",
                                  "password": "s3cret"})
                result = self.send(p)
                self.assertTempFail(result["rcpt"][0])
                self.assertNoTransaction(fake)
                self.assertEqual(fake.tls_handshakes, 0)
                self.wait_event(p, "upstream_failed")
                p.cleanup()

    def test_starttls_optional_never_sends_auth_in_the_clear(self):
        # O_1: AUTH offered in the clear, STARTTLS not: credentials must not go out.
        fake = self.fake(**NEGOTIATION_CASES["O_1"])
        p = self.postern({"hosts": [fake.address], "tls": "starttls_optional",
                          "username": "app", "password": "s3cret"})
        result = self.send(p)
        self.assertTempFail(result["rcpt"][0])
        self.assertNoTransaction(fake)

    def test_certificate_failures(self):
        cases = (("wrong_name", r"hostname mismatch"),
                 ("expired", r"certificate has expired"),
                 ("self_signed", r"self[- ]signed certificate|unable to get local issuer"),
                 ("other_ca_leaf", r"unable to get local issuer certificate"))
        for leaf, reason in cases:
            with self.subTest(leaf=leaf):
                up = self.upstream(tls="starttls", leaf=getattr(self.pki, leaf),
                                   users={"app": "s3cret"})
                p = self.postern({"hosts": [up.address], "username": "app",
                                  "password": "s3cret"})
                result = self.send(p)
                self.assertTempFail(result["rcpt"][0])
                lines = self.wait_event(p, "upstream_failed",
                                        where=lambda e: e.get("stage") == "tls")
                self.assertRegex(lines[0]["_line"].lower(), reason)
                self.assertEqual(up.events("auth"), [])
                self.assertEqual(up.events("mail"), [])
                self.assertEqual(up.messages(), [])
                p.cleanup()

    def test_implicit_tls_certificate_failure(self):
        up = self.upstream(tls="implicit", leaf=self.pki.expired)
        p = self.postern({"hosts": [up.address], "tls": "implicit"})
        self.assertTempFail(self.send(p)["rcpt"][0])
        lines = self.wait_event(p, "upstream_failed", where=lambda e: e.get("stage") == "tls")
        self.assertIn("certificate has expired", lines[0]["_line"])
        self.assertEqual(up.connection_count(), 0)  # aiosmtpd never saw a finished handshake

    def test_response_injection_after_starttls(self):
        fake = self.fake(starttls_reply=INJECTION_REPLY)
        p = self.postern({"hosts": [fake.address], "username": "app", "password": "s3cret"})
        result = self.send(p)
        self.assertTempFail(result["rcpt"][0])
        lines = self.wait_event(p, "upstream_failed")
        self.assertRegex(" ".join(e["_line"] for e in lines).lower(),
                         r"injection|after the 220")
        self.assertNoTransaction(fake)

    def test_all_hosts_down(self):
        p = self.postern({"hosts": [f"127.0.0.1:{closed_port()}", f"127.0.0.1:{closed_port()}"]})
        t0 = time.time()
        result = self.send(p)
        self.assertTempFail(result["rcpt"][0])
        self.assertLess(time.time() - t0, 8)
        self.wait_event(p, "upstream_failed")


    def test_only_host_greets_with_421(self):
        fake = self.fake(greeting="421 4.3.2 Service not available")
        p = self.postern({"hosts": [fake.address]})
        self.assertTempFail(self.send(p)["rcpt"][0])
        self.wait_event(p, "upstream_failed")

    def test_stalled_upstream_times_out(self):
        for verb in ("EHLO", "MAIL"):
            with self.subTest(stalled_after=verb):
                fake = self.fake(stall_on=(verb,))
                p = self.postern({"hosts": [fake.address], "command_timeout": "1s"})
                t0 = time.time()
                self.assertTempFail(self.send(p)["rcpt"][0])
                self.assertLess(time.time() - t0, 5)
                self.assertFalse(fake.saw("DATA"))
                p.cleanup()

    def test_no_reply_to_the_message_is_a_temporary_failure(self):
        fake = self.fake(stall_on=(".",))
        p = self.postern({"hosts": [fake.address], "data_done_timeout": "1s"})
        t0 = time.time()
        result = self.send(p)
        self.assertEqual(result["rcpt"][0][0], 250, result)
        self.assertTrue(400 <= result["data"][0] < 500, result)
        self.assertLess(time.time() - t0, 5)

    def rcpt_through(self, rcpt_reply):
        """One message to a FakeServer answering RCPT with rcpt_reply: (the client's RCPT
        reply as (code, text, lines), the postern, the fake)."""
        fake = self.fake(rcpt_reply=rcpt_reply)
        p = self.postern({"hosts": [fake.address]})
        c = self.client(p)
        self.assertEqual(c.cmd("MAIL FROM:<app@example.org>")[0], 250)
        reply = c.cmd("RCPT TO:<someone@example.net>")
        c.cmd("QUIT")
        return reply, p, fake

    def assertProtocolError(self, rcpt_reply, why):
        (code, text, lines), p, fake = self.rcpt_through(rcpt_reply)
        self.assertTempFail((code, text))
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("protocol error", text)
        events = self.wait_event(p, "relay_deferred",
                                 where=lambda e: "protocol error" in e.get("reason", ""))
        self.assertIn(why, events[0]["reason"])
        self.assertEqual(events[0].get("stage"), "rcpt", events[0]["_line"])
        self.assertFalse(fake.saw("DATA"))
        self.assertEqual(fake.messages, [])

    def test_reply_line_longer_than_512_octets(self):
        # 512 octets with CRLF is the limit (RFC 5321 4.5.3.1.5): relayed as it is.
        longest = "550 5.1.1 " + "x" * 500
        (code, text, lines), _, _ = self.rcpt_through(longest)
        self.assertEqual((code, lines), (550, [longest]))
        self.assertProtocolError(longest + "x", "reply line longer than 512 octets")

    def test_reply_of_more_than_100_lines(self):
        def reply(n):
            return "\r\n".join("550-5.1.1 line %d" % i for i in range(1, n)) + \
                "\r\n550 5.1.1 line %d" % n
        # 100 lines is the limit: relayed line by line.
        (code, text, lines), _, _ = self.rcpt_through(reply(100))
        self.assertEqual(code, 550)
        self.assertEqual(lines, reply(100).split("\r\n"))
        self.assertProtocolError(reply(101), "reply of more than 100 lines")


class FailoverTest(RelayTestCase):

    def test_first_host_refuses_connections(self):
        up = self.upstream(tls="starttls")
        p = self.postern({"hosts": [f"127.0.0.1:{closed_port()}", up.address]})
        result = self.send(p)
        self.assertEqual(result["data"][0], 250, result)
        self.assertEqual(len(up.wait_messages(1)), 1)

    def test_first_host_greets_with_421(self):
        fake = self.fake(greeting="421 4.3.2 Service not available")
        up = self.upstream(tls="starttls")
        p = self.postern({"hosts": [fake.address, up.address]})
        result = self.send(p)
        self.assertEqual(result["data"][0], 250, result)
        self.assertEqual(len(up.wait_messages(1)), 1)
        self.assertGreaterEqual(fake.connections, 1)

    def test_first_host_never_speaks(self):
        fake = self.fake(silent=True)
        up = self.upstream(tls="starttls")
        p = self.postern({"hosts": [fake.address, up.address], "greeting_timeout": "1s"})
        t0 = time.time()
        result = self.send(p)
        self.assertEqual(result["data"][0], 250, result)
        self.assertLess(time.time() - t0, 6)
        self.assertEqual(len(up.wait_messages(1)), 1)

    def test_first_host_tls_failure_falls_over(self):
        bad = self.upstream(tls="starttls", leaf=self.pki.expired)
        good = self.upstream(tls="starttls")
        p = self.postern({"hosts": [bad.address, good.address]})
        self.assertEqual(self.send(p)["data"][0], 250)
        self.assertEqual(len(good.wait_messages(1)), 1)
        self.assertEqual(bad.messages(), [])

    def test_down_host_is_skipped_for_host_down_time(self):
        down_port = closed_port()
        up = self.upstream(tls="starttls")
        p = self.postern({"hosts": [f"127.0.0.1:{down_port}", up.address],
                          "host_down_time": "30s", "max_connections": 1,
                          "max_messages_per_connection": 1})
        self.assertEqual(self.send(p)["data"][0], 250)
        # The first host comes up, but postern still skips it until host_down_time passes.
        late = self.upstream(tls="starttls", port=down_port)
        self.assertEqual(self.send(p)["data"][0], 250)
        self.assertEqual(len(up.wait_messages(2)), 2)
        self.assertEqual(late.connection_count(), 0)


class PoolTest(RelayTestCase):

    def test_connections_are_reused_across_client_sessions(self):
        up = self.upstream(tls="starttls", users={"app": "s3cret"}, auth_required=True)
        p = self.postern({"hosts": [up.address], "username": "app", "password": "s3cret",
                          "max_connections": 4})
        for i in range(20):
            result = self.send(p, body=b"Subject: %d\r\n\r\nx\r\n" % i)
            self.assertEqual(result["data"][0], 250, (i, result))
        self.assertEqual(len(up.wait_messages(20)), 20)
        self.assertLess(up.connection_count(), 20)
        self.assertLessEqual(up.connection_count(), 4 + 1)
        # Each new connection authenticated once; reuse did not re-authenticate.
        self.assertEqual(len(up.events("auth")), up.connection_count())

    def test_max_messages_per_connection(self):
        up = self.upstream(tls="starttls")
        p = self.postern({"hosts": [up.address], "max_connections": 1,
                          "max_messages_per_connection": 5})
        for i in range(12):
            self.assertEqual(self.send(p, body=b"Subject: %d\r\n\r\nx\r\n" % i)["data"][0], 250)
        messages = up.wait_messages(12)
        per_conn = {}
        for m in messages:
            per_conn[m["conn"]] = per_conn.get(m["conn"], 0) + 1
        self.assertLessEqual(max(per_conn.values()), 5, per_conn)
        self.assertGreaterEqual(len(per_conn), 3, per_conn)

    def test_concurrent_clients_stay_within_max_connections(self):
        import threading
        up = self.upstream(tls="starttls", timeout=60)
        # Two threads: one connection each; waiting clients queue for up to connect_timeout.
        p = self.postern({"hosts": [up.address], "max_connections": 2,
                          "connect_timeout": "10s"})
        results = []

        def one(i):
            # X-Test-Delay holds each upstream transaction open so that clients overlap.
            body = b"Subject: %d\r\nX-Test-Delay: 0.3\r\n\r\nx\r\n" % i
            results.append(self.transaction(self.client(p), "app@example.org",
                                            ["someone@example.net"], body))
        threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(sorted(r["data"][0] for r in results), [250] * 6, results)
        self.assertEqual(len(up.wait_messages(6)), 6)
        open_now, peak = 0, 0
        for e in up.events():
            if e["event"] == "connect":
                open_now += 1
                peak = max(peak, open_now)
            elif e["event"] == "disconnect":
                open_now -= 1
        self.assertLessEqual(peak, 2)

    def test_idle_connections_are_closed(self):
        up = self.upstream(tls="starttls")
        p = self.postern({"hosts": [up.address], "idle_timeout": "1s"})
        self.assertEqual(self.send(p)["data"][0], 250)
        self.assertTrue(wait_for(lambda: up.connection_count() == 1 and
                                 up.open_connections() == 0, timeout=5), up.events())

    def test_connection_closed_by_the_upstream_is_not_reused(self):
        # aiosmtpd drops a connection idle for 1 s; the pooled connection is then dead and the
        # next message must go over a new one, not fail.
        up = self.upstream(tls="starttls", timeout=1)
        p = self.postern({"hosts": [up.address], "idle_timeout": "60s"})
        self.assertEqual(self.send(p)["data"][0], 250)
        self.assertTrue(wait_for(lambda: up.events("timeout") and up.open_connections() == 0,
                                 timeout=5), up.events())
        result = self.send(p)
        self.assertEqual(result["rcpt"][0][0], 250, result)
        self.assertEqual(result["data"][0], 250, result)
        self.assertEqual(len(up.wait_messages(2)), 2)
        self.assertEqual(up.connection_count(), 2)


class CheckConfigTest(RelayTestCase):

    def test_full_upstream_configuration_is_valid(self):
        secret = self.secret_file("s3cret")
        code, out = self.check_config(
            upstream={"hosts": ["127.0.0.1:2526", "localhost:2527"], "tls": "starttls",
                      "username": "app", "password_file": secret, "auth": "login",
                      "max_messages_per_connection": 100, "idle_timeout": "60s"},
            upstreams={"other": {"hosts": ["127.0.0.1:2528"], "tls": "implicit"}},
            routes={"default": {"upstream": "smart"}, "other": {"upstream": "other"}},
            extra_toml='[[route_rule]]\nsender_domain = ["example.com", "*.example.org"]\n'
                       'recipient_domain = "b.test"\nlistener = ["test"]\nroute = "other"\n')
        self.assertEqual(code, 0, out)
        self.assertRegex(out, r"ok \(1 listeners?, 2 routes?")

    def test_refusals(self):
        cases = {
            "tls none without allow_plaintext": (
                dict(upstream={"hosts": ["127.0.0.1:2526"], "tls": "none"}), r"allow_plaintext"),
            "unknown upstream": (
                dict(upstream={"hosts": ["127.0.0.1:2526"]},
                     routes={"default": {"upstream": "nowhere"}}), r"nowhere"),
            "no hosts": (dict(upstream={"hosts": []}), r"hosts"),
            "bad tls value": (dict(upstream={"hosts": ["127.0.0.1:2526"], "tls": "always"}),
                              r"tls"),
            "host without port": (dict(upstream={"hosts": ["127.0.0.1"]}), r"hosts"),
            "missing password file": (
                dict(upstream={"hosts": ["127.0.0.1:2526"], "username": "app",
                               "password_file": "/nonexistent/secret"}), r"password_file"),
            "route rule to an unknown route": (
                dict(upstream={"hosts": ["127.0.0.1:2526"]},
                     extra_toml='[[route_rule]]\nsender_domain = "example.com"\n'
                                'route = "missing"\n'), r"missing"),
        }
        for name, (kwargs, pattern) in cases.items():
            with self.subTest(case=name):
                code, out = self.check_config(**kwargs)
                self.assertNotEqual(code, 0, out)
                self.assertRegex(out, pattern)


if __name__ == "__main__":
    unittest.main()
