"""Queue management: the [admin] HTTP listener's JSON API and `postern queue ...` (issue 4).

    [admin]
    address = "127.0.0.1:PORT"     # loopback; another address needs token_file
    token_file = "PATH"            # optional: every request needs "Authorization: Bearer <token>"

The API (JSON bodies, Content-Type application/json):

    GET    /healthz                  {"status": "ok"}
    GET    /queue[?route=R]          {"count": N, "messages": [entry, ...]}, oldest first
    GET    /queue/ID                 entry; 404 {"error": "no message ID in the queue"}; 400 for
                                     a malformed id
    POST   /queue/flush[?route=R]    {"flushed": n}: scheduled, unheld, idle messages due now
    POST   /queue/ID/flush           {"id", "flushed", "state"}
    POST   /queue/ID/hold|release    {"id", "state"}
    DELETE /queue/ID                 {"deleted": ID}: files removed, no bounce (queue_delete)
    wrong method 405, unknown path 404, missing or wrong token 401 (WWW-Authenticate: Bearer)

An entry: id, route, sender ("" for <>), size, received_at, received_unix, age_s, attempts,
state (queued|running|deferred|held|bouncing), next_attempt_in_s (int or null), last_error,
recipients [{address, state (pending|delivered|failed), reply, notified}].

Hold and the attempt count survive a restart: "H" / "R" and "A <n> <last error>" lines in
SPOOL/queue/ID.state. The command line `postern queue list|show|flush|delete|hold|release`
talks to the listener named by --config; exit 0 ok, 1 failure, 2 usage.

The upstream is "down" on a loopback port nothing listens on and comes up when an aiosmtpd is
started on that port (QueueTestCase.down_upstream); it connects-refuses at once, so an attempt
takes milliseconds.
"""
import calendar
import http.client
import json
import os
import re
import signal
import smtplib
import subprocess
import threading
import time
import unittest

from harness import BINARY, Postern, free_port, wait_for
from test_queue import PLAIN, QueueTestCase
from upstreams import closed_port

ENTRY_KEYS = {"id", "route", "sender", "size", "received_at", "received_unix", "age_s",
              "attempts", "state", "next_attempt_in_s", "last_error", "recipients"}
RECIPIENT_KEYS = {"address", "state", "reply", "notified"}
ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, as postern's queue ids
TABLE_HEADER = re.compile(r"^-Queue ID- *--Size-- ----Arrival Time---- -Sender/Recipient-------$")


class ApiReply:
    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers  # lower-cased names
        self.raw = raw
        try:
            self.json = json.loads(raw)
        except ValueError:
            self.json = None

    def __repr__(self):
        return f"HTTP {self.status} {self.raw[:500]!r}"


class AdminTestCase(QueueTestCase):
    """QueueTestCase with an [admin] table in postern's configuration, an HTTP client for its
    API and a runner for `postern queue`."""

    def admin_postern(self, upstream, route=None, token=None, start=True):
        """queue_postern() plus [admin] on a free loopback port (p.admin_port); token: the
        content of a token_file (p.token_file). The spool is self.spool."""
        port = free_port()
        admin = ["[admin]", f'address = "127.0.0.1:{port}"']
        token_file = None
        if token is not None:
            token_file = self.secret_file(token, "admin-token")
            admin.append(f"token_file = {json.dumps(token_file)}")
        routes = {"default": dict({"upstream": "smart", "retry_min": "1s", "retry_max": "2s"},
                                  **(route or {}))}
        config = self.postern_config(dict({"host_down_time": "1s"}, **upstream), routes=routes,
                                     listener={"delivery": "queue"},
                                     extra_toml="\n".join(admin) + "\n")
        p = Postern(server={"spool_dir": self.spool}, **config)
        p.admin_port = port
        p.token_file = token_file
        self.addCleanup(p.cleanup)
        return p.start() if start else p

    def down_postern(self, route=None, token=None):
        """(postern, its down upstream not yet started)."""
        port, up = self.down_upstream()
        p = self.admin_postern(dict(PLAIN, hosts=[f"127.0.0.1:{port}"]), route=route,
                               token=token)
        return p, up

    # -- the API

    def api(self, p, method, path, token=None, headers=None):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        conn = http.client.HTTPConnection("127.0.0.1", p.admin_port, timeout=10)
        try:
            conn.request(method, path, headers=h)
            r = conn.getresponse()
            raw = r.read()
            return ApiReply(r.status, {k.lower(): v for k, v in r.getheaders()}, raw)
        finally:
            conn.close()

    def api_ok(self, p, method, path, token=None):
        """A request that must succeed: its JSON body."""
        r = self.api(p, method, path, token=token)
        self.assertEqual(r.status, 200, (method, path, r))
        self.assertEqual(r.headers.get("content-type"), "application/json", r.headers)
        self.assertIsNotNone(r.json, r)
        return r.json

    def assertApiError(self, r, status, context=""):
        self.assertEqual(r.status, status, (context, r))
        self.assertEqual(r.headers.get("content-type"), "application/json", (context, r.headers))
        self.assertIsInstance(r.json, dict, (context, r))
        self.assertIsInstance(r.json.get("error"), str, (context, r))
        self.assertTrue(r.json["error"], (context, r))

    def entry(self, p, qid):
        return self.api_ok(p, "GET", "/queue/" + qid)

    def wait_entry(self, p, qid, predicate, timeout=10):
        """Polls GET /queue/ID until predicate(entry) holds; returns the entry."""
        box = {}

        def check():
            r = self.api(p, "GET", "/queue/" + qid)
            box["r"] = r
            return r.status == 200 and predicate(r.json)
        wait_for(check, timeout, step=0.1)
        r = box["r"]
        self.assertEqual(r.status, 200, r)
        self.assertTrue(predicate(r.json), f"{qid}: {r.json}\n{p.log()[-3000:]}")
        return r.json

    def wait_first_deferral(self, p, *ids, timeout=10):
        for qid in ids:
            self.wait_event(p, "deferred", timeout=timeout,
                            where=lambda e, q=qid: e.get("queue_id") == q)

    @staticmethod
    def other_id(qid, taken=()):
        """A well-formed queue id that is not qid (nor any of `taken`): qid with its last
        character changed."""
        for c in ID_ALPHABET:
            candidate = qid[:-1] + c
            if candidate != qid and candidate not in taken:
                return candidate
        raise AssertionError("no other id")

    # -- the command line

    def cli(self, config_path, *args):
        """`postern queue ARGS --config FILE`: (exit status, stdout, stderr)."""
        out = subprocess.run([BINARY, "queue", *args, "--config", config_path],
                             capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
        return out.returncode, out.stdout, out.stderr

    def cli_ok(self, p, *args):
        code, out, err = self.cli(p.config_path, *args)
        self.assertEqual(code, 0, (args, out, err))
        return out

    # -- misc

    def files_of(self, qid):
        return [n for n in self.queue_names() if n.startswith(qid + ".")]

    @staticmethod
    def message_id(m):
        found = re.search(rb"^Message-ID: <([^>]+)>\r?$", m["data"], re.M | re.I)
        return found.group(1).decode() if found else None

    def arrived(self, up, marker):
        """The non-bounce messages at the upstream whose Subject contains marker."""
        return [m for m in self.originals(up)
                if re.search(rb"^Subject: [^\r\n]*" + re.escape(marker.encode()), m["data"],
                             re.M)]


def body(subject, extra=b""):
    return b"Subject: " + subject.encode() + b"\r\n" + extra + b"\r\nhello\r\n"


class AdminApiTest(AdminTestCase):

    def test_listing_and_lookup_with_a_down_upstream(self):
        """GET /queue and GET /queue/ID describe deferred messages fully and consistently:
        every documented key, state "deferred", attempts >= 1, the last error, pending
        recipients, an integer next_attempt_in_s within the route's backoff, the spool size,
        received_at matching received_unix; ?route= filters; an unknown well-formed id is a
        404 naming it, a malformed one a 400; wrong methods 405, unknown paths 404 (all with
        a JSON error); /healthz answers."""
        p, up = self.down_postern(route={"retry_min": "1m", "retry_max": "2m"})
        before = int(time.time())
        a = self.queue(p, rcpts=["r1@example.net", "r2@example.net"], body=body("api a"))
        b = self.queue(p, rcpts=["r3@example.net"], body=body("api b"), mail_from="")
        after = int(time.time())
        self.wait_first_deferral(p, a, b)

        health = self.api_ok(p, "GET", "/healthz")
        self.assertEqual(health, {"status": "ok"})

        listing = self.api_ok(p, "GET", "/queue")
        self.assertEqual(listing["count"], 2, listing)
        self.assertEqual([m["id"] for m in listing["messages"]], [a, b], "oldest first")
        expected_rcpts = {a: ["r1@example.net", "r2@example.net"], b: ["r3@example.net"]}
        for m in listing["messages"]:
            qid = m["id"]
            self.assertLessEqual(ENTRY_KEYS, set(m), m)
            self.assertEqual(m["route"], "default", m)
            self.assertEqual(m["sender"], "app@example.org" if qid == a else "", m)
            self.assertEqual(m["size"], os.path.getsize(os.path.join(self.queue_dir,
                                                                     qid + ".eml")), m)
            self.assertRegex(m["received_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", m)
            self.assertEqual(calendar.timegm(time.strptime(m["received_at"],
                                                           "%Y-%m-%dT%H:%M:%SZ")),
                             m["received_unix"], m)
            self.assertTrue(before - 1 <= m["received_unix"] <= after + 1, m)
            self.assertIsInstance(m["age_s"], int, m)
            self.assertTrue(0 <= m["age_s"] <= 60, m)
            self.assertEqual(m["state"], "deferred", m)
            self.assertIsInstance(m["attempts"], int, m)
            self.assertEqual(m["attempts"], 1, m)  # retry_min is a minute
            self.assertTrue(m["last_error"], m)
            self.assertIsInstance(m["next_attempt_in_s"], int, m)
            self.assertTrue(30 <= m["next_attempt_in_s"] <= 120, m)
            self.assertEqual([r["address"] for r in m["recipients"]], expected_rcpts[qid], m)
            for r in m["recipients"]:
                self.assertLessEqual(RECIPIENT_KEYS, set(r), r)
                self.assertEqual(r["state"], "pending", r)
                self.assertIs(r["notified"], False, r)
                self.assertTrue(r["reply"], r)  # the reason of the deferral
            [deferral] = self.deliveries(p, qid=qid, rcpt=expected_rcpts[qid][0])
            self.assertEqual(m["last_error"], deferral["reply"], (m, deferral["_line"]))

        # GET /queue/ID: the same entry (the clocks aside).
        for m in listing["messages"]:
            one = self.entry(p, m["id"])
            volatile = {"age_s", "next_attempt_in_s"}
            self.assertEqual({k: v for k, v in one.items() if k not in volatile},
                             {k: v for k, v in m.items() if k not in volatile})
            self.assertLessEqual(abs(one["next_attempt_in_s"] - m["next_attempt_in_s"]), 2)

        # ?route=
        self.assertEqual(self.api_ok(p, "GET", "/queue?route=default")["count"], 2)
        other = self.api_ok(p, "GET", "/queue?route=elsewhere")
        self.assertEqual(other, {"count": 0, "messages": []})

        # Errors.
        unknown = self.other_id(a, taken=(a, b))
        r = self.api(p, "GET", "/queue/" + unknown)
        self.assertApiError(r, 404)
        self.assertEqual(r.json["error"], f"no message {unknown} in the queue")
        self.assertApiError(self.api(p, "GET", "/queue/nonsense!"), 400)
        self.assertApiError(self.api(p, "GET", "/queue/" + a.lower() + "X"), 400)
        self.assertApiError(self.api(p, "DELETE", "/queue/" + unknown), 404)
        self.assertApiError(self.api(p, "POST", f"/queue/{unknown}/hold"), 404)
        for method, path in [("DELETE", "/queue/flush"), ("POST", "/queue"),
                             ("GET", "/queue/flush"), ("PUT", "/queue/" + a),
                             ("GET", f"/queue/{a}/hold"), ("POST", "/healthz")]:
            self.assertApiError(self.api(p, method, path), 405, (method, path))
        for method, path in [("GET", "/"), ("GET", "/nope"), ("GET", f"/queue/{a}/bogus"),
                             ("GET", f"/queue/{a}/hold/more")]:
            self.assertApiError(self.api(p, method, path), 404, (method, path))

        # Several requests over one kept-alive connection.
        conn = http.client.HTTPConnection("127.0.0.1", p.admin_port, timeout=10)
        try:
            for path in ("/healthz", "/queue/" + a, "/queue/nonsense!", "/queue"):
                conn.request("GET", path)
                r = conn.getresponse()
                self.assertIsInstance(json.loads(r.read()), dict, path)
                self.assertEqual(r.status, 400 if "!" in path else 200, path)
        finally:
            conn.close()

        # None of that changed the queue.
        self.assertEqual(self.api_ok(p, "GET", "/queue")["count"], 2)
        self.assertEqual(self.events(p, "queue_delete"), [])
        self.assertEqual(self.events(p, "queue_hold"), [])
        self.assertAlive(p)

    def test_an_attempt_under_way_and_a_deletion_during_it(self):
        """While an attempt runs (the upstream delays its end-of-data reply and then defers
        the message), the entry says "running" with next_attempt_in_s null and `queue list`
        marks it with '*'. Deleting it then answers at once, removes its files, and the end of
        the attempt neither brings the message back nor recreates its .state file (no "A"
        line for a deleted message), and no bounce is sent; its delivery line says how it ended."""
        up = self.upstream(tls="none")
        p = self.admin_postern(dict(PLAIN, hosts=[up.address]))
        qid = self.queue(p, body=body("slow", b"X-Test-Delay: 3\r\nX-Test-Reply: 451\r\n"))
        m = self.wait_entry(p, qid, lambda e: e["state"] == "running", timeout=5)
        self.assertIsNone(m["next_attempt_in_s"], m)
        self.assertEqual(m["attempts"], 1, m)
        table = self.cli_ok(p, "list")
        self.assertIn(qid + "*", table)
        self.assertIn("(attempts 1, attempt under way, route default)", table)
        # flush leaves a running attempt alone
        self.assertEqual(self.api_ok(p, "POST", "/queue/flush"), {"flushed": 0})

        deleted = self.api_ok(p, "DELETE", "/queue/" + qid)
        self.assertEqual(deleted, {"deleted": qid})
        self.assertEqual(self.files_of(qid), [])
        self.assertApiError(self.api(p, "GET", "/queue/" + qid), 404)
        self.assertEqual(self.api_ok(p, "GET", "/queue")["count"], 0)
        [e] = self.wait_event(p, "queue_delete")
        self.assertEqual(e.get("queue_id"), qid, e["_line"])

        # The attempt ends (the upstream answers 451 after 3 s): nothing comes back.
        self.assertTrue(wait_for(lambda: up.events("data"), 10), up.events())
        self.assertTrue(up.events("data")[0]["reply"].startswith("451"), up.events("data"))
        time.sleep(1.5)
        self.assertEqual(self.files_of(qid), [], "the deleted message's files came back")
        self.assertEqual(self.api_ok(p, "GET", "/queue")["count"], 0)
        # The attempt that ended after the deletion is logged, once.
        [d] = self.wait_delivery(p, qid=qid)
        self.assertEqual(d["result"], "deferred", d["_line"])
        time.sleep(0.5)
        self.assertEqual(len(self.deliveries(p, qid=qid)), 1, "tried again after deletion")
        self.assertEqual(len(up.events("mail")), 1, "tried again after deletion")
        self.assertEqual([e for e in self.events(p, "deferred") if e.get("queue_id") == qid],
                         [], "a deleted message was rescheduled")
        self.assertEqual(self.bounces(up), [])
        self.assertEqual(self.events(p, "bounce_queued"), [])
        self.assertAlive(p)


class AdminHoldDeleteFlushTest(AdminTestCase):

    def test_hold_release_and_delete(self):
        """A held message gets no attempts (no delivery lines for it for 3 s, while the others
        go on being tried), shows state "held" with no next attempt, has an "H" line in its
        .state; when the upstream comes up the others arrive and it does not; released, it
        arrives promptly. A deleted message loses its files at once, is logged as
        queue_delete, never arrives and causes no bounce."""
        p, up = self.down_postern()
        held = self.queue(p, rcpts=["held@example.net"], body=body("hold-me"))
        free = self.queue(p, rcpts=["free@example.net"], body=body("free-one"))
        doomed = self.queue(p, rcpts=["doomed@example.net"], body=body("delete-me"))
        self.wait_first_deferral(p, held, free, doomed)

        r = self.api_ok(p, "POST", f"/queue/{held}/hold")
        self.assertEqual(r["id"], held)
        # "running" only if an attempt was under way at that instant; it is held after it.
        self.assertIn(r["state"], ("held", "running"), r)
        m = self.wait_entry(p, held, lambda e: e["state"] == "held", timeout=5)
        self.assertIsNone(m["next_attempt_in_s"], m)
        self.assertIn("H", self.state_lines(held))
        [e] = self.events(p, "queue_hold")
        self.assertEqual(e.get("queue_id"), held, e["_line"])
        # Holding twice is harmless.
        self.assertEqual(self.api_ok(p, "POST", f"/queue/{held}/hold")["state"], "held")

        time.sleep(0.5)  # an attempt under way at the hold has ended by now
        held_tries = len(self.deliveries(p, qid=held))
        free_tries = len(self.deliveries(p, qid=free))
        time.sleep(3)
        self.assertEqual(len(self.deliveries(p, qid=held)), held_tries,
                         "a held message was tried:\n" + "\n".join(
                             e["_line"] for e in self.deliveries(p, qid=held)))
        self.assertGreater(len(self.deliveries(p, qid=free)), free_tries,
                           "the unheld message was not tried again")
        self.assertEqual(self.entry(p, held)["state"], "held")

        # Delete.
        self.assertTrue(self.files_of(doomed))
        self.assertEqual(self.api_ok(p, "DELETE", "/queue/" + doomed), {"deleted": doomed})
        self.assertEqual(self.files_of(doomed), [])
        self.assertApiError(self.api(p, "GET", "/queue/" + doomed), 404)
        self.assertApiError(self.api(p, "DELETE", "/queue/" + doomed), 404)
        [e] = self.wait_event(p, "queue_delete")
        self.assertEqual(e.get("queue_id"), doomed, e["_line"])
        self.assertEqual(sorted(m["id"] for m in self.api_ok(p, "GET", "/queue")["messages"]),
                         sorted([held, free]))

        # The upstream comes up: the free one arrives, the held one and the deleted one not.
        up.start()
        wait_for(lambda: self.arrived(up, "free-one"), 10)
        self.assertEqual(len(self.arrived(up, "free-one")), 1, p.log()[-3000:])
        time.sleep(2.5)  # more than retry_max: the held one would have been tried by now
        self.assertEqual(self.arrived(up, "hold-me"), [])
        self.assertEqual(self.upstream_rcpts(up, "held@example.net"), 0)
        self.assertEqual(self.entry(p, held)["state"], "held")

        # Release: it goes at once (its backoff would have been up to 2 s; flushed now).
        released_at = time.time()
        r = self.api_ok(p, "POST", f"/queue/{held}/release")
        self.assertEqual(r["id"], held)
        self.assertNotEqual(r["state"], "held", r)
        wait_for(lambda: self.arrived(up, "hold-me"), 5)
        self.assertEqual(len(self.arrived(up, "hold-me")), 1, p.log()[-3000:])
        print(f"\n  released message arrived after {time.time() - released_at:.2f}s",
              flush=True)
        [e] = self.events(p, "queue_release")
        self.assertEqual(e.get("queue_id"), held, e["_line"])

        self.assertSpoolEmpty(p)
        self.assertEqual(self.api_ok(p, "GET", "/queue"), {"count": 0, "messages": []})
        time.sleep(1)
        self.assertEqual(self.arrived(up, "delete-me"), [])
        self.assertEqual(self.upstream_rcpts(up, "doomed@example.net"), 0)
        self.assertEqual(self.bounces(up), [], "a bounce was sent")
        self.assertEqual(self.events(p, "bounce_queued"), [])
        self.assertEqual(len(self.originals(up)), 2)

    def test_flush_makes_deferred_messages_due_now(self):
        """With a one-hour backoff, deferred messages stay put after the upstream comes up;
        POST /queue/ID/flush sends that one message at once (flushed 1), POST /queue/flush
        with another route flushes nothing, and POST /queue/flush sends the rest (flushed =
        their number); with nothing scheduled left, flushed is 0."""
        p, up = self.down_postern(route={"retry_min": "1h", "retry_max": "1h"})
        x = self.queue(p, rcpts=["x@example.net"], body=body("flush-x"))
        y = self.queue(p, rcpts=["y@example.net"], body=body("flush-y"))
        z = self.queue(p, rcpts=["z@example.net"], body=body("flush-z"))
        self.wait_first_deferral(p, x, y, z)
        for qid in (x, y, z):
            m = self.entry(p, qid)
            self.assertEqual(m["state"], "deferred", m)
            self.assertGreater(m["next_attempt_in_s"], 3000, m)

        up.start()
        time.sleep(2)  # the pool's host_down_time (1s) is over; nothing is due
        self.assertEqual(up.messages(), [], "sent before its hour was up")

        r = self.api_ok(p, "POST", f"/queue/{x}/flush")
        self.assertEqual(r["id"], x)
        self.assertEqual(r["flushed"], 1, r)
        wait_for(lambda: self.arrived(up, "flush-x"), 5)
        self.assertEqual(len(self.arrived(up, "flush-x")), 1, p.log()[-3000:])
        self.wait_done(p, x)

        self.assertEqual(self.api_ok(p, "POST", "/queue/flush?route=elsewhere"),
                         {"flushed": 0})
        time.sleep(1)
        self.assertEqual(len(up.messages()), 1, "a flush of another route sent mail")

        self.assertEqual(self.api_ok(p, "POST", "/queue/flush"), {"flushed": 2})
        wait_for(lambda: len(up.messages()) >= 3, 5)
        self.assertEqual(sorted(self.message_subjects(up)),
                         ["flush-x", "flush-y", "flush-z"], p.log()[-3000:])
        self.assertSpoolEmpty(p)
        self.assertEqual(self.api_ok(p, "POST", "/queue/flush"), {"flushed": 0})
        flushes = self.events(p, "queue_flush")
        self.assertEqual([e.get("messages") for e in flushes], ["1", "0", "2", "0"],
                         [e["_line"] for e in flushes])

    def message_subjects(self, up):
        out = []
        for m in up.messages():
            s = re.search(rb"^Subject: ([^\r\n]*)", m["data"], re.M)
            out.append(s.group(1).decode() if s else None)
        return out


class AdminRestartTest(AdminTestCase):

    def test_hold_and_attempts_survive_a_restart(self):
        """After SIGKILL and a new start on the same spool: the admin listener is back on its
        port; the held message is still held (state "held", not tried, not delivered when the
        upstream is up) with its attempt count from before; the other message continues its
        count (its first attempt after the restart is logged as the recorded count + 1, as
        found in its "A <n> <error>" .state line). Released, the held one is delivered with
        attempt = its old count + 1."""
        p, up = self.down_postern()
        held = self.queue(p, rcpts=["held@example.net"], body=body("restart-held"))
        other = self.queue(p, rcpts=["other@example.net"], body=body("restart-other"))
        # A few attempts each (1 s, then 1-2 s apart).
        self.wait_entry(p, held, lambda e: e["attempts"] >= 2, timeout=10)
        self.wait_entry(p, other, lambda e: e["attempts"] >= 2, timeout=10)

        self.api_ok(p, "POST", f"/queue/{held}/hold")
        self.wait_entry(p, held, lambda e: e["state"] == "held", timeout=5)
        time.sleep(0.3)
        before = self.entry(p, held)
        self.assertEqual(before["state"], "held")
        lines = self.state_lines(held)
        self.assertIn("H", lines)
        attempt_lines = [line for line in lines if line.startswith("A ")]
        self.assertTrue(attempt_lines, lines)
        self.assertRegex(attempt_lines[-1], r"^A %d \S" % before["attempts"])
        self.assertEqual(attempt_lines[-1], f"A {before['attempts']} {before['last_error']}")

        # QueueTestCase.restart(), in two steps: the other message's recorded count is read
        # while postern is down (the new process appends to it at once).
        p.stop(signal.SIGKILL)
        self.assertIn("event=queue_hold", p.log())
        other_lines = [line for line in self.state_lines(other) if line.startswith("A ")]
        self.assertTrue(other_lines, self.state_lines(other))
        other_recorded = int(other_lines[-1].split()[1])
        self.assertGreaterEqual(other_recorded, 2)
        self.assertIn("H", self.state_lines(held))
        p.start()
        [recovered] = self.wait_event(p, "spool_recovered")
        self.assertEqual(recovered.get("messages"), "2", recovered["_line"])

        # The admin listener is back, on the same port.
        after = self.entry(p, held)
        self.assertEqual(after["state"], "held", after)
        self.assertEqual(after["attempts"], before["attempts"], (before, after))
        self.assertEqual(after["last_error"], before["last_error"], (before, after))
        self.assertIsNone(after["next_attempt_in_s"], after)
        [first] = self.wait_delivery(p, qid=other, timeout=10)[:1]
        self.assertEqual(int(first["attempt"]), other_recorded + 1, first["_line"])
        self.assertGreaterEqual(self.entry(p, other)["attempts"], other_recorded + 1)

        time.sleep(2.5)
        self.assertEqual(self.deliveries(p, qid=held), [], "a held message was tried")

        up.start()
        wait_for(lambda: self.arrived(up, "restart-other"), 10)
        self.assertEqual(len(self.arrived(up, "restart-other")), 1, p.log()[-3000:])
        time.sleep(2)
        self.assertEqual(self.arrived(up, "restart-held"), [])
        self.assertEqual(self.entry(p, held)["state"], "held")

        r = self.api_ok(p, "POST", f"/queue/{held}/release")
        self.assertNotEqual(r["state"], "held", r)
        wait_for(lambda: self.arrived(up, "restart-held"), 5)
        self.assertEqual(len(self.arrived(up, "restart-held")), 1, p.log()[-3000:])
        [d] = self.wait_delivery(p, qid=held, result="delivered")
        self.assertEqual(int(d["attempt"]), before["attempts"] + 1, d["_line"])
        self.assertSpoolEmpty(p)


class AdminTokenTest(AdminTestCase):

    def test_bearer_token(self):
        """With token_file, a request without Authorization, with a wrong token, with another
        scheme or with the token's prefix gets 401 with a JSON error and "WWW-Authenticate:
        Bearer" (and changes nothing); the right token gets 200; /healthz needs none. The CLI sends the token read
        from the configuration's token_file; a configuration naming another token gets
        exit 1 and "(HTTP 401)"."""
        token = "s3cret-t0ken-4711"
        p, up = self.down_postern(token=token)
        qid = self.queue(p, body=body("token"))
        self.wait_first_deferral(p, qid)

        attempts = [("no header", {}), ("wrong token", {"Authorization": "Bearer nope"}),
                    ("prefix", {"Authorization": "Bearer " + token[:-1]}),
                    ("longer", {"Authorization": "Bearer " + token + "x"}),
                    ("basic", {"Authorization": "Basic " + token}),
                    ("bare token", {"Authorization": token})]
        for what, headers in attempts:
            for method, path in [("GET", "/queue"), ("DELETE", "/queue/" + qid)]:
                r = self.api(p, method, path, headers=headers)
                self.assertApiError(r, 401, (what, method, path))
                self.assertEqual(r.headers.get("www-authenticate"), "Bearer", (what, r.headers))
            # A health check needs no token: it tells nothing about the mail.
            r = self.api(p, "GET", "/healthz", headers=headers)
            self.assertEqual((r.status, r.json), (200, {"status": "ok"}), what)
        self.assertTrue(self.files_of(qid), "deleted without the token")
        self.assertTrue(self.events(p, "admin_unauthorized"))

        self.assertEqual(self.api_ok(p, "GET", "/healthz", token=token), {"status": "ok"})
        listing = self.api_ok(p, "GET", "/queue", token=token)
        self.assertEqual([m["id"] for m in listing["messages"]], [qid])

        # The CLI reads the token from token_file.
        out = self.cli_ok(p, "list")
        self.assertIn(qid, out)
        self.assertEqual(self.cli_ok(p, "hold", qid).strip(), f"{qid}: held")

        with open(p.config_path) as f:
            config = f.read()
        wrong = self.secret_file("not-the-token", "wrong-token")
        self.assertIn(p.token_file, config)
        wrong_config = os.path.join(self.tmp, "wrong.toml")
        with open(wrong_config, "w") as f:
            f.write(config.replace(json.dumps(p.token_file), json.dumps(wrong)))
        code, out, err = self.cli(wrong_config, "list")
        self.assertEqual(code, 1, (out, err))
        self.assertIn("(HTTP 401)", err)
        self.assertEqual(out, "")

    def test_non_loopback_address_needs_a_token_file(self):
        """check-config refuses an [admin] address that is not loopback without token_file
        ("is not loopback"), and accepts it with one, and accepts loopback without one."""
        up = {"hosts": ["127.0.0.1:1"], "tls": "none", "allow_plaintext": True}
        code, out = self.check_config(upstream=up,
                                      extra_toml='[admin]\naddress = "0.0.0.0:8025"\n')
        self.assertEqual(code, 1, out)
        self.assertIn("is not loopback", out)
        token = self.secret_file("tok", "tok")
        code, out = self.check_config(
            upstream=up,
            extra_toml=f'[admin]\naddress = "0.0.0.0:8025"\ntoken_file = {json.dumps(token)}\n')
        self.assertEqual(code, 0, out)
        code, out = self.check_config(upstream=up,
                                      extra_toml='[admin]\naddress = "[::1]:8025"\n')
        self.assertEqual(code, 0, out)


class AdminCliTest(AdminTestCase):

    def test_queue_commands(self):
        """`postern queue`: list prints the mailq-like table (header, "ID SIZE DATE  SENDER",
        the last error, "(attempts N, next attempt in Xs, route R)", the pending recipients
        indented, "-- K Kbytes in N Requests."), marks a held message with '!' and ", held,";
        --json prints the API's JSON; show prints the fields; hold, release, flush and delete
        print their one-line results (hold and release are "H" and "R" lines in the .state
        file); an unknown id exits 1 with the API's error and "(HTTP 404)"; an empty queue
        lists as "Mail queue is empty"."""
        p, up = self.down_postern(route={"retry_min": "1m", "retry_max": "1m"})
        a = self.queue(p, rcpts=["r1@example.net", "r2@example.net"], body=body("cli a"))
        b = self.queue(p, rcpts=["r3@example.net"], body=body("cli b", b"X-Pad: padding\r\n" * 100),
                       mail_from="")
        self.wait_first_deferral(p, a, b)
        api = self.api_ok(p, "GET", "/queue")
        ea, eb = api["messages"]
        self.assertEqual((ea["id"], eb["id"]), (a, b))

        # list
        out = self.cli_ok(p, "list")
        lines = out.splitlines()
        self.assertRegex(lines[0], TABLE_HEADER)
        date = r"\w{3} \w{3} \d\d \d\d:\d\d:\d\d"
        line_a = next(i for i, l in enumerate(lines) if l.startswith(a))
        self.assertRegex(lines[line_a], r"^%s +%d %s  app@example\.org$" % (a, ea["size"], date))
        self.assertEqual(lines[line_a + 1], "(" + ea["last_error"] + ")")
        self.assertRegex(lines[line_a + 2],
                         r"^\(attempts 1, next attempt in \d+s, route default\)$")
        self.assertEqual([l.strip() for l in lines[line_a + 3:line_a + 5]],
                         ["r1@example.net", "r2@example.net"])
        self.assertTrue(lines[line_a + 3].startswith("   "), lines[line_a + 3])
        line_b = next(i for i, l in enumerate(lines) if l.startswith(b))
        self.assertGreater(line_b, line_a)
        self.assertRegex(lines[line_b], r"^%s +%d %s  MAILER-DAEMON$" % (b, eb["size"], date))
        self.assertIn("r3@example.net", lines[line_b + 3])
        kbytes = (ea["size"] + eb["size"] + 1023) // 1024
        self.assertEqual(lines[-1], f"-- {kbytes} Kbytes in 2 Requests.")

        # list --json, list --route
        as_json = json.loads(self.cli_ok(p, "list", "--json"))
        self.assertEqual(as_json["count"], 2)
        self.assertEqual([m["id"] for m in as_json["messages"]], [a, b])
        self.assertEqual(as_json["messages"][0]["recipients"], ea["recipients"])
        self.assertEqual(self.cli_ok(p, "list", "--route", "elsewhere"),
                         "Mail queue is empty\n")
        self.assertIn(a, self.cli_ok(p, "list", "--route", "default"))

        # hold: '!' and ", held,"
        self.assertEqual(self.cli_ok(p, "hold", a), f"{a}: held\n")
        out = self.cli_ok(p, "list")
        self.assertRegex(out, r"(?m)^%s! +%d " % (a, ea["size"]))
        self.assertIn("(attempts 1, held, route default)", out)
        self.assertNotRegex(out, r"(?m)^%s!" % b)

        # show
        out = self.cli_ok(p, "show", a)
        fields = {}
        for line in out.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith(" "):
                fields[key] = value.strip()
        self.assertEqual(fields.get("id"), a, out)
        self.assertEqual(fields.get("state"), "held", out)
        self.assertEqual(fields.get("route"), "default", out)
        self.assertEqual(fields.get("sender"), "<app@example.org>", out)
        self.assertEqual(fields.get("schedule"), "attempts 1, held, route default", out)
        self.assertEqual(fields.get("last error"), ea["last_error"], out)
        self.assertIn("recipients:", out.splitlines())
        for r in ea["recipients"]:
            self.assertIn(f"  <{r['address']}> pending: {r['reply']}", out.splitlines())
        shown = json.loads(self.cli_ok(p, "show", a, "--json"))
        self.assertEqual(shown["id"], a)
        self.assertEqual(shown["state"], "held")
        out = self.cli_ok(p, "show", b)
        self.assertIn("sender:", out)
        self.assertRegex(out, r"(?m)^schedule: +attempts 1, next attempt in \d+s, route default$")

        # flush: every scheduled, unheld message (b only); then b alone.
        self.assertEqual(self.cli_ok(p, "flush"), "1 message(s) due now\n")
        self.wait_entry(p, b, lambda e: e["attempts"] == 2 and e["state"] == "deferred")
        self.assertEqual(self.entry(p, a)["attempts"], 1, "a held message was flushed")
        self.assertEqual(self.cli_ok(p, "flush", b), "1 message(s) due now\n")
        self.wait_entry(p, b, lambda e: e["attempts"] == 3 and e["state"] == "deferred")
        self.assertEqual(self.cli_ok(p, "flush", a), "0 message(s) due now\n")

        # release
        out = self.cli_ok(p, "release", a)
        self.assertRegex(out, r"^%s: (deferred|running|queued)\n$" % a)
        self.wait_entry(p, a, lambda e: e["attempts"] == 2 and e["state"] == "deferred")
        flags = [line for line in self.state_lines(a) if line in ("H", "R")]
        self.assertEqual(flags, ["H", "R"], self.state_lines(a))

        # errors
        unknown = self.other_id(a, taken=(a, b))
        for args in (["show", unknown], ["delete", unknown], ["hold", unknown],
                     ["release", unknown], ["flush", unknown]):
            code, out, err = self.cli(p.config_path, *args)
            self.assertEqual(code, 1, (args, out, err))
            self.assertIn(f"no message {unknown} in the queue", err, args)
            self.assertIn("(HTTP 404)", err, args)
            self.assertEqual(out, "", args)
        code, out, err = self.cli(p.config_path, "show", "nonsense!")
        self.assertEqual(code, 1, (out, err))
        self.assertIn("(HTTP 400)", err)

        # delete
        self.assertEqual(self.cli_ok(p, "delete", b), f"{b}: deleted\n")
        self.assertEqual(self.files_of(b), [])
        self.assertEqual(self.cli_ok(p, "delete", a), f"{a}: deleted\n")
        self.assertEqual(self.files_of(a), [])
        self.assertEqual(self.cli_ok(p, "list"), "Mail queue is empty\n")
        self.assertEqual(json.loads(self.cli_ok(p, "list", "--json")),
                         {"count": 0, "messages": []})
        self.assertEqual(self.queue_names(), [])
        time.sleep(0.5)
        self.assertEqual(self.events(p, "bounce_queued"), [])

    def test_usage_and_configuration_errors(self):
        """No action, an unknown action or a missing id: exit 2 with the usage; a
        configuration without [admin]: exit 1 naming "no [admin] table"; an admin listener
        nobody listens on: exit 1, "cannot reach the admin listener"; configuration errors
        outside [admin] are ignored by the queue command, those in [admin] are not."""
        p, up = self.down_postern()
        for args, text in [((), "which action?"), (("frobnicate",), "unknown action"),
                           (("show",), "needs a queue id"), (("delete",), "needs a queue id"),
                           (("list", "01M8HNQK229ZJS"), "takes no queue id"),
                           (("list", "--bogus"), "unexpected option")]:
            code, out, err = self.cli(p.config_path, *args)
            self.assertEqual(code, 2, (args, out, err))
            self.assertIn(text, err, args)
            self.assertIn("usage: postern queue", err, args)

        plain = Postern()  # an outbox route, no [admin]; never started
        self.addCleanup(plain.cleanup)
        code, out, err = self.cli(plain.config_path, "list")
        self.assertEqual(code, 1, (out, err))
        self.assertIn("no [admin] table", err)

        # [admin] on a port nothing listens on.
        with open(p.config_path) as f:
            config = f.read()
        dead = os.path.join(self.tmp, "dead.toml")
        with open(dead, "w") as f:
            f.write(config.replace(f"127.0.0.1:{p.admin_port}", f"127.0.0.1:{closed_port()}"))
        code, out, err = self.cli(dead, "list")
        self.assertEqual(code, 1, (out, err))
        self.assertIn("cannot reach the admin listener", err)

        # Errors outside [admin] (a password_env unset in the operator's shell) do not stop
        # the queue command, which needs only [admin]; errors in [admin] do.
        other = os.path.join(self.tmp, "other-errors.toml")
        with open(other, "w") as f:
            f.write(config + '\n[upstream.other]\nhosts = ["127.0.0.1:1"]\n'
                    'username = "u"\npassword_env = "POSTERN_TEST_UNSET_VARIABLE"\n')
        code, out, err = self.cli(other, "list")
        self.assertEqual(code, 0, (out, err))
        self.assertIn("Mail queue is empty", out)
        self.assertEqual(err, "")
        broken = os.path.join(self.tmp, "admin-errors.toml")
        with open(broken, "w") as f:
            f.write(config.replace(f'"127.0.0.1:{p.admin_port}"', '"localhost:8025"'))
        code, out, err = self.cli(broken, "list")
        self.assertEqual(code, 1, (out, err))
        self.assertIn("admin.address", err)


class AdminOutageLoadTest(AdminTestCase):

    MESSAGES = 200
    CLIENTS = 4
    OUTAGE_S = 30

    def test_outage_under_load(self):
        """The acceptance test: 200 messages (distinct Message-IDs, 4 concurrent SMTP
        sessions) queued while the upstream is down for 30 s (retry_min 1s, retry_max 4s).
        During the outage `postern queue list --json` shows every message with attempts >= 2
        and a last error, and the table shows an "(attempts " line per message. Once the
        upstream is up, every Message-ID arrives exactly once and the spool ends empty."""
        started = time.time()
        p, up = self.down_postern(route={"retry_min": "1s", "retry_max": "4s"})
        sent, errors = {}, []
        lock = threading.Lock()

        def client(n):
            try:
                with smtplib.SMTP("127.0.0.1", p.port, timeout=30) as s:
                    s.ehlo("load.test")
                    for i in range(n, self.MESSAGES, self.CLIENTS):
                        mid = f"load-{i}-{os.getpid()}@outage.test"
                        msg = (f"From: app@example.org\r\nTo: load{i}@example.net\r\n"
                               f"Subject: load {i}\r\nMessage-ID: <{mid}>\r\n\r\n"
                               f"message {i}\r\n")
                        s.sendmail("app@example.org", [f"load{i}@example.net"], msg)
                        with lock:
                            sent[mid] = i
            except Exception as e:  # reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(self.CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        accepted_in = time.time() - started
        self.assertEqual(errors, [])
        self.assertEqual(len(sent), self.MESSAGES)

        # While the upstream is down: attempts pile up, each with its error.
        box = {}

        def all_retried():
            code, out, err = self.cli(p.config_path, "list", "--json")
            if code != 0:
                box["err"] = err
                return False
            listing = json.loads(out)
            box["listing"] = listing
            return (listing["count"] == self.MESSAGES and
                    all(m["attempts"] >= 2 and m["last_error"] for m in listing["messages"]))
        deadline = started + self.OUTAGE_S - 2
        while time.time() < deadline and not all_retried():
            time.sleep(0.5)
        listing = box.get("listing")
        self.assertIsNotNone(listing, box.get("err"))
        self.assertEqual(listing["count"], self.MESSAGES)
        slow = [(m["id"], m["attempts"], m["last_error"]) for m in listing["messages"]
                if m["attempts"] < 2 or not m["last_error"]]
        self.assertEqual(slow, [], "messages without a second attempt during the outage")
        self.assertTrue(all(m["state"] in ("deferred", "running", "queued")
                            for m in listing["messages"]))
        self.assertEqual(up.messages(), [])
        table = self.cli_ok(p, "list")
        self.assertEqual(len(re.findall(r"(?m)^\(attempts \d+, ", table)), self.MESSAGES)
        self.assertIn(f"in {self.MESSAGES} Requests.", table)
        max_attempts_seen = max(m["attempts"] for m in listing["messages"])

        # The upstream comes back 30 s after the load began.
        time.sleep(max(0.0, started + self.OUTAGE_S - time.time()))
        final = json.loads(self.cli_ok(p, "list", "--json"))
        max_attempts_seen = max([max_attempts_seen] + [m["attempts"] for m in final["messages"]])
        up_at = time.time()
        up.start()
        wait_for(lambda: len(up.messages()) >= self.MESSAGES, 40, step=0.5)
        drained_in = time.time() - up_at
        self.assertSpoolEmpty(p, timeout=10)
        time.sleep(1.5)  # a duplicate would follow
        messages = up.messages()
        ids = [self.message_id(m) for m in messages]
        counts = {}
        for mid in ids:
            counts[mid] = counts.get(mid, 0) + 1
        missing = sorted(set(sent) - set(counts), key=lambda k: sent[k])
        twice = sorted(mid for mid, n in counts.items() if n > 1)
        print(f"\n  outage under load: {len(sent)} accepted in {accepted_in:.1f}s, "
              f"max attempts per message {max_attempts_seen}, upstream up after "
              f"{up_at - started:.1f}s, {len(messages)} received "
              f"({len(counts)} distinct, {len(twice)} twice, {len(missing)} missing) "
              f"{drained_in:.1f}s later, bounces {len(self.bounces(up))}", flush=True)
        self.assertEqual(missing, [], p.log()[-3000:])
        self.assertEqual(twice, [])
        self.assertEqual(set(counts), set(sent))
        self.assertEqual(len(messages), self.MESSAGES)
        self.assertEqual(self.bounces(up), [])
        self.assertEqual(self.cli_ok(p, "list"), "Mail queue is empty\n")


if __name__ == "__main__":
    unittest.main()
