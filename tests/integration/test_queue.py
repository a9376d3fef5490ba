"""delivery = "queue" with an upstream route: the durable queue (issue 4) and its bounces.

The client hears "250 2.0.0 Ok: queued as ID" once the message is durable in the spool
(SPOOL/queue/ID.eml: postern's Received header and the message, exactly what will be sent;
ID.json: the envelope, as the outbox sidecar, plus "route"; ID.state: one line per recipient
that reached a final state, "D <index>" or "F <index> <code> <text>", and "B <index>" once a
failure is reported to the sender or needs no report). A scheduler delivers each message at
once through the upstream pool, all recipients in one transaction: 2xx delivered, 5xx failed,
4xx and connection, TLS or AUTH failures deferred and retried with exponential backoff
(retry_min, doubling, capped at retry_max, jitter 0.75-1.25) until max_age, after which the
recipient fails as "expired: not delivered within max_age; last error: ...".

Failed recipients are reported to the envelope sender in a bounce (RFC 3464 multipart/report:
a text/plain part, a message/delivery-status part with a block per failed recipient, and the
original's headers as text/rfc822-headers, or the whole original as message/rfc822 with
RET=FULL), stored in the spool as a new message from <> to the sender through the same route
(event=bounce_queued). No bounce goes to a null sender, nor for recipients whose NOTIFY does
not include FAILURE (event=bounce_skipped). A message leaves the spool (event=message_done)
once no recipient is pending and every failed one is reported. At start-up every pair in
SPOOL/queue is delivered again (recipients recorded in .state are not sent again); a
truncated .eml or an unparseable .json is moved to SPOOL/corrupt/ and never delivered.

Retry settings are short here (retry_min 1s, retry_max 2s) so that every test stays well under
30 seconds. An upstream that is "down" is a loopback port nothing listens on; it comes up by
starting an aiosmtpd on that very port. The aiosmtpd upstream refuses "refuse..." recipients
(550 5.1.1) and defers "defer..." ones (451 4.3.0); bounces reach it as separate messages with
MAIL FROM:<>.
"""
import email
import email.policy
import email.utils
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest
import zlib

from harness import BINARY, QUEUED, Postern, strip_received, wait_for
from upstreams import AiosmtpdUpstream, RelayTestCase, closed_port, log_events

# The keys of the outbox sidecar (docs/outbox.md); the queue's .json has these plus "route"
# and "crc32" (of the .eml).
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
        """One transaction; asserts "250 2.0.0 Ok: queued as ID" and returns ID. A recipient is
        an address or (address, RCPT parameters), e.g. ("a@example.net", "NOTIFY=NEVER");
        mail_from="" is the null sender."""
        c = self.client(p)
        mail = c.cmd(f"MAIL FROM:<{mail_from}>" + (" " + mail_params if mail_params else ""))
        self.assertEqual(mail[0], 250, mail)
        for r in rcpts:
            address, params = (r, "") if isinstance(r, str) else r
            reply = c.cmd(f"RCPT TO:<{address}>" + (" " + params if params else ""))
            self.assertEqual(reply[0], 250, (r, reply))
        code, text, _ = c.cmd("DATA")
        self.assertEqual(code, 354, text)
        c.send(body.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        code, text, _ = c.reply()
        self.assertEqual(code, 250, text)
        m = QUEUED.match(text)
        self.assertTrue(m, text)
        c.cmd("QUIT")
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

    # -- bounces

    @staticmethod
    def is_bounce(m):
        """Whether a message stored by the aiosmtpd upstream came with MAIL FROM:<>."""
        return (m["mail_line"] or "").startswith("FROM:<>")

    def bounces(self, up):
        return [m for m in up.messages() if self.is_bounce(m)]

    def originals(self, up):
        return [m for m in up.messages() if not self.is_bounce(m)]

    def wait_bounces(self, up, count, timeout=10):
        wait_for(lambda: len(self.bounces(up)) >= count, timeout)
        return self.bounces(up)

    def bounce_event(self, p, qid, event="bounce_queued", timeout=10):
        """The one bounce_queued (or bounce_skipped) line of message qid."""
        found = self.wait_event(p, event, timeout=timeout,
                                where=lambda e: e.get("queue_id") == qid)
        self.assertEqual(len(found), 1, [e["_line"] for e in found])
        return found[0]

    def wait_done(self, p, qid, timeout=10):
        """The one event=message_done line of message qid (a message is done once)."""
        self.wait_event(p, "message_done", timeout=timeout,
                        where=lambda e: e.get("queue_id") == qid)
        time.sleep(0.2)  # a second line would follow at once
        found = [e for e in self.events(p, "message_done") if e.get("queue_id") == qid]
        self.assertEqual(len(found), 1, "message_done logged %d times for %s:\n%s"
                         % (len(found), qid, "\n".join(e["_line"] for e in found)))
        self.assertAlive(p)
        return found[0]

    def assertAlive(self, p):
        self.assertIsNone(p.proc.poll(), "postern exited with status %s:\n%s"
                          % (p.proc.returncode, p.log()[-3000:]))

    def assertDateField(self, value, context):
        self.assertIsNotNone(value, context)
        self.assertIsNotNone(email.utils.parsedate_to_datetime(str(value)), context)

    def assertDsnPerMessage(self, per_message, qid, envid, context):
        """The per-message fields of a message/delivery-status part (RFC 3464 2.2)."""
        self.assertEqual(self.dsn_value(per_message["Reporting-MTA"]), ("dns", "postern.test"),
                         context)
        self.assertEqual(per_message["X-Postern-Queue-ID"], qid, context)
        self.assertDateField(per_message["Arrival-Date"], context)
        if envid is None:
            self.assertIsNone(per_message["Original-Envelope-Id"], context)
        else:
            self.assertEqual(per_message["Original-Envelope-Id"], envid, context)

    def assertBounce(self, m, qid, failed, sender="app@example.org", envid=None):
        """A bounce as the upstream received it (m, from AiosmtpdUpstream.messages()) for
        message qid: from <> to the sender, an RFC 3464 multipart/report reporting exactly the
        recipients `failed`, in that order: dicts with "rcpt", "status", "diagnostic" (a
        regular expression the Diagnostic-Code matches) and optionally "orcpt" (the expected
        Original-Recipient; absent: the field must be absent). Returns
        (message, [its three parts], per-message fields, [per-recipient fields])."""
        # The envelope: MAIL FROM:<>, RCPT TO:<sender>, a transaction of its own.
        self.assertTrue(m["mail_line"].startswith("FROM:<>"), m["mail_line"])
        self.assertEqual(m["rcpt_tos"], [sender])
        msg = email.message_from_bytes(m["data"], policy=email.policy.default)
        context = m["data"].decode("utf-8", "replace")

        # The header.
        self.assertEqual(msg["From"].addresses[0].addr_spec, "MAILER-DAEMON@postern.test",
                         context)
        self.assertEqual(msg["From"].addresses[0].display_name, "Mail Delivery System", context)
        self.assertEqual([a.addr_spec for a in msg["To"].addresses], [sender], context)
        self.assertEqual(msg["Subject"], "Undelivered Mail Returned to Sender", context)
        self.assertEqual(msg["Auto-Submitted"], "auto-replied", context)
        self.assertEqual(msg["MIME-Version"], "1.0", context)
        self.assertTrue(msg["Message-ID"], context)
        self.assertDateField(msg["Date"], context)
        self.assertFalse(m["data"].startswith(b"Received: "), context)

        # multipart/report; report-type=delivery-status with three parts (RFC 3462, 3464).
        self.assertEqual(msg.get_content_type(), "multipart/report", context)
        self.assertEqual(msg.get_param("report-type"), "delivery-status", context)
        parts = list(msg.iter_parts())
        self.assertEqual(len(parts), 3, context)
        self.assertEqual(parts[0].get_content_type(), "text/plain", context)
        self.assertEqual(parts[1].get_content_type(), "message/delivery-status", context)
        self.assertIn(parts[2].get_content_type(), ("text/rfc822-headers", "message/rfc822"),
                      context)
        self.assertEqual(msg.defects, [], context)
        for part in parts:
            self.assertEqual(part.defects, [], context)

        # 1. For people: names the message and every failed recipient.
        text = parts[0].get_content()
        self.assertIn(qid, text)
        for f in failed:
            self.assertIn(f["rcpt"], text)

        # 2. For programs: the per-message fields, then one block per failed recipient.
        blocks = parts[1].get_payload()
        self.assertEqual(len(blocks), 1 + len(failed), context)
        per_message, per_rcpt = blocks[0], blocks[1:]
        self.assertDsnPerMessage(per_message, qid, envid, context)
        for f, block in zip(failed, per_rcpt):
            for name in ("Final-Recipient", "Action", "Status", "Diagnostic-Code",
                         "Last-Attempt-Date"):
                self.assertEqual(len(block.get_all(name) or []), 1, (name, context))
            self.assertEqual(self.dsn_value(block["Final-Recipient"]), ("rfc822", f["rcpt"]),
                             context)
            self.assertEqual(block["Action"], "failed", context)
            self.assertEqual(block["Status"], f["status"], context)
            self.assertRegex(str(block["Diagnostic-Code"]), f["diagnostic"])
            self.assertDateField(block["Last-Attempt-Date"], context)
            if f.get("orcpt") is None:
                self.assertIsNone(block["Original-Recipient"], context)
            else:
                self.assertEqual(self.dsn_value(block["Original-Recipient"]),
                                 self.dsn_value(f["orcpt"]), context)
        return msg, parts, per_message, per_rcpt

    @staticmethod
    def dsn_value(value):
        """("type", "value") of a "type; value" DSN field (the space is optional)."""
        kind, _, rest = str(value).partition(";")
        return kind.strip().lower(), rest.strip()


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
            self.assertEqual(set(env), SIDECAR_KEYS | {"route", "crc32"}, env)
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


class SilentServer:
    """A TCP server that accepts connections and never says a word (an upstream hung before its
    greeting); counts the connections open at once."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.open = []
        self.peak = 0
        self.total = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.open = [c for c in self.open if not self._closed(c)] + [conn]
                self.total += 1
                self.peak = max(self.peak, len(self.open))

    @staticmethod
    def _closed(conn):
        try:
            conn.setblocking(False)
            return conn.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def close(self):
        self.sock.close()
        with self.lock:
            for c in self.open:
                c.close()


class QueueRoutesTest(QueueTestCase):

    def test_a_hung_upstream_holds_only_its_own_route(self):
        """Two routes chosen by recipient domain: "stuck" relays through an upstream that
        accepts connections and never greets, "default" through a working one. The stuck
        route's attempts wait for its greeting timeout, at most max_connections (2) of them at
        a time however many messages are due; the other route's mail is delivered meanwhile,
        at once."""
        silent = SilentServer()
        self.addCleanup(silent.close)
        up = self.upstream(tls="none")
        routes = {"default": {"upstream": "smart", "retry_min": "1s", "retry_max": "2s"},
                  "stuck": {"upstream": "hung", "retry_min": "1s", "retry_max": "2s"}}
        config = self.postern_config(
            dict(PLAIN, hosts=[up.address], host_down_time="1s"),
            upstreams={"hung": dict(PLAIN, hosts=[silent.address], max_connections=2,
                                    greeting_timeout="20s", host_down_time="1s")},
            routes=routes, listener={"delivery": "queue"},
            extra_toml='[[route_rule]]\nrecipient_domain = "stuck.example"\nroute = "stuck"\n')
        p = Postern(server={"spool_dir": self.spool}, **config)
        self.addCleanup(p.cleanup)
        p.start()
        stuck = [self.queue(p, rcpts=[f"s{i}@stuck.example"]) for i in range(6)]
        self.assertTrue(wait_for(lambda: silent.total >= 2, 5), silent.total)
        started = time.time()
        fine = [self.queue(p, rcpts=[f"f{i}@example.net"]) for i in range(5)]
        messages = up.wait_messages(5, timeout=10)
        self.assertEqual(len(messages), 5, p.log()[-3000:])
        self.assertLess(time.time() - started, 5, "the working route waited for the hung one")
        for qid in fine:
            [d] = self.wait_delivery(p, qid=qid, result="delivered")
            self.assertEqual(d["attempt"], "1", d["_line"])
        time.sleep(1)
        with silent.lock:
            self.assertEqual(silent.peak, 2, "more attempts than max_connections")
            self.assertEqual(silent.total, 2, "an attempt did not wait for a free connection")
        # None of the stuck route's messages has finished an attempt yet.
        for qid in stuck:
            self.assertEqual(self.deliveries(p, qid=qid), [])
        for i in range(6):
            self.assertEqual(self.upstream_rcpts(up, f"s{i}@stuck.example"), 0)


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


    def test_a_damaged_message_file_is_quarantined_before_it_is_sent(self):
        """The .json records the .eml's CRC-32: a message file changed on disk (same size, one
        octet flipped) is found when an attempt reads it, moved to corrupt/ and never sent;
        an intact one queued next to it is delivered."""
        port, up = self.down_upstream()
        p = self.queue_postern(dict(PLAIN, hosts=[f"127.0.0.1:{port}"]))
        intact = self.queue(p, rcpts=["intact@example.net"])
        damaged = self.queue(p, rcpts=["damaged@example.net"])
        for qid in (intact, damaged):
            eml, env = self.spool_record(qid)
            self.assertEqual(env.get("crc32"), zlib.crc32(eml), env)
        # Both were tried once (from memory) and deferred: later attempts read the file.
        for qid in (intact, damaged):
            self.wait_delivery(p, qid=qid, result="deferred")
        path = os.path.join(self.queue_dir, damaged + ".eml")
        with open(path, "r+b") as f:
            data = f.read()
            f.seek(len(data) - 5)
            f.write(bytes([data[-5] ^ 0x20]))
        up.start()
        [corrupt] = self.wait_event(p, "spool_corrupt")
        self.assertEqual(corrupt.get("queue_id"), damaged, corrupt["_line"])
        self.assertIn("CRC-32", corrupt.get("reason", ""), corrupt["_line"])
        [m] = up.wait_messages(1)
        self.assertEqual(m["rcpt_tos"], ["intact@example.net"])
        self.assertSpoolEmpty(p)
        time.sleep(1.5)
        self.assertEqual(self.upstream_rcpts(up, "damaged@example.net"), 0)
        self.assertEqual(self.bounces(up), [], "a damaged message is not bounced")
        self.assertTrue({damaged + ".eml", damaged + ".json"} <= set(os.listdir(self.corrupt_dir)))


class QueueMixedResultsTest(QueueTestCase):

    def test_delivered_refused_and_deferred_recipients(self):
        # aiosmtpd's default refusal map: "refuse..." -> 550 5.1.1, "defer..." -> 451 4.3.0.
        up = self.upstream(tls="none")
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]))
        ok, refused, deferred = "ok@example.net", "refuse@example.net", "defer@example.net"
        qid = self.queue(p, rcpts=[ok, refused, deferred])

        # One delivery, to the recipient taken; the refused one is bounced to the sender.
        wait_for(lambda: len(up.messages()) >= 2)
        [m] = self.originals(up)
        self.assertEqual(m["rcpt_tos"], [ok])
        [bounce] = self.bounces(up)
        self.assertEqual(bounce["rcpt_tos"], ["app@example.org"])
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

        # The final states are recorded by recipient index, then that the failure is reported.
        self.assertTrue(wait_for(lambda: "B 1" in self.state_lines(qid)), self.state_lines(qid))
        lines = self.state_lines(qid)
        self.assertIn("D 0", lines)
        failed = [line for line in lines if line.startswith("F ")]
        self.assertEqual(len(failed), 1, lines)
        self.assertRegex(failed[0], r"^F 1 550 .*No such user here")
        self.assertLess(lines.index(failed[0]), lines.index("B 1"), lines)
        self.assertFalse([line for line in lines if re.match(r"^[DFB] 2\b", line)], lines)
        self.assertFalse([line for line in lines if re.match(r"^B 0\b", line)], lines)

        # The deferred recipient is retried, alone; the message waits for it.
        self.wait_delivery(p, timeout=6, qid=qid, rcpt=deferred, attempt="2")
        self.wait_delivery(p, timeout=8, qid=qid, rcpt=deferred, attempt="3")
        self.assertEqual(self.upstream_rcpts(up, ok), 1)
        self.assertEqual(self.upstream_rcpts(up, refused), 1)
        self.assertGreaterEqual(self.upstream_rcpts(up, deferred), 3)
        self.assertEqual(len(self.deliveries(p, rcpt=ok)), 1)
        self.assertEqual(len(self.deliveries(p, rcpt=refused)), 1)
        self.assertEqual(len(self.originals(up)), 1)
        self.assertEqual(len(self.bounces(up)), 1)
        self.assertEqual(sorted(n for n in self.queue_names() if n.startswith(qid)),
                         [qid + ".eml", qid + ".json", qid + ".state"])
        self.assertFalse([e for e in self.events(p, "message_done")
                          if e.get("queue_id") == qid])

        # Once it is delivered the message is done: its failure was reported already.
        up.stop()
        up.config["rcpt_replies"] = {"refuse": "550 5.1.1 No such user here"}
        up.start()
        self.wait_delivery(p, qid=qid, rcpt=deferred, result="delivered")
        done = self.wait_done(p, qid)
        self.assertEqual(done.get("failed"), "1", done["_line"])
        self.assertGreaterEqual(int(done.get("attempts", "0")), 4, done["_line"])
        self.assertSpoolEmpty(p)
        wait_for(lambda: len(self.originals(up)) >= 2)
        messages = self.originals(up)
        self.assertEqual([m["rcpt_tos"] for m in messages], [[ok], [deferred]])
        self.assertEqual(messages[1]["data"], messages[0]["data"])
        time.sleep(2.5)  # more than retry_max: nothing is tried any more
        self.assertEqual(self.upstream_rcpts(up, ok), 1)
        self.assertEqual(self.upstream_rcpts(up, refused), 1)
        self.assertEqual(len(self.originals(up)), 2)
        self.assertEqual(len(self.bounces(up)), 1, "a failure was reported twice")
        self.assertEqual(len(self.events(p, "bounce_queued")), 1)

    def test_deliveries_use_the_recipient_order_of_the_envelope(self):
        # Indexes in .state are positions in the .json recipients. The deferred recipient
        # keeps the message (and its .state) in the spool.
        up = self.upstream(tls="none")
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]))
        rcpts = ["refuse1@example.net", "a@example.net", "refuse2@example.net",
                 "defer@example.net"]
        qid = self.queue(p, rcpts=rcpts)
        self.assertTrue(wait_for(lambda: {"B 0", "B 2"} <= set(self.state_lines(qid))),
                        self.state_lines(qid))
        lines = self.state_lines(qid)
        # "A 1 <error>": one attempt so far, kept for restarts and `postern queue list`.
        self.assertEqual(sorted(" ".join(line.split(" ")[:2]) for line in lines),
                         ["A 1", "B 0", "B 2", "D 1", "F 0", "F 2"], lines)
        _, env = self.spool_record(qid)
        self.assertEqual([r["address"] for r in env["recipients"]], rcpts)
        # One bounce for both, in the envelope's order.
        [b] = self.wait_bounces(up, 1)
        diagnostic = r"^smtp; 550 5\.1\.1 No such user here$"
        self.assertBounce(b, qid, [
            {"rcpt": "refuse1@example.net", "status": "5.1.1", "diagnostic": diagnostic},
            {"rcpt": "refuse2@example.net", "status": "5.1.1", "diagnostic": diagnostic}])
        bq = self.bounce_event(p, qid)
        self.assertEqual(bq.get("nrcpt"), "2", bq["_line"])


class QueueBounceTest(QueueTestCase):
    """The bounce: what it says, and to whom it goes (or does not)."""

    BODY = (b"From: App <app@example.org>\r\n"
            b"To: ok@example.net, refuse@example.net, defer@example.net\r\n"
            b"Subject: mixed results\r\n"
            b"Message-ID: <mixed-1@example.org>\r\n"
            b"\r\n"
            b"The body, which a headers-only bounce leaves out.\r\n"
            b".a line that starts with a dot\r\n")

    def test_mixed_results_one_delivery_one_retry_one_bounce(self):
        up = self.upstream(tls="none")
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]))
        ok, refused, deferred = "ok@example.net", "refuse@example.net", "defer@example.net"
        qid = self.queue(p, rcpts=[ok, refused, deferred], body=self.BODY)

        bq = self.bounce_event(p, qid)
        bounce_id = bq.get("bounce_id")
        self.assertRegex(bounce_id or "", r"^[0-9A-HJKMNP-TV-Z]{14}$", bq["_line"])
        self.assertNotEqual(bounce_id, qid)
        self.assertEqual(bq.get("to"), "app@example.org", bq["_line"])
        self.assertEqual(bq.get("nrcpt"), "1", bq["_line"])

        # One delivery, one retry, one bounce.
        [b] = self.wait_bounces(up, 1)
        [m] = self.originals(up)
        self.assertEqual(m["rcpt_tos"], [ok])
        self.assertEqual(m["mail_from"], "app@example.org")
        self.wait_delivery(p, timeout=6, qid=qid, rcpt=deferred, attempt="2")
        self.assertEqual(len(self.originals(up)), 1)
        self.assertEqual(len(self.bounces(up)), 1)
        self.assertEqual(self.upstream_rcpts(up, refused), 1)
        self.assertGreaterEqual(self.upstream_rcpts(up, deferred), 2)

        # The bounce is a message of its own in the queue, delivered through the same route.
        [d] = self.wait_delivery(p, qid=bounce_id)
        self.assertDeliveryLine(d, bounce_id, "app@example.org", "delivered")
        self.assertEqual(d["host"], up.address, d["_line"])
        done = self.wait_done(p, bounce_id)
        self.assertEqual(done.get("failed"), "0", done["_line"])
        [mail] = [e for e in up.events("mail") if e["arg"].startswith("FROM:<>")]
        self.assertEqual(mail["arg"].split()[0], "FROM:<>")

        # What it says.
        _, parts, per_message, _ = self.assertBounce(b, qid, [
            {"rcpt": refused, "status": "5.1.1",
             "diagnostic": r"^smtp; 550 5\.1\.1 No such user here$"}])
        self.assertIn("550 5.1.1 No such user here", parts[0].get_content())
        self.assertNotIn(ok, parts[0].get_content())
        self.assertNotIn(deferred, parts[0].get_content())
        self.assertEqual(parts[2].get_content_type(), "text/rfc822-headers")
        headers = parts[2].get_content()
        self.assertIn("Subject: mixed results", headers)
        self.assertIn("Message-ID: <mixed-1@example.org>", headers)
        self.assertRegex(headers, r"^Received: from client\.test \(\[127\.0\.0\.1\]\)")
        self.assertIn(" id " + qid, headers)
        self.assertNotIn("The body", headers)
        self.assertNotIn("a line that starts with a dot", headers)

        # The original waits for its deferred recipient only.
        self.assertEqual(sorted(n for n in self.queue_names() if n.startswith(qid)),
                         [qid + ".eml", qid + ".json", qid + ".state"])
        self.assertIn("B 1", self.state_lines(qid))

    def test_ret_full_returns_the_whole_message(self):
        up = self.upstream(tls="none")
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]))
        body = self.BODY + b"\r\n.\r\n..two dots\r\n\xc3\xa9t\xc3\xa9 8-bit\r\nlast line\r\n"
        qid = self.queue(p, rcpts=["refuse@example.net"], body=body,
                         mail_params="RET=FULL BODY=8BITMIME")
        [b] = self.wait_bounces(up, 1)
        msg, parts, _, _ = self.assertBounce(b, qid, [
            {"rcpt": "refuse@example.net", "status": "5.1.1",
             "diagnostic": r"^smtp; 550 5\.1\.1 No such user here$"}])
        self.assertEqual(parts[2].get_content_type(), "message/rfc822")
        inner = parts[2].get_content()
        self.assertEqual(inner["Subject"], "mixed results")
        self.assertEqual(inner["Message-ID"], "<mixed-1@example.org>")
        # The whole original, byte for byte: our Received header and what the client sent,
        # up to the CRLF that belongs to the closing boundary (RFC 2046 5.1.1).
        start = b["data"].index(b"Content-Type: message/rfc822\r\n\r\n") + \
            len(b"Content-Type: message/rfc822\r\n\r\n")
        end = b["data"].index(b"\r\n--" + msg.get_boundary().encode() + b"--")
        returned = b["data"][start:end]
        self.assertEqual(strip_received(returned), body)
        self.assertIn(b" id " + qid.encode(), returned[:len(returned) - len(body)])
        # 8-bit content in the bounce: announced as such.
        self.assertIn("BODY=8BITMIME", b["mail_options"])
        self.assertSpoolEmpty(p)
        done = self.wait_done(p, qid)
        self.assertEqual(done.get("failed"), "1", done["_line"])

    def test_envid_and_orcpt_are_reported(self):
        up = self.upstream(tls="none")
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]))
        qid = self.queue(p, body=self.BODY, mail_params="ENVID=app-envelope-0042", rcpts=[
            ("ok@example.net", "ORCPT=rfc822;list-ok@example.org"),
            ("refuse-a@example.net", "NOTIFY=FAILURE ORCPT=rfc822;Original.A@example.org"),
            "refuse-b@example.net"])
        [b] = self.wait_bounces(up, 1)
        diagnostic = r"^smtp; 550 5\.1\.1 No such user here$"
        self.assertBounce(b, qid, envid="app-envelope-0042", failed=[
            {"rcpt": "refuse-a@example.net", "status": "5.1.1", "diagnostic": diagnostic,
             "orcpt": "rfc822; Original.A@example.org"},
            {"rcpt": "refuse-b@example.net", "status": "5.1.1", "diagnostic": diagnostic}])
        self.assertNotIn(b"list-ok@example.org", b["data"])
        self.assertSpoolEmpty(p)
        done = self.wait_done(p, qid)
        self.assertEqual(done.get("failed"), "2", done["_line"])

    def test_a_null_sender_gets_no_bounce(self):
        up = self.upstream(tls="none")
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]))
        qid = self.queue(p, mail_from="", rcpts=["ok@example.net", "refuse@example.net"])
        skipped = self.bounce_event(p, qid, "bounce_skipped")
        self.assertEqual(skipped.get("reason"), "null sender", skipped["_line"])
        self.assertEqual(skipped.get("nrcpt"), "1", skipped["_line"])
        self.assertSpoolEmpty(p)
        done = self.wait_done(p, qid)
        self.assertEqual(done.get("failed"), "1", done["_line"])
        self.assertEqual(done.get("attempts"), "1", done["_line"])
        [m] = up.wait_messages(1)
        self.assertEqual(m["rcpt_tos"], ["ok@example.net"])
        self.assertTrue(m["mail_line"].startswith("FROM:<>"), m["mail_line"])
        time.sleep(1.5)
        self.assertEqual(len(up.messages()), 1)
        self.assertEqual(self.events(p, "bounce_queued"), [])
        self.assertEqual(self.upstream_rcpts(up, "refuse@example.net"), 1)
        self.assertAlive(p)

    def test_a_refused_bounce_is_not_bounced_again(self):
        # The upstream refuses the sender's address too ("refuse..." -> 550 5.1.1): the bounce
        # fails, and a failed bounce (from <>) is dropped, never reported in turn.
        up = self.upstream(tls="none")
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]))
        sender = "refuse-sender@example.org"
        qid = self.queue(p, mail_from=sender, rcpts=["refuse@example.net"])
        bounce_id = self.bounce_event(p, qid).get("bounce_id")
        [d] = self.wait_delivery(p, qid=bounce_id)
        self.assertDeliveryLine(d, bounce_id, sender, "failed")
        self.assertTrue(d["reply"].startswith("550 5.1.1"), d["_line"])
        skipped = self.bounce_event(p, bounce_id, "bounce_skipped")
        self.assertEqual(skipped.get("reason"), "null sender", skipped["_line"])
        self.assertEqual(self.wait_done(p, qid).get("failed"), "1")
        self.assertEqual(self.wait_done(p, bounce_id).get("failed"), "1")
        self.assertSpoolEmpty(p)
        time.sleep(1.5)
        self.assertEqual(len(self.events(p, "bounce_queued")), 1)
        self.assertEqual(self.upstream_rcpts(up, sender), 1)
        self.assertEqual(up.messages(), [])
        self.assertAlive(p)

    def test_notify_without_failure_gets_no_bounce(self):
        up = self.upstream(tls="none")
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]))
        silent = {}
        for notify in ("NEVER", "SUCCESS", "DELAY", "SUCCESS,DELAY"):
            qid = silent[notify] = self.queue(p, rcpts=[
                "ok@example.net", ("refuse@example.net", "NOTIFY=" + notify)])
            skipped = self.bounce_event(p, qid, "bounce_skipped")
            self.assertEqual(skipped.get("reason"), "NOTIFY does not ask for it",
                             skipped["_line"])
            self.assertEqual(skipped.get("nrcpt"), "1", skipped["_line"])
            done = self.wait_done(p, qid)
            self.assertEqual(done.get("failed"), "1", done["_line"])
            self.assertFalse([e for e in self.events(p, "bounce_queued")
                              if e.get("queue_id") == qid])
        # A positive control in the same postern: FAILURE among others asks for a bounce.
        wanted = self.queue(p, mail_from="control@example.org",
                            rcpts=[("refuse@example.net", "NOTIFY=SUCCESS,FAILURE")])
        # Two refused recipients, only one of which wants to hear of it.
        mixed = self.queue(p, mail_from="mixed@example.org",
                           rcpts=[("refuse-quiet@example.net", "NOTIFY=NEVER"),
                                  "refuse-loud@example.net"])
        self.bounce_event(p, wanted)
        bq = self.bounce_event(p, mixed)
        self.assertEqual(bq.get("nrcpt"), "1", bq["_line"])
        bounces = self.wait_bounces(up, 2)
        self.assertSpoolEmpty(p)
        time.sleep(1.5)
        bounces = self.bounces(up)
        self.assertEqual(sorted(b["rcpt_tos"][0] for b in bounces),
                         ["control@example.org", "mixed@example.org"])
        diagnostic = r"^smtp; 550 5\.1\.1 No such user here$"
        for b in bounces:
            if b["rcpt_tos"] == ["control@example.org"]:
                self.assertBounce(b, wanted, sender="control@example.org", failed=[
                    {"rcpt": "refuse@example.net", "status": "5.1.1",
                     "diagnostic": diagnostic}])
            else:
                self.assertBounce(b, mixed, sender="mixed@example.org", failed=[
                    {"rcpt": "refuse-loud@example.net", "status": "5.1.1",
                     "diagnostic": diagnostic}])
                self.assertNotIn(b"refuse-quiet", b["data"])
        self.assertEqual(len(self.originals(up)), len(silent))


class QueueExpiryTest(QueueTestCase):

    def test_pending_recipient_expires_after_max_age(self):
        # The upstream is down until the recipient expired; the bounce then waits for it too.
        port, up = self.down_upstream()
        p = self.queue_postern(dict(PLAIN, hosts=[f"127.0.0.1:{port}"]),
                               route={"max_age": "4s"})
        started = time.time()
        qid = self.queue(p, rcpts=["late@example.net"],
                         body=b"Subject: too late\r\nMessage-ID: <late@example.org>\r\n\r\nx\r\n")
        self.wait_delivery(p, qid=qid, result="deferred")
        [failed] = self.wait_delivery(p, timeout=12, qid=qid, result="failed")
        elapsed = time.time() - started
        self.assertDeliveryLine(failed, qid, "late@example.net", "failed", attempt_line=False)
        self.assertTrue(failed["reply"].startswith(
            "expired: not delivered within max_age; last error: "), failed["_line"])
        # received_at has whole seconds: allow expiry up to a second early.
        self.assertGreaterEqual(elapsed, 3.0)

        # Reported at once: the original is done, the bounce is queued.
        bq = self.bounce_event(p, qid)
        bounce_id = bq.get("bounce_id")
        self.assertEqual(bq.get("to"), "app@example.org", bq["_line"])
        self.assertEqual(bq.get("nrcpt"), "1", bq["_line"])
        done = self.wait_done(p, qid)
        self.assertEqual(done.get("failed"), "1", done["_line"])
        wait_for(lambda: not [n for n in self.queue_names() if n.startswith(qid)])
        self.assertEqual([n for n in self.queue_names() if n.startswith(qid)], [])
        eml, env = self.spool_record(bounce_id)
        self.assertEqual(env["mail_from"], "")
        self.assertEqual(env["recipients"], [{"address": "app@example.org"}])
        self.assertEqual(env["route"], "default")
        self.assertTrue(eml.startswith(b"From: Mail Delivery System <MAILER-DAEMON@postern.test>"),
                        eml[:200])

        # The bounce is tried, deferred, and delivered once the upstream is up.
        self.wait_delivery(p, qid=bounce_id, result="deferred")
        up.start()
        [b] = self.wait_bounces(up, 1)
        [d] = self.wait_delivery(p, qid=bounce_id, result="delivered")
        self.assertGreaterEqual(int(d["attempt"]), 2, d["_line"])
        self.wait_done(p, bounce_id)
        self.assertSpoolEmpty(p)
        _, parts, _, _ = self.assertBounce(b, qid, [
            {"rcpt": "late@example.net", "status": "4.4.7",
             "diagnostic": r"^X-Postern; expired: not delivered within max_age; last error: "}])
        self.assertIn("Subject: too late", parts[2].get_content())

        # Final: no more attempts for the original.
        count = len(self.deliveries(p, qid=qid))
        time.sleep(2.5)
        self.assertEqual(len(self.deliveries(p, qid=qid)), count, p.log()[-3000:])
        self.assertEqual(self.upstream_rcpts(up, "late@example.net"), 0)
        self.assertEqual(len(up.messages()), 1)

    def test_expired_recipient_reports_the_last_error(self):
        # The upstream is up and defers the recipient until it expires: Status 4.4.7, not the
        # 4.3.0 of the last reply, which the Diagnostic-Code carries.
        up = self.upstream(tls="none")
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]), route={"max_age": "2s"})
        qid = self.queue(p, rcpts=["ok@example.net", "defer@example.net"])
        [failed] = self.wait_delivery(p, timeout=10, qid=qid, result="failed")
        self.assertEqual(failed["reply"], "expired: not delivered within max_age; "
                                          "last error: 451 4.3.0 Try later", failed["_line"])
        [b] = self.wait_bounces(up, 1)
        self.assertBounce(b, qid, [
            {"rcpt": "defer@example.net", "status": "4.4.7",
             "diagnostic": r"^X-Postern; expired: not delivered within max_age; "
                           r"last error: 451 4\.3\.0 Try later$"}])
        self.assertSpoolEmpty(p)
        done = self.wait_done(p, qid)
        self.assertEqual(done.get("failed"), "1", done["_line"])
        self.assertEqual([m["rcpt_tos"] for m in self.originals(up)], [["ok@example.net"]])


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
