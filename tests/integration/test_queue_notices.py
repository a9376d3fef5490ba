"""Queue mode: the notices postern sends besides bounces, and a spool on a disk that fills up.

Delay warnings (route key delay_warning, off by default): after a deferral, once the message is
delay_warning old and no warning was sent yet, postern queues ONE RFC 3464 report from <> to the
envelope sender ("Delayed Mail (still being retried)", Action: delayed, Status 4.x.x,
Will-Retry-Until, the original's headers only), for the pending recipients whose NOTIFY is
absent or includes DELAY. A "W" line in SPOOL/queue/ID.state records that it was sent, so that
a restart does not send it again. No warning goes to <> nor to recipients that did not ask.

Relayed notices (RFC 3461 4.1 / RFC 3464 Action relayed): a recipient with NOTIFY=SUCCESS that
is delivered through an upstream that does not offer DSN gets a "Successful Mail Delivery
Report" from <> to the sender (Status 2.x.x from the upstream's reply). An upstream that offers
DSN gets the NOTIFY parameter instead, and postern sends nothing.

Disk full: the spool on a 4 MiB tmpfs (needs root/CAP_SYS_ADMIN; skipped otherwise). With the
free-space floor off, a message that does not fit gets 451 4.3.0, never a 250; every message that
got a 250 is complete in the spool and delivered exactly once when the upstream comes back.
With a floor (min_free_space), MAIL gets 452 4.3.1 while the disk is below it and is accepted
again once space returns.

Retry settings are short (retry_min/retry_max 1s) so that the file runs in well under 90 s.
The aiosmtpd upstream (upstreams.AiosmtpdUpstream) defers "defer..." recipients with
451 4.3.0 Try later, refuses "refuse..." ones, and does not offer DSN; notices reach it as
messages of their own with MAIL FROM:<>.
"""
import collections
import datetime
import email
import email.policy
import email.utils
import os
import re
import subprocess
import time
import unittest

from harness import QUEUED, Postern, strip_received, wait_for
from test_queue import PLAIN, QueueTestCase
from upstreams import log_events

SENDER = "app@example.org"

# What postern answers at the end of the data when it cannot store the message (451) or when
# the free-space floor is crossed (452, at MAIL); see docs/troubleshooting.md.
STORE_FAILED = (451, "4.3.0")
STORAGE_LOW = (452, "4.3.1")


class NoticeTestCase(QueueTestCase):
    """QueueTestCase with a checker for postern's delivery status notifications of any kind."""

    ORIGINAL = (b"From: App <app@example.org>\r\n"
                b"To: several@example.net\r\n"
                b"Subject: notice test\r\n"
                b"Message-ID: <notice-1@example.org>\r\n"
                b"\r\n"
                b"BODY-MARKER: the body, which a notice never carries.\r\n")

    def notices(self, up, kind=None):
        """The messages from <> that reached the aiosmtpd upstream, optionally only those whose
        Subject is `kind`."""
        out = []
        for m in self.bounces(up):
            msg = email.message_from_bytes(m["data"], policy=email.policy.default)
            if kind is None or msg["Subject"] == kind:
                out.append(m)
        return out

    def assertNotice(self, data, qid, subject, action, rcpts, sender=SENDER, envid=None,
                     envelope=None):
        """A notice as the upstream received it (data: the DATA bytes; envelope: the
        (MAIL argument, [RCPT addresses]) when known) for message qid: from <> to the sender,
        an RFC 3464 multipart/report with Subject `subject` reporting exactly `rcpts`, in that
        order, with Action `action`: dicts with "rcpt", "status", "diagnostic" (a regular
        expression for the Diagnostic-Code) and optionally "orcpt". Returns
        (message, parts, per-message fields, [per-recipient fields])."""
        if envelope is not None:
            mail_line, rcpt_tos = envelope
            self.assertTrue(mail_line.startswith("FROM:<>"), mail_line)
            self.assertEqual(rcpt_tos, [sender])
        msg = email.message_from_bytes(data, policy=email.policy.default)
        context = data.decode("utf-8", "replace")

        self.assertEqual(msg["From"].addresses[0].addr_spec, "MAILER-DAEMON@postern.test",
                         context)
        self.assertEqual([a.addr_spec for a in msg["To"].addresses], [sender], context)
        self.assertEqual(msg["Subject"], subject, context)
        self.assertEqual(msg["Auto-Submitted"], "auto-replied", context)
        self.assertEqual(msg["MIME-Version"], "1.0", context)
        self.assertTrue(msg["Message-ID"], context)
        self.assertDateField(msg["Date"], context)

        self.assertEqual(msg.get_content_type(), "multipart/report", context)
        self.assertEqual(msg.get_param("report-type"), "delivery-status", context)
        self.assertEqual(msg.defects, [], context)
        parts = list(msg.iter_parts())
        self.assertEqual([p.get_content_type() for p in parts],
                         ["text/plain", "message/delivery-status", "text/rfc822-headers"],
                         context)
        for part in parts:
            self.assertEqual(part.defects, [], context)

        # 1. For people: the message and every reported recipient, nobody else.
        text = parts[0].get_content()
        self.assertIn(qid, text)
        for r in rcpts:
            self.assertIn("<%s>" % r["rcpt"], text)
        self.assertEqual(len(re.findall(r"^<[^>]*>: ", text, re.M)), len(rcpts), text)

        # 2. For programs.
        blocks = parts[1].get_payload()
        self.assertEqual(len(blocks), 1 + len(rcpts), context)
        per_message, per_rcpt = blocks[0], blocks[1:]
        self.assertDsnPerMessage(per_message, qid, envid, context)
        for r, block in zip(rcpts, per_rcpt):
            for name in ("Final-Recipient", "Action", "Status", "Diagnostic-Code"):
                self.assertEqual(len(block.get_all(name) or []), 1, (name, context))
            self.assertEqual(self.dsn_value(block["Final-Recipient"]), ("rfc822", r["rcpt"]),
                             context)
            self.assertEqual(block["Action"], action, context)
            self.assertEqual(block["Status"], r["status"], context)
            self.assertRegex(str(block["Diagnostic-Code"]), r["diagnostic"])
            if r.get("orcpt") is None:
                self.assertIsNone(block["Original-Recipient"], context)
            else:
                self.assertEqual(self.dsn_value(block["Original-Recipient"]),
                                 self.dsn_value(r["orcpt"]), context)
            if action == "delayed":
                # RFC 3464 2.3.9: when postern will give up.
                self.assertEqual(len(block.get_all("Will-Retry-Until") or []), 1, context)
                self.assertDateField(block["Will-Retry-Until"], context)
            else:
                self.assertIsNone(block["Will-Retry-Until"], context)

        # 3. The original's header section, never its body (RFC 3461 4.3: RET is for failures).
        headers = parts[2].get_content()
        self.assertIn(" id " + qid, headers)
        self.assertNotIn("BODY-MARKER", context)
        return msg, parts, per_message, per_rcpt

    def notice_events(self, p, kind, event="bounce_queued", log=None):
        """The bounce_queued (or bounce_skipped) lines of notices of one kind."""
        return [e for e in log_events(p.log() if log is None else log, event)
                if e.get("kind") == kind]


class DelayWarningTest(NoticeTestCase):
    """route.delay_warning: one "still being retried" report per message, to whom asked."""

    ROUTE = {"delay_warning": "2s", "retry_min": "1s", "retry_max": "1s", "max_age": "1h"}

    def test_one_delay_warning_for_the_recipients_that_want_it(self):
        """A message with a delivered recipient and four deferred ones (no NOTIFY, DELAY,
        FAILURE, NEVER) gets exactly one delay warning, after the first deferral at which it is
        2s old (not at the first attempt), listing only the deferred recipients that asked for
        DELAY (explicitly or by default), with Status 4.3.0 and the upstream's 451 as the
        Diagnostic-Code, Will-Retry-Until = arrival + max_age, and only the original's headers
        even with RET=FULL. The message stays queued and is retried; the warning is recorded
        ("W" in .state) and neither repeated later nor after a SIGKILL and restart."""
        up = self.upstream(tls="none")
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]), route=self.ROUTE)
        rcpts = ["ok@example.net",
                 "defer-plain@example.net",
                 ("defer-delay@example.net", "NOTIFY=DELAY,FAILURE "
                                             "ORCPT=rfc822;Delay.List@example.org"),
                 ("defer-fail@example.net", "NOTIFY=FAILURE"),
                 ("defer-never@example.net", "NOTIFY=NEVER")]
        started = time.time()
        qid = self.queue(p, rcpts=rcpts, body=self.ORIGINAL, mail_params="RET=FULL ENVID=dw-77")

        # The warning is queued like a bounce, through the same route.
        [bq] = self.wait_event(p, "bounce_queued", timeout=10,
                               where=lambda e: e.get("kind") == "delay warning")
        warned_after = time.time() - started
        self.assertEqual(bq.get("queue_id"), qid, bq["_line"])
        self.assertEqual(bq.get("to"), SENDER, bq["_line"])
        self.assertEqual(bq.get("nrcpt"), "2", bq["_line"])
        self.assertRegex(bq.get("bounce_id", ""), r"^[0-9A-HJKMNP-TV-Z]{14}$", bq["_line"])
        self.assertGreaterEqual(warned_after, 1.5, "warned before the message was 2s old")
        # Not at the first attempt (age 0): only after a later deferral.
        log = p.log()
        self.assertLess(log.index("attempt=2 "), log.index(bq["_line"]), log[-4000:])

        [notice] = self.wait_bounces(up, 1)
        diagnostic = r"^smtp; 451 4\.3\.0 Try later$"
        _, parts, per_message, per_rcpt = self.assertNotice(
            notice["data"], qid, "Delayed Mail (still being retried)", "delayed",
            envid="dw-77", envelope=(notice["mail_line"], notice["rcpt_tos"]), rcpts=[
                {"rcpt": "defer-plain@example.net", "status": "4.3.0",
                 "diagnostic": diagnostic},
                {"rcpt": "defer-delay@example.net", "status": "4.3.0",
                 "diagnostic": diagnostic, "orcpt": "rfc822; Delay.List@example.org"}])
        arrival = email.utils.parsedate_to_datetime(str(per_message["Arrival-Date"]))
        for block in per_rcpt:
            until = email.utils.parsedate_to_datetime(str(block["Will-Retry-Until"]))
            self.assertEqual(until - arrival, datetime.timedelta(hours=1),
                             (str(block["Will-Retry-Until"]), str(per_message["Arrival-Date"])))
        self.assertIn("Subject: notice test", parts[2].get_content())
        for absent in ("ok@example.net", "defer-fail", "defer-never"):
            self.assertNotIn(absent, parts[0].get_content())
            self.assertNotIn(absent, str(parts[1]))
        [d] = self.wait_delivery(p, qid=bq["bounce_id"], result="delivered")
        self.assertEqual(d.get("rcpt", "").strip("<>"), SENDER, d["_line"])

        # Recorded, so that it is not sent again.
        self.assertTrue(wait_for(lambda: "W" in self.state_lines(qid)), self.state_lines(qid))

        # Further deferrals: no second warning; the message is still queued, not bounced.
        attempts = len(self.deliveries(p, qid=qid, rcpt="defer-plain@example.net"))
        self.wait_delivery(p, timeout=6, qid=qid, rcpt="defer-plain@example.net",
                           attempt=str(attempts + 2))
        time.sleep(0.5)
        self.assertEqual(len(self.bounces(up)), 1, "a second delay warning was sent")
        self.assertEqual(len(self.events(p, "bounce_queued")), 1)
        self.assertEqual(self.deliveries(p, qid=qid, result="failed"), [])
        self.assertFalse([e for e in self.events(p, "message_done")
                          if e.get("queue_id") == qid])
        self.assertTrue(os.path.exists(os.path.join(self.queue_dir, qid + ".eml")))
        self.assertEqual(self.upstream_rcpts(up, "ok@example.net"), 1)
        self.assertEqual([m["rcpt_tos"] for m in self.originals(up)], [["ok@example.net"]])

        # A restart does not forget that the warning was sent.
        self.restart(p)
        [recovered] = self.wait_event(p, "spool_recovered")
        self.assertEqual(recovered.get("messages"), "1", recovered["_line"])
        wait_for(lambda: len([e for e in self.events(p, "deferred")
                              if e.get("queue_id") == qid]) >= 2, 6)
        self.assertGreaterEqual(
            len([e for e in self.events(p, "deferred") if e.get("queue_id") == qid]), 2,
            p.log()[-3000:])
        time.sleep(0.5)
        self.assertEqual(self.events(p, "bounce_queued"), [], p.log()[-3000:])
        self.assertEqual(len(self.bounces(up)), 1, "the delay warning was sent again")
        self.assertAlive(p)

    def test_warning_while_the_upstream_is_down_then_success_notice(self):
        """With the upstream down, the deferral reason has no SMTP reply: the warning's Status
        is 4.0.0 and its Diagnostic-Code names the connection failure. The warning waits in
        the queue like any message; when the upstream comes up the original is delivered, the
        warning arrives once, and the recipient's NOTIFY=SUCCESS,DELAY also gets a relayed
        notice, made from the spooled copy (a later attempt) with the original's headers."""
        port, up = self.down_upstream()
        p = self.queue_postern(dict(PLAIN, hosts=[f"127.0.0.1:{port}"]), route=self.ROUTE)
        qid = self.queue(p, body=self.ORIGINAL,
                         rcpts=[("late@example.net", "NOTIFY=SUCCESS,DELAY")])
        [bq] = self.wait_event(p, "bounce_queued", timeout=10,
                               where=lambda e: e.get("kind") == "delay warning")
        self.assertEqual(bq.get("queue_id"), qid, bq["_line"])
        warning_id = bq["bounce_id"]
        self.wait_delivery(p, qid=warning_id, result="deferred")

        up.start()
        done = self.wait_done(p, qid)
        self.assertEqual(done.get("failed"), "0", done["_line"])
        [relayed] = self.wait_event(p, "bounce_queued",
                                    where=lambda e: e.get("kind") == "relayed notice")
        self.assertEqual(relayed.get("queue_id"), qid, relayed["_line"])
        self.assertTrue(wait_for(lambda: len(up.messages()) >= 3, 10),
                        [(m["mail_line"], m["rcpt_tos"]) for m in up.messages()])
        self.assertSpoolEmpty(p)
        time.sleep(1)
        self.assertEqual([m["rcpt_tos"] for m in self.originals(up)], [["late@example.net"]])
        [warning] = self.notices(up, "Delayed Mail (still being retried)")
        self.assertNotice(warning["data"], qid, "Delayed Mail (still being retried)", "delayed",
                          envelope=(warning["mail_line"], warning["rcpt_tos"]), rcpts=[
                              {"rcpt": "late@example.net", "status": "4.0.0",
                               "diagnostic": r"Connection refused"}])
        [notice] = self.notices(up, "Successful Mail Delivery Report")
        _, parts, _, _ = self.assertNotice(
            notice["data"], qid, "Successful Mail Delivery Report", "relayed",
            envelope=(notice["mail_line"], notice["rcpt_tos"]), rcpts=[
                {"rcpt": "late@example.net", "status": "2.0.0",
                 "diagnostic": r"^smtp; 250 2\.0\.0 Ok: queued as \d+$"}])
        self.assertIn("Subject: notice test", parts[2].get_content())
        self.assertEqual(len(up.messages()), 3)

    def test_no_warning_when_notify_does_not_ask_or_to_a_null_sender(self):
        """Deferred recipients with NOTIFY=FAILURE and NOTIFY=NEVER, and a message from <>,
        get no delay warning: the decision is recorded ("W" in .state) once the message is 2s
        old, nothing reaches the upstream from <>, no bounce_queued is logged, and each skip is
        logged as bounce_skipped kind="delay warning" with its reason, as a skipped bounce
        is."""
        up = self.upstream(tls="none")
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]), route=self.ROUTE)
        quiet = self.queue(p, rcpts=[("defer-fail@example.net", "NOTIFY=FAILURE"),
                                     ("defer-never@example.net", "NOTIFY=NEVER")])
        null = self.queue(p, mail_from="", rcpts=["defer@example.net"])
        for qid in (quiet, null):
            self.assertTrue(wait_for(lambda q=qid: "W" in self.state_lines(q), 10),
                            (qid, self.state_lines(qid), p.log()[-3000:]))
        # Time for a notice, had one been queued, to reach the upstream; more deferrals too.
        self.wait_delivery(p, timeout=5, qid=quiet, rcpt="defer-fail@example.net",
                           attempt=str(len(self.deliveries(p, qid=quiet,
                                                           rcpt="defer-fail@example.net")) + 1))
        time.sleep(0.5)
        self.assertEqual(self.bounces(up), [])
        self.assertEqual(self.events(p, "bounce_queued"), [])
        for qid in (quiet, null):
            self.assertEqual(self.deliveries(p, qid=qid, result="failed"), [])
            self.assertTrue(os.path.exists(os.path.join(self.queue_dir, qid + ".eml")))

        skipped = {e.get("queue_id"): e
                   for e in self.notice_events(p, "delay warning", "bounce_skipped")}
        self.assertEqual(sorted(skipped), sorted([quiet, null]),
                         "no bounce_skipped kind=\"delay warning\" for every skipped warning; "
                         "bounce_skipped lines: %s"
                         % [e["_line"] for e in self.events(p, "bounce_skipped")])
        self.assertEqual(skipped[quiet].get("reason"), "NOTIFY does not ask for it",
                         skipped[quiet]["_line"])
        self.assertEqual(skipped[null].get("reason"), "null sender", skipped[null]["_line"])

    def test_no_warning_without_delay_warning(self):
        """Without route.delay_warning (the default) a recipient deferred for several
        attempts and seconds gets no delay warning, and no "W" line is written."""
        up = self.upstream(tls="none")
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]),
                               route={"retry_min": "1s", "retry_max": "1s"})
        qid = self.queue(p, rcpts=["defer@example.net"], body=self.ORIGINAL)
        self.wait_delivery(p, timeout=8, qid=qid, rcpt="defer@example.net", attempt="5")
        time.sleep(0.5)
        self.assertEqual(self.bounces(up), [])
        self.assertEqual(self.events(p, "bounce_queued"), [])
        self.assertEqual(self.events(p, "bounce_skipped"), [])
        self.assertNotIn("W", self.state_lines(qid))
        self.assertEqual(self.deliveries(p, qid=qid, result="failed"), [])
        self.assertTrue(os.path.exists(os.path.join(self.queue_dir, qid + ".eml")))
        self.assertGreaterEqual(self.upstream_rcpts(up, "defer@example.net"), 5)


class RelayedNoticeTest(NoticeTestCase):
    """NOTIFY=SUCCESS through an upstream without DSN: postern says "relayed" itself."""

    def test_success_notice_through_an_upstream_without_dsn(self):
        """The aiosmtpd upstream does not offer DSN. Of a message's delivered recipients,
        those with NOTIFY including SUCCESS (and only those) are reported in one "Successful
        Mail Delivery Report" from <> to the sender: Action relayed, Status 2.0.0 and the
        upstream's 250 as Diagnostic-Code, ORCPT and ENVID reported, headers only. A message
        whose recipients did not ask for SUCCESS gets none, nor does one from <>."""
        up = self.upstream(tls="none")
        p = self.queue_postern(dict(PLAIN, hosts=[up.address]))
        qid = self.queue(p, body=self.ORIGINAL, mail_params="RET=FULL ENVID=rn-1", rcpts=[
            ("ok-s@example.net", "NOTIFY=SUCCESS,FAILURE"),
            "ok-plain@example.net",
            ("ok-f@example.net", "NOTIFY=FAILURE,DELAY"),
            ("ok-sd@example.net", "NOTIFY=SUCCESS,DELAY ORCPT=rfc822;list+2Bx@example.org"),
            ("ok-never@example.net", "NOTIFY=NEVER")])
        no_success = self.queue(p, mail_from="other@example.org",
                                rcpts=[("ok@example.net", "NOTIFY=FAILURE,DELAY"),
                                       "ok2@example.net"])
        from_null = self.queue(p, mail_from="", rcpts=[("ok@example.net", "NOTIFY=SUCCESS")])

        for q in (qid, no_success, from_null):
            done = self.wait_done(p, q)
            self.assertEqual(done.get("failed"), "0", done["_line"])
        [bq] = self.wait_event(p, "bounce_queued")
        self.assertEqual(bq.get("queue_id"), qid, bq["_line"])
        self.assertEqual(bq.get("kind"), "relayed notice", bq["_line"])
        self.assertEqual(bq.get("to"), SENDER, bq["_line"])
        self.assertEqual(bq.get("nrcpt"), "2", bq["_line"])
        # Three originals (from_null's with MAIL FROM:<> too) and one notice, to the sender.
        wait_for(lambda: len(up.messages()) >= 4)
        time.sleep(1)
        notices = [m for m in self.bounces(up) if m["rcpt_tos"] == [SENDER]]
        self.assertEqual(len(notices), 1, [(m["mail_line"], m["rcpt_tos"])
                                           for m in up.messages()])
        notice = notices[0]
        _, parts, _, _ = self.assertNotice(
            notice["data"], qid, "Successful Mail Delivery Report", "relayed", envid="rn-1",
            envelope=(notice["mail_line"], notice["rcpt_tos"]), rcpts=[
                {"rcpt": "ok-s@example.net", "status": "2.0.0",
                 "diagnostic": r"^smtp; 250 2\.0\.0 Ok: queued as \d+$"},
                {"rcpt": "ok-sd@example.net", "status": "2.0.0",
                 "diagnostic": r"^smtp; 250 2\.0\.0 Ok: queued as \d+$",
                 "orcpt": "rfc822; list+x@example.org"}])
        self.assertIn("Message-ID: <notice-1@example.org>", parts[2].get_content())
        self.assertEqual(len(self.events(p, "bounce_queued")), 1)
        self.assertSpoolEmpty(p)
        # The originals went out once each, every recipient delivered; nothing else.
        originals = sorted(sorted(m["rcpt_tos"]) for m in up.messages() if m is not notice
                           and m["rcpt_tos"] != [SENDER])
        self.assertEqual(originals, sorted([
            sorted(["ok-s@example.net", "ok-plain@example.net", "ok-f@example.net",
                    "ok-sd@example.net", "ok-never@example.net"]),
            ["ok2@example.net", "ok@example.net"],
            ["ok@example.net"]]))
        self.assertEqual(len(up.messages()), 4)

    def test_status_comes_from_the_upstream_reply(self):
        """Through a scripted upstream without DSN that accepts the data with
        "250 2.6.0 ...", the relayed notice's Status is 2.6.0 and its Diagnostic-Code that
        reply; the notice is delivered through the same upstream, from <> to the sender."""
        f = self.fake(ehlo=("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"),
                      data_reply="250 2.6.0 Message accepted as X1")
        p = self.queue_postern(dict(PLAIN, hosts=[f.address]))
        qid = self.queue(p, body=self.ORIGINAL, rcpts=[("ok@example.net", "NOTIFY=SUCCESS")])
        self.wait_done(p, qid)
        self.assertTrue(wait_for(lambda: len(f.messages) >= 2, 10), f.commands())
        self.assertTrue([c for c in f.commands() if c.startswith("MAIL FROM:<>")],
                        f.commands())
        self.assertIn("RCPT TO:<%s>" % SENDER, f.commands())
        # The original's RCPT carried no DSN parameter: the upstream does not offer DSN.
        self.assertIn("RCPT TO:<ok@example.net>", f.commands())
        self.assertNotIn("NOTIFY", " ".join(f.commands()))
        self.assertNotice(f.messages[1], qid, "Successful Mail Delivery Report", "relayed",
                          rcpts=[{"rcpt": "ok@example.net", "status": "2.6.0",
                                  "diagnostic": r"^smtp; 250 2\.6\.0 Message accepted as X1$"}])
        time.sleep(1)
        self.assertEqual(len(f.messages), 2)

    def test_no_notice_when_the_upstream_offers_dsn(self):
        """An upstream that advertises DSN receives NOTIFY (and ORCPT, RET, ENVID) with the
        recipient and is left to send the success notice: postern queues none."""
        f = self.fake(ehlo=("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN"))
        p = self.queue_postern(dict(PLAIN, hosts=[f.address]))
        qid = self.queue(p, body=self.ORIGINAL, mail_params="RET=HDRS ENVID=up-dsn",
                         rcpts=[("ok@example.net",
                                 "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ok@example.net")])
        self.wait_done(p, qid)
        self.assertTrue(wait_for(lambda: len(f.messages) >= 1), f.commands())
        time.sleep(1.5)
        self.assertEqual(len(f.messages), 1, f.commands())
        [rcpt] = [c for c in f.commands() if c.upper().startswith("RCPT")]
        self.assertRegex(rcpt, r"^RCPT TO:<ok@example\.net> .*NOTIFY=SUCCESS,FAILURE")
        [mail] = [c for c in f.commands() if c.upper().startswith("MAIL")]
        self.assertIn("ENVID=up-dsn", mail)
        self.assertEqual(self.events(p, "bounce_queued"), [])
        self.assertSpoolEmpty(p)


class SmallDiskTest(QueueTestCase):
    """The spool on a 4 MiB tmpfs: what a full disk and the free-space floor do."""

    MOUNT_SIZE = 4 * 1024 * 1024

    def mount_tmpfs(self):
        """Mounts a 4 MiB tmpfs in the test's directory and returns its path; unmounted in a
        cleanup that runs after every cleanup registered later (postern stops first)."""
        disk = os.path.join(self.tmp, "disk")
        os.makedirs(disk)
        try:
            out = subprocess.run(["mount", "-t", "tmpfs", "-o",
                                  "size=%d,mode=0755" % self.MOUNT_SIZE, "tmpfs", disk],
                                 capture_output=True, text=True, timeout=20,
                                 stdin=subprocess.DEVNULL)
        except OSError as e:
            self.skipTest("cannot mount a tmpfs (needs root/CAP_SYS_ADMIN): %s" % e)
        if out.returncode != 0:
            self.skipTest("cannot mount a tmpfs (needs root/CAP_SYS_ADMIN): %s"
                          % (out.stderr or out.stdout).strip())
        self.addCleanup(self.umount, disk)
        self.spool = os.path.join(disk, "spool")
        self.queue_dir = os.path.join(self.spool, "queue")
        self.corrupt_dir = os.path.join(self.spool, "corrupt")
        return disk

    @staticmethod
    def umount(disk):
        if subprocess.run(["umount", disk], capture_output=True, timeout=20,
                          stdin=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["umount", "-l", disk], capture_output=True, timeout=20,
                           stdin=subprocess.DEVNULL)

    @staticmethod
    def fill(path, size):
        with open(path, "wb") as f:
            f.write(b"\0" * size)
            f.flush()
            os.fsync(f.fileno())

    @staticmethod
    def free_bytes(path):
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize

    def small_disk_postern(self, upstream_port, min_free_space):
        """queue_postern's configuration with [server] min_free_space added."""
        routes = {"default": {"upstream": "smart", "retry_min": "1s", "retry_max": "2s"}}
        config = self.postern_config(dict(PLAIN, hosts=[f"127.0.0.1:{upstream_port}"],
                                          host_down_time="1s"),
                                     routes=routes, listener={"delivery": "queue"})
        p = Postern(server={"spool_dir": self.spool, "min_free_space": min_free_space},
                    **config)
        self.addCleanup(p.cleanup)
        return p.start()

    @staticmethod
    def message(tag, size=300 * 1024):
        head = (b"From: app@example.org\r\nTo: r@example.net\r\nSubject: %s\r\n"
                b"Message-ID: <%s@disk.test>\r\n\r\n" % (tag.encode(), tag.encode()))
        line = b"%-76s\r\n" % (b"body of " + tag.encode())
        return head + line * ((size - len(head)) // len(line) + 1)

    @staticmethod
    def message_id(data):
        m = re.search(rb"^Message-ID: <([^>]+)>", data, re.M)
        return m.group(1).decode() if m else None

    def test_full_disk_never_gets_a_250_and_loses_nothing(self):
        """With the floor off (min_free_space = 0) and the upstream down, 300 KB messages are
        sent until the spool's file system is full. Every end of data is answered 250 (and
        then the message is complete in the spool) or 451 4.3.0 (store_failed, nothing left
        behind); the server stays up and greets new connections. Once space returns (a filler
        file is deleted) a new message gets 250. When the upstream comes up, every message
        that got a 250 arrives exactly once, byte for byte, and none that got a 4xx does."""
        disk = self.mount_tmpfs()
        filler = os.path.join(disk, "filler")
        self.fill(filler, 2 * 1024 * 1024)
        port, up = self.down_upstream()
        p = self.small_disk_postern(port, 0)

        c = self.client(p)
        accepted, refused = {}, []  # Message-ID -> (queue id, body); [Message-ID]
        for i in range(12):
            body = self.message("fill-%02d" % i)
            result = self.transaction(c, SENDER, ["r@example.net"], body, quit=False)
            self.assertEqual(result["mail"][0], 250, result)
            self.assertEqual(result["rcpt"], [(250, "2.1.5 Ok")], result)
            code, text = result["data"]
            tag = "fill-%02d@disk.test" % i
            if code == 250:
                qid = QUEUED.match(text).group(1)
                # Complete in the spool before the 250: the client's message, byte for byte.
                eml, env = self.spool_record(qid)
                self.assertEqual(strip_received(eml), body, tag)
                self.assertEqual(env["size"], len(eml))
                accepted[tag] = (qid, eml)
            else:
                self.assertIn((code, text[:5]), (STORE_FAILED, STORAGE_LOW), (tag, code, text))
                refused.append(tag)
        self.assertGreaterEqual(len(accepted), 3, p.log()[-3000:])
        self.assertGreaterEqual(len(refused), 3, "the disk never filled up: %d free"
                                % self.free_bytes(disk))
        # Nothing of a refused message is in the spool, not even a temporary.
        self.assertTrue(wait_for(lambda: not [n for n in os.listdir(self.queue_dir)
                                              if n.startswith(".tmp-")]),
                        os.listdir(self.queue_dir))
        spooled = {}
        for name in self.queue_names():
            if name.endswith(".eml"):
                with open(os.path.join(self.queue_dir, name), "rb") as f:
                    spooled[self.message_id(f.read())] = name[:-4]
        self.assertEqual(spooled, {tag: qid for tag, (qid, _) in accepted.items()})
        failed = self.events(p, "store_failed")
        self.assertEqual(len(failed), len(refused), [e["_line"] for e in failed])
        for e in failed:
            self.assertIn(e.get("step"), ("write message", "write envelope"), e["_line"])

        # The server goes on: the same session and new connections work.
        self.assertAlive(p)
        self.assertEqual(c.cmd("NOOP")[0], 250)
        other = self.client(p)
        self.assertEqual(other.cmd("NOOP")[0], 250)

        # Space returns: the next message is stored.
        os.remove(filler)
        body = self.message("after-space")
        result = self.transaction(c, SENDER, ["r@example.net"], body)
        self.assertEqual(result["data"][0], 250, result)
        qid = QUEUED.match(result["data"][1]).group(1)
        accepted["after-space@disk.test"] = (qid, self.spool_record(qid)[0])

        # The upstream comes up: each accepted message once, no refused one.
        up.start()
        up.wait_messages(len(accepted), timeout=20)
        self.assertSpoolEmpty(p, timeout=15)
        time.sleep(1.5)
        messages = up.messages()
        counts = collections.Counter(self.message_id(m["data"]) for m in messages)
        self.assertEqual(counts, collections.Counter(accepted.keys()), p.log()[-3000:])
        for m in messages:
            self.assertEqual(m["data"], accepted[self.message_id(m["data"])][1])
        self.assertAlive(p)

    def test_free_space_floor_refuses_mail_until_space_returns(self):
        """With min_free_space = 3 MiB on the 4 MiB file system: while a filler leaves less
        than that, MAIL gets 452 4.3.1 (within the floor's check interval) and storage_low is
        logged; a transaction already past MAIL still completes; once the filler is deleted,
        MAIL is accepted again (storage_ok) and the messages are delivered."""
        disk = self.mount_tmpfs()
        up = self.upstream(tls="none")
        p = self.small_disk_postern(up.port, "3MiB")
        c1 = self.client(p)
        self.assertEqual(c1.cmd("MAIL FROM:<%s>" % SENDER)[0], 250)

        filler = os.path.join(disk, "filler")
        self.fill(filler, 1536 * 1024)
        self.assertLess(self.free_bytes(disk), 3 * 1024 * 1024)
        c2 = self.client(p)

        def mail_reply():
            reply = c2.cmd("MAIL FROM:<%s>" % SENDER)
            if reply[0] == 250:
                c2.cmd("RSET")
            return reply[:2]

        self.assertTrue(wait_for(lambda: mail_reply()[0] == 452, 5, step=0.2),
                        p.log()[-3000:])
        self.assertEqual(mail_reply(), (452, "4.3.1 Insufficient system storage"))
        [low] = self.wait_event(p, "storage_low")
        self.assertEqual(low.get("min_free_space"), str(3 * 1024 * 1024), low["_line"])
        self.assertLess(int(low.get("free_bytes", "0")), 3 * 1024 * 1024, low["_line"])
        self.assertIn(self.queue_dir, os.path.abspath(low.get("dir", "")), low["_line"])

        # The transaction that was past MAIL goes on.
        self.assertEqual(c1.cmd("RCPT TO:<first@example.net>")[0], 250)
        self.assertEqual(c1.cmd("DATA")[0], 354)
        c1.send(b"Subject: past MAIL\r\nMessage-ID: <first@disk.test>\r\n\r\nx\r\n.\r\n")
        code, text, _ = c1.reply()
        self.assertEqual(code, 250, text)

        # Space returns.
        os.remove(filler)
        self.assertTrue(wait_for(lambda: mail_reply()[0] == 250, 5, step=0.2),
                        p.log()[-3000:])
        self.wait_event(p, "storage_ok")
        result = self.transaction(c2, SENDER, ["second@example.net"],
                                  b"Subject: after\r\nMessage-ID: <second@disk.test>\r\n\r\ny\r\n")
        self.assertEqual(result["data"][0], 250, result)
        messages = up.wait_messages(2)
        self.assertEqual(sorted(self.message_id(m["data"]) for m in messages),
                         ["first@disk.test", "second@disk.test"])
        self.assertSpoolEmpty(p)


if __name__ == "__main__":
    unittest.main()
