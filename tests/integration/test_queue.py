"""delivery = "queue" with an upstream route: the durable queue (issue 4, first slice).

The client hears "250 2.0.0 Ok: queued as ID" once the message is durable in the spool
(SPOOL/queue/ID.eml: postern's Received header and the message, exactly what will be sent;
ID.json: the envelope, as the outbox sidecar, plus "route"; ID.state: one line per recipient
that reached a final state, "D <index>" or "F <index> <code> <text>"). A scheduler delivers
each message at once through the upstream pool, all recipients in one transaction: 2xx
delivered, 5xx failed (kept in the spool for the bounce of a later slice), 4xx and connection,
TLS or AUTH failures deferred and retried with exponential backoff (retry_min, doubling,
capped at retry_max, jitter 0.75-1.25) until max_age, after which the recipient fails as
"expired". When every recipient is delivered the files are removed. At start-up every pair in
SPOOL/queue is delivered again (recipients recorded in .state are not sent again); a
truncated .eml or an unparseable .json is moved to SPOOL/corrupt/ and never delivered.

Retry settings are short here (retry_min 1s, retry_max 2s) so that every test stays well under
30 seconds. An upstream that is "down" is a loopback port nothing listens on; it comes up by
starting an aiosmtpd on that very port.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time
import unittest

from harness import BINARY, QUEUED, Postern, strip_received, wait_for
from upstreams import AiosmtpdUpstream, RelayTestCase, closed_port, log_events

# The keys of the outbox sidecar (docs/outbox.md); the queue's .json has these plus "route".
SIDECAR_KEYS = {"queue_id", "mail_from", "mail_params", "recipients", "client_ip",
                "client_port", "helo", "protocol", "listener", "received_at", "size"}

PLAIN = {"tls": "none", "allow_plaintext": True}


class QueueTestCase(RelayTestCase):
    """A postern with delivery = "queue", route default -> upstream "smart", and its spool in
    the test's temporary directory (which outlives the postern, so that a second postern can
    recover it)."""

    def setUp(self):
        super().setUp()
        self.spool = os.path.join(self.tmp, "spool")
        self.queue_dir = os.path.join(self.spool, "queue")
        self.corrupt_dir = os.path.join(self.spool, "corrupt")

    # -- postern

    def queue_postern(self, upstream, route=None, start=True):
        """upstream: [upstream.smart] keys over RelayTestCase's defaults (host_down_time 1s,
        so that the pool never stands in the way of a retry); route: [route.default] keys over
        upstream = "smart", retry_min = "1s", retry_max = "2s"."""
        routes = {"default": dict({"upstream": "smart", "retry_min": "1s", "retry_max": "2s"},
                                  **(route or {}))}
        config = self.postern_config(dict({"host_down_time": "1s"}, **upstream), routes=routes,
                                     listener={"delivery": "queue"})
        p = Postern(server={"spool_dir": self.spool}, **config)
        self.addCleanup(p.cleanup)
        return p.start() if start else p

    def down_upstream(self):
        """(port, AiosmtpdUpstream not yet started on that port): the upstream is down until
        its start()."""
        port = closed_port()
        up = AiosmtpdUpstream(tls="none", port=port)
        self.addCleanup(up.cleanup)
        return port, up

    def restart(self, p):
        """SIGKILLs postern and starts it again on the same configuration (same port, same
        spool). Returns the log of the killed process (start() truncates the log file)."""
        p.stop(signal.SIGKILL)
        old = p.log()
        p.start()
        return old

    def queue(self, p, rcpts=("someone@example.net",), body=b"Subject: queued\r\n\r\nhi\r\n",
              mail_from="app@example.org", mail_params=""):
        """One transaction; asserts "250 2.0.0 Ok: queued as ID" and returns ID."""
        result = self.send(p, mail_from=mail_from, rcpts=rcpts, body=body,
                           mail_params=mail_params)
        self.assertEqual([code for code, _ in result["rcpt"]], [250] * len(rcpts), result)
        self.assertIsNotNone(result["data"], result)
        self.assertEqual(result["data"][0], 250, result)
        m = QUEUED.match(result["data"][1])
        self.assertTrue(m, result)
        return m.group(1)

    # -- the spool

    def queue_names(self):
        """The names in SPOOL/queue, temporaries and other dot files left out."""
        if not os.path.isdir(self.queue_dir):
            return []
        return sorted(n for n in os.listdir(self.queue_dir) if not n.startswith("."))

    def spool_record(self, qid):
        """(.eml bytes, parsed .json) of a message in SPOOL/queue."""
        with open(os.path.join(self.queue_dir, qid + ".eml"), "rb") as f:
            eml = f.read()
        with open(os.path.join(self.queue_dir, qid + ".json")) as f:
            env = json.load(f)
        return eml, env

    def state_lines(self, qid):
        try:
            with open(os.path.join(self.queue_dir, qid + ".state")) as f:
                return [line.rstrip("\n") for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def assertSpoolEmpty(self, p, timeout=10):
        wait_for(lambda: not self.queue_names(), timeout)
        self.assertEqual(self.queue_names(), [], p.log()[-3000:])
        if os.path.isdir(self.queue_dir):
            leftovers = [n for n in os.listdir(self.queue_dir) if n.startswith(".tmp")]
            self.assertEqual(leftovers, [])

    # -- postern's log

    def deliveries(self, p, qid=None, rcpt=None, result=None, attempt=None, log=None):
        """The event=delivery lines, optionally of one message / recipient / result /
        attempt number (a string, as logged)."""
        out = []
        for e in log_events(p.log() if log is None else log, "delivery"):
            if qid is not None and e.get("queue_id") != qid:
                continue
            if rcpt is not None and e.get("rcpt", "").strip("<>") != rcpt:
                continue
            if result is not None and e.get("result") != result:
                continue
            if attempt is not None and e.get("attempt") != attempt:
                continue
            out.append(e)
        return out

    def wait_delivery(self, p, timeout=10, **where):
        wait_for(lambda: bool(self.deliveries(p, **where)), timeout)
        found = self.deliveries(p, **where)
        self.assertTrue(found, f"no event=delivery with {where} in postern's log:\n"
                               f"{p.log()[-4000:]}")
        return found

    def assertDeliveryLine(self, e, qid, rcpt, result, attempt_line=True):
        """The fields of an event=delivery line. attempt_line=False: a final state reached
        without talking to the upstream (expiry), which need not name upstream and host."""
        self.assertEqual(e.get("queue_id"), qid, e["_line"])
        self.assertEqual(e.get("rcpt", "").strip("<>"), rcpt, e["_line"])
        self.assertEqual(e.get("result"), result, e["_line"])
        self.assertEqual(e.get("route"), "default", e["_line"])
        keys = ("attempt", "delay_ms", "reply")
        if attempt_line:
            self.assertEqual(e.get("upstream"), "smart", e["_line"])
            keys += ("host",)
        for key in keys:
            self.assertIn(key, e, e["_line"])
        self.assertRegex(e["attempt"], r"^[1-9]\d*$", e["_line"])
        self.assertRegex(e["delay_ms"], r"^\d+$", e["_line"])

    def upstream_rcpts(self, up, address):
        """How often RCPT TO:<address> reached the aiosmtpd upstream."""
        return len([e for e in up.events("rcpt") if e["address"] == address])


class QueueDeliveryTest(QueueTestCase):
    """The normal case: queued, delivered at once, gone from the spool."""

    def check_delivered(self, p, up, qid, body, rcpt="someone@example.net"):
        [m] = up.wait_messages(1)
        self.assertEqual(strip_received(m["data"]), body)
        self.assertEqual(m["mail_from"], "app@example.org")
        self.assertEqual(m["rcpt_tos"], [rcpt])
        header = m["data"][:len(m["data"]) - len(body)]
        self.assertTrue(header.startswith(b"Received: from client.test ([127.0.0.1])\r\n"),
                        header)
        self.assertIn(b" id " + qid.encode(), header)
        self.assertSpoolEmpty(p)
        self.wait_event(p, "message_done", where=lambda e: e.get("queue_id") == qid)
        [d] = self.wait_delivery(p, qid=qid)
        self.assertDeliveryLine(d, qid, rcpt, "delivered")
        self.assertEqual(d["attempt"], "1", d["_line"])
        self.assertEqual(d["host"], up.address, d["_line"])
        self.assertTrue(d["reply"].startswith("250"), d["_line"])
        self.assertEqual(self.events(p, "deferred"), [])
        return m

    def test_plain_upstream(self):
        up = self.upstream(tls="none")
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]))
        body = (b"From: a@example.org\r\nSubject: queued\r\n\r\n"
                b"line\r\n..dot-stuffed\r\n.\r\n\xc3\xa9 8-bit\r\n")
        qid = self.queue(p, body=body, mail_params="BODY=8BITMIME")
        m = self.check_delivered(p, up, qid, body)
        self.assertIn("BODY=8BITMIME", m["mail_options"])

    def test_starttls_and_auth_upstream(self):
        up = self.upstream(tls="starttls", users={"app": "s3cret"}, auth_required=True)
        p = self.queue_postern({"hosts": [up.address], "username": "app",
                                "password": "s3cret"})
        body = b"Subject: over tls\r\n\r\nsecret\r\n"
        qid = self.queue(p, body=body)
        m = self.check_delivered(p, up, qid, body)
        self.assertTrue(m["tls"])
        self.assertEqual(m["auth_user"], "app")

    def test_several_recipients_in_one_transaction(self):
        up = self.upstream(tls="none")
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]))
        rcpts = ["one@example.net", "two@example.net", "three@example.org"]
        qid = self.queue(p, rcpts=rcpts)
        [m] = up.wait_messages(1)
        self.assertEqual(m["rcpt_tos"], rcpts)
        self.assertSpoolEmpty(p)
        self.wait_event(p, "message_done", where=lambda e: e.get("queue_id") == qid)
        for r in rcpts:
            [d] = self.deliveries(p, qid=qid, rcpt=r)
            self.assertDeliveryLine(d, qid, r, "delivered")
        time.sleep(0.5)
        self.assertEqual(len(up.messages()), 1)


class QueueOutageTest(QueueTestCase):

    def test_messages_wait_for_the_upstream(self):
        port, up = self.down_upstream()
        p = self.queue_postern(dict(PLAIN, hosts=[f"127.0.0.1:{port}"]))
        bodies, ids = {}, []
        started = time.time()
        for i in range(5):
            body = b"Subject: outage %d\r\nMessage-ID: <%d@outage.test>\r\n\r\nbody %d\r\n" \
                   % (i, i, i)
            qid = self.queue(p, rcpts=[f"r{i}@example.net"], body=body)
            # Durable before the 250: both files are there under their final names.
            self.assertTrue(os.path.exists(os.path.join(self.queue_dir, qid + ".eml")), qid)
            self.assertTrue(os.path.exists(os.path.join(self.queue_dir, qid + ".json")), qid)
            ids.append(qid)
            bodies[qid] = body
        self.assertLess(time.time() - started, 5, "the 250s waited for the upstream")
        self.assertEqual(len(set(ids)), 5)

        # The spool records: what will be sent, and the envelope.
        emls = {}
        for i, qid in enumerate(ids):
            eml, env = self.spool_record(qid)
            emls[qid] = eml
            self.assertEqual(strip_received(eml), bodies[qid])
            self.assertIn(b" id " + qid.encode(), eml[:len(eml) - len(bodies[qid])])
            self.assertEqual(set(env), SIDECAR_KEYS | {"route"}, env)
            self.assertEqual(env["queue_id"], qid)
            self.assertEqual(env["route"], "default")
            self.assertEqual(env["mail_from"], "app@example.org")
            self.assertEqual(env["recipients"], [{"address": f"r{i}@example.net"}])
            self.assertEqual(env["listener"], "test")
            self.assertEqual(env["size"], len(eml))

        # Every message is tried at once and deferred.
        for i, qid in enumerate(ids):
            first = self.wait_delivery(p, qid=qid, result="deferred")[0]
            self.assertDeliveryLine(first, qid, f"r{i}@example.net", "deferred")
            self.assertEqual(first["attempt"], "1", first["_line"])
            [deferred] = self.wait_event(p, "deferred",
                                         where=lambda e, q=qid: e.get("queue_id") == q)[:1]
            self.assertIn("next_attempt_s", deferred, deferred["_line"])
            # A delay in seconds: the first one is retry_min (1s) with jitter, at most 2s.
            self.assertLessEqual(float(deferred["next_attempt_s"]), 2.5, deferred["_line"])
            self.assertGreaterEqual(float(deferred["next_attempt_s"]), 0, deferred["_line"])
        self.assertEqual(self.events(p, "message_done"), [])

        up.start()
        messages = up.wait_messages(5, timeout=10)
        self.assertEqual(len(messages), 5, p.log()[-4000:])
        by_id = {}
        for m in messages:
            qid = re.search(rb" id ([0-9A-Z]{14})", m["data"]).group(1).decode()
            by_id[qid] = m
        self.assertEqual(sorted(by_id), sorted(ids))
        for qid, m in by_id.items():
            self.assertEqual(m["data"], emls[qid])  # exactly the spooled bytes
        self.assertSpoolEmpty(p)
        for qid in ids:
            self.wait_event(p, "message_done", where=lambda e, q=qid: e.get("queue_id") == q)
            [d] = self.deliveries(p, qid=qid, result="delivered")
            self.assertGreaterEqual(int(d["attempt"]), 2, d["_line"])
            self.assertEqual(d["host"], f"127.0.0.1:{port}", d["_line"])
        time.sleep(1)
        self.assertEqual(len(up.messages()), 5, "a message was delivered twice")


class QueueRecoveryTest(QueueTestCase):

    def test_sigkill_then_restart_delivers_the_spool(self):
        port, up = self.down_upstream()
        p = self.queue_postern(dict(PLAIN, hosts=[f"127.0.0.1:{port}"]))
        ids = [self.queue(p, rcpts=[f"r{i}@example.net"],
                          body=b"Subject: crash %d\r\n\r\nx\r\n" % i) for i in range(3)]
        p.stop(signal.SIGKILL)
        emls = {qid: self.spool_record(qid)[0] for qid in ids}

        up.start()
        p.start()
        [recovered] = self.wait_event(p, "spool_recovered")
        self.assertEqual(recovered.get("messages"), "3", recovered["_line"])
        self.assertEqual(recovered.get("corrupt"), "0", recovered["_line"])
        messages = up.wait_messages(3, timeout=10)
        self.assertEqual(sorted(m["data"] for m in messages), sorted(emls.values()))
        self.assertSpoolEmpty(p)
        for qid in ids:
            self.wait_event(p, "message_done", where=lambda e, q=qid: e.get("queue_id") == q)
        time.sleep(1)
        self.assertEqual(len(up.messages()), 3, "a message was delivered twice")

    def test_delivered_recipients_are_not_sent_again_after_a_restart(self):
        up = self.upstream(tls="none")  # "defer..." -> 451 4.3.0
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]))
        qid = self.queue(p, rcpts=["ok@example.net", "defer@example.net"])
        self.wait_delivery(p, qid=qid, rcpt="ok@example.net", result="delivered")
        self.wait_delivery(p, qid=qid, rcpt="defer@example.net", result="deferred")
        self.assertTrue(wait_for(lambda: "D 0" in self.state_lines(qid)), self.state_lines(qid))
        self.assertNotIn("message_done", p.log())

        old_log = self.restart(p)
        self.assertEqual(len(self.deliveries(p, rcpt="ok@example.net", log=old_log)), 1)
        [recovered] = self.wait_event(p, "spool_recovered")
        self.assertEqual(recovered.get("messages"), "1", recovered["_line"])
        # The recovered message is tried again at once, for the pending recipient only.
        self.wait_delivery(p, qid=qid, rcpt="defer@example.net")
        self.assertEqual(self.deliveries(p, rcpt="ok@example.net"), [])
        self.assertEqual(self.upstream_rcpts(up, "ok@example.net"), 1)
        self.assertGreaterEqual(self.upstream_rcpts(up, "defer@example.net"), 2)

        # The upstream takes the deferred recipient now: the message is done.
        up.stop()
        up.config["rcpt_replies"] = {}
        up.start()
        self.wait_delivery(p, qid=qid, rcpt="defer@example.net", result="delivered")
        self.wait_event(p, "message_done", where=lambda e: e.get("queue_id") == qid)
        self.assertSpoolEmpty(p)
        messages = up.messages()
        self.assertEqual([m["rcpt_tos"] for m in messages],
                         [["ok@example.net"], ["defer@example.net"]])
        self.assertEqual(messages[0]["data"], messages[1]["data"])
        self.assertEqual(self.upstream_rcpts(up, "ok@example.net"), 1)


class QueueCorruptSpoolTest(QueueTestCase):

    def test_truncated_and_unparseable_records_are_quarantined(self):
        port, up = self.down_upstream()
        p = self.queue_postern(dict(PLAIN, hosts=[f"127.0.0.1:{port}"]))
        good, truncated, garbage = [
            self.queue(p, rcpts=[f"{name}@example.net"],
                       body=b"Subject: %s\r\n\r\n%s\r\n" % (name.encode(), b"x" * 200))
            for name in ("good", "truncated", "garbage")]
        p.stop(signal.SIGKILL)
        good_eml = self.spool_record(good)[0]

        path = os.path.join(self.queue_dir, truncated + ".eml")
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(size - 37)
        garbage_json = b'{"queue_id": "' + garbage.encode() + b'", "recip\x00\xff not json'
        with open(os.path.join(self.queue_dir, garbage + ".json"), "wb") as f:
            f.write(garbage_json)

        up.start()
        p.start()
        [recovered] = self.wait_event(p, "spool_recovered")
        self.assertEqual(recovered.get("messages"), "1", recovered["_line"])
        self.assertEqual(recovered.get("corrupt"), "2", recovered["_line"])
        corrupt = self.events(p, "spool_corrupt")
        self.assertEqual(sorted(e.get("queue_id") for e in corrupt),
                         sorted([truncated, garbage]), p.log()[-3000:])
        for e in corrupt:
            self.assertTrue(e.get("reason"), e["_line"])

        # Both files of each quarantined record are in corrupt/, as they were.
        names = set(os.listdir(self.corrupt_dir))
        for qid in (truncated, garbage):
            self.assertTrue({qid + ".eml", qid + ".json"} <= names, names)
        self.assertEqual(os.path.getsize(os.path.join(self.corrupt_dir, truncated + ".eml")),
                         size - 37)
        with open(os.path.join(self.corrupt_dir, garbage + ".json"), "rb") as f:
            self.assertEqual(f.read(), garbage_json)

        # The good one is delivered; the quarantined ones never are.
        [m] = up.wait_messages(1)
        self.assertEqual(m["data"], good_eml)
        self.assertSpoolEmpty(p)
        self.wait_event(p, "message_done", where=lambda e: e.get("queue_id") == good)
        time.sleep(1.5)
        self.assertEqual(len(up.messages()), 1)
        self.assertEqual(self.upstream_rcpts(up, "truncated@example.net"), 0)
        self.assertEqual(self.upstream_rcpts(up, "garbage@example.net"), 0)
        for qid in (truncated, garbage):
            self.assertEqual(self.deliveries(p, qid=qid), [])
            self.assertTrue({qid + ".eml", qid + ".json"} <= set(os.listdir(self.corrupt_dir)))


class QueueMixedResultsTest(QueueTestCase):

    def test_delivered_refused_and_deferred_recipients(self):
        # aiosmtpd's default refusal map: "refuse..." -> 550 5.1.1, "defer..." -> 451 4.3.0.
        up = self.upstream(tls="none")
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]))
        ok, refused, deferred = "ok@example.net", "refuse@example.net", "defer@example.net"
        qid = self.queue(p, rcpts=[ok, refused, deferred])

        [m] = up.wait_messages(1)
        self.assertEqual(m["rcpt_tos"], [ok])
        [d_ok] = self.wait_delivery(p, qid=qid, rcpt=ok)
        self.assertDeliveryLine(d_ok, qid, ok, "delivered")
        [d_refused] = self.wait_delivery(p, qid=qid, rcpt=refused)
        self.assertDeliveryLine(d_refused, qid, refused, "failed")
        self.assertEqual(d_refused["attempt"], "1")
        self.assertTrue(d_refused["reply"].startswith("550 5.1.1"), d_refused["_line"])
        first = self.wait_delivery(p, qid=qid, rcpt=deferred)[0]
        self.assertDeliveryLine(first, qid, deferred, "deferred")
        self.assertEqual(first["attempt"], "1")
        self.assertTrue(first["reply"].startswith("451 4.3.0"), first["_line"])
        self.wait_event(p, "deferred", where=lambda e: e.get("queue_id") == qid)

        # The final states are recorded by recipient index.
        self.assertTrue(wait_for(lambda: len(self.state_lines(qid)) >= 2),
                        self.state_lines(qid))
        lines = self.state_lines(qid)
        self.assertIn("D 0", lines)
        failed = [line for line in lines if line.startswith("F ")]
        self.assertEqual(len(failed), 1, lines)
        self.assertRegex(failed[0], r"^F 1 550 .*No such user here")
        self.assertFalse([line for line in lines if re.match(r"^[DF] 2\b", line)], lines)

        # The deferred recipient is retried, alone.
        self.wait_delivery(p, timeout=6, qid=qid, rcpt=deferred, attempt="2")
        self.wait_delivery(p, timeout=8, qid=qid, rcpt=deferred, attempt="3")
        self.assertEqual(self.upstream_rcpts(up, ok), 1)
        self.assertEqual(self.upstream_rcpts(up, refused), 1)
        self.assertGreaterEqual(self.upstream_rcpts(up, deferred), 3)
        self.assertEqual(len(self.deliveries(p, rcpt=ok)), 1)
        self.assertEqual(len(self.deliveries(p, rcpt=refused)), 1)
        self.assertEqual(len(up.messages()), 1)

        # Once it is delivered the failed recipient still keeps the message in the spool.
        up.stop()
        up.config["rcpt_replies"] = {"refuse": "550 5.1.1 No such user here"}
        up.start()
        self.wait_delivery(p, qid=qid, rcpt=deferred, result="delivered")
        messages = up.wait_messages(2)
        self.assertEqual([m["rcpt_tos"] for m in messages], [[ok], [deferred]])
        self.assertEqual(messages[1]["data"], messages[0]["data"])
        self.assertTrue(wait_for(lambda: "D 2" in self.state_lines(qid)), self.state_lines(qid))
        self.assertEqual(sorted(n for n in self.queue_names() if n.startswith(qid)),
                         [qid + ".eml", qid + ".json", qid + ".state"])
        self.assertEqual(self.events(p, "message_done"), [])
        time.sleep(2.5)  # more than retry_max: nothing is tried any more
        self.assertEqual(self.upstream_rcpts(up, ok), 1)
        self.assertEqual(self.upstream_rcpts(up, refused), 1)
        self.assertEqual(len(up.messages()), 2)

    def test_deliveries_use_the_recipient_order_of_the_envelope(self):
        # Indexes in .state are positions in the .json recipients.
        up = self.upstream(tls="none")
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]))
        qid = self.queue(p, rcpts=["refuse1@example.net", "a@example.net",
                                   "refuse2@example.net"])
        self.assertTrue(wait_for(lambda: len(self.state_lines(qid)) >= 3),
                        self.state_lines(qid))
        lines = self.state_lines(qid)
        self.assertEqual(sorted(" ".join(line.split(" ")[:2]) for line in lines),
                         ["D 1", "F 0", "F 2"], lines)
        _, env = self.spool_record(qid)
        self.assertEqual([r["address"] for r in env["recipients"]],
                         ["refuse1@example.net", "a@example.net", "refuse2@example.net"])
        self.assertEqual(self.events(p, "deferred"), [])


class QueueExpiryTest(QueueTestCase):

    def test_pending_recipient_expires_after_max_age(self):
        port, _ = self.down_upstream()
        p = self.queue_postern(dict(PLAIN, hosts=[f"127.0.0.1:{port}"]),
                               route={"max_age": "2s"})
        started = time.time()
        qid = self.queue(p, rcpts=["late@example.net"])
        self.wait_delivery(p, qid=qid, result="deferred")
        [failed] = self.wait_delivery(p, timeout=10, qid=qid, result="failed")
        elapsed = time.time() - started
        self.assertDeliveryLine(failed, qid, "late@example.net", "failed", attempt_line=False)
        self.assertIn("expired", failed["reply"], failed["_line"])
        # received_at has whole seconds: allow expiry up to a second early.
        self.assertGreaterEqual(elapsed, 1.0)
        self.assertTrue(wait_for(lambda: any(line.startswith("F 0 ")
                                             for line in self.state_lines(qid))),
                        self.state_lines(qid))
        [line] = [line for line in self.state_lines(qid) if line.startswith("F 0 ")]
        self.assertIn("expired", line)

        # Final: no more attempts; the message stays for the bounce of a later slice.
        count = len(self.deliveries(p, qid=qid))
        deferred = len(self.events(p, "deferred"))
        time.sleep(2.5)
        self.assertEqual(len(self.deliveries(p, qid=qid)), count, p.log()[-3000:])
        self.assertEqual(len(self.events(p, "deferred")), deferred)
        self.assertEqual(self.events(p, "message_done"), [])
        self.assertEqual(sorted(n for n in self.queue_names() if n.startswith(qid)),
                         [qid + ".eml", qid + ".json", qid + ".state"])


class QueueConfigTest(QueueTestCase):
    """check-config and the queue's route keys."""

    def check(self, listener=None, route=None):
        """check-config on a listener (keys over name/address) with route default ->
        upstream smart (keys `route` over that): (returncode, output)."""
        routes = {"default": dict({"upstream": "smart"}, **(route or {}))}
        p = Postern(server={"spool_dir": self.spool}, listener=listener, routes=routes,
                    extra_toml=self.upstream_toml("smart", dict(PLAIN, hosts=["127.0.0.1:2526"])))
        self.addCleanup(shutil.rmtree, p.dir, True)
        out = subprocess.run([BINARY, "check-config", "--config", p.config_path],
                             capture_output=True, text=True, timeout=20,
                             stdin=subprocess.DEVNULL)
        return out.returncode, out.stdout + out.stderr

    def test_queue_with_an_upstream_route_is_accepted(self):
        for listener, route in [
                ({"delivery": "queue"}, {}),
                ({}, {}),  # delivery = "queue" is the default
                ({"delivery": "queue"}, {"retry_min": "30s", "retry_max": "10m",
                                         "max_age": "2d"}),
                ({"delivery": "queue"}, {"retry_min": "1s", "retry_max": "1s"}),
                ({"delivery": "queue"}, {"retry_min": "1m", "retry_max": "1h",
                                         "max_age": "5d"})]:
            with self.subTest(listener=listener, route=route):
                code, out = self.check(listener, route)
                self.assertEqual(code, 0, out)
                self.assertNotIn("durable queue", out)

    def test_bad_retry_settings_are_refused(self):
        cases = [
            ({"retry_min": "0s"}, r"route\.default\.retry_min"),
            ({"retry_min": "abc"}, r"route\.default\.retry_min"),
            ({"retry_max": "abc"}, r"route\.default\.retry_max"),
            ({"max_age": "abc"}, r"route\.default\.max_age"),
            # retry_max below retry_min: either key may carry the error.
            ({"retry_min": "10m", "retry_max": "5m"}, r"route\.default\.retry_m(in|ax)"),
        ]
        for route, key in cases:
            with self.subTest(route=route):
                code, out = self.check({"delivery": "queue"}, route)
                self.assertNotEqual(code, 0, out)
                self.assertRegex(out, r"postern\.toml:\d+:\d+: ")
                self.assertRegex(out, key)
                self.assertNotIn("unknown key", out)


if __name__ == "__main__":
    unittest.main()
