"""Lua policy scripts ([[filter]] type = "lua") in a real postern with real clients.

Recipients refused by a script (seen through swaks), header edits stored in the outbox, routes
chosen by a script, SIGHUP reloading the script (a broken one keeps the old version), script
errors and limits (451 4.3.0, or on_error = "continue"), verdicts at every stage (connect,
helo, mail_from, rcpt_to, data: reject, tempfail, discard, disconnect), listener tags, notes
kept between hooks, connection fields, notifications (queued, delivered), check-config on
scripts, `postern policy test`, and passthrough (a refusal at data never reaches the
upstream; header edits there are a filter failure).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (BINARY, QUEUED, Postern, outbox_messages, smtp_transaction, strip_received,
                     toml_value, wait_for)
from upstreams import RelayTestCase, log_events

POLICY_FAILED = (451, "4.3.0 Policy check failed; try again later")


def filter_toml(script, name="policy", config=None, **keys):
    """One [[filter]] entry of type lua; `config` becomes its [filter.config] table."""
    lines = ["[[filter]]", 'type = "lua"', f"name = {json.dumps(name)}",
             f"script = {json.dumps(script)}"]
    lines += [f"{k} = {toml_value(v)}" for k, v in keys.items()]
    if config:
        lines.append("[filter.config]")
        lines += [f"{k} = {toml_value(v)}" for k, v in config.items()]
    return "\n".join(lines) + "\n"


def lua_src(path):
    """A script's path as Lua names it in messages (luaO_chunkid: at most 59 characters,
    longer ones keep their last 56 after "...")."""
    return path if len(path) <= 59 else "..." + path[-56:]


class LuaCase(unittest.TestCase):
    """Per test: a directory for scripts and outboxes, and postern instances started on it."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="postern-lua-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path + ".new", "w") as f:
            f.write(text)
        os.replace(path + ".new", path)  # a reload never sees half a file
        return path

    def start(self, script_text, listener=None, routes=None, config=None, filter_keys=None,
              script_name="policy.lua"):
        """A postern with one lua filter "policy" running script_text; routes: {name: keys}
        (default: [route.default] into <tmp>/outbox, which p.messages() reads)."""
        script = self.write(script_name, script_text)
        self.script_path = script
        outbox = os.path.join(self.tmp, "outbox")
        if routes is None:
            routes = {"default": {"outbox": outbox}}
        listener = dict({"name": "lua-test"}, **(listener or {}))
        p = Postern(listener=listener, routes=routes,
                    extra_toml=filter_toml(script, config=config, **(filter_keys or {})))
        p.outbox = routes.get("default", {}).get("outbox", outbox)
        self.addCleanup(p.cleanup)
        return p.start()

    def client(self, p, ehlo="client.test", source=None):
        c = p.connect(source=source)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        if ehlo:
            self.assertEqual(c.cmd("EHLO " + ehlo)[0], 250)
        return c

    def transaction(self, c, mail_from="app@example.org", rcpts=("someone@example.net",),
                    body=b"Subject: lua test\r\n\r\nhello\r\n"):
        """MAIL, RCPTs, and DATA when a recipient was accepted: {"mail": (code, text),
        "rcpt": [(code, text)...], "data": (code, text) or None}."""
        return smtp_transaction(c, mail_from, rcpts, body)

    def queued_id(self, reply):
        code, text = reply
        self.assertEqual(code, 250, reply)
        m = QUEUED.match(text)
        self.assertIsNotNone(m, text)
        return m.group(1)

    messages_in = staticmethod(outbox_messages)

    def events(self, p, event):
        return log_events(p.log(), event)

    def wait_event(self, p, event, count=1, where=None, timeout=5):
        """Waits for `count` lines of event= (matching where(fields)); returns them all."""
        def found():
            return [e for e in self.events(p, event) if where is None or where(e)]
        wait_for(lambda: len(found()) >= count, timeout)
        lines = found()
        self.assertGreaterEqual(len(lines), count,
                                f"want {count} event={event}; postern's log:\n{p.log()[-5000:]}")
        return lines


# --- 1. refusing a recipient, seen through swaks -----------------------------------------------

RECIPIENT_POLICY = """\
-- Refuses recipients in the configured domains, with the configured text.
local blocked = postern.config.blocked
postern.on("rcpt_to", function(tx, rcpt)
  if postern.match.domain(rcpt.address, blocked) then
    return postern.reject(550, "5.7.1", postern.config.text .. " " .. rcpt.domain)
  end
end)
"""


class RecipientPolicyTest(LuaCase):

    def test_swaks_sees_the_refusal_and_the_other_recipient_gets_the_mail(self):
        p = self.start(RECIPIENT_POLICY,
                       config={"blocked": ["blocked.example", "*.blocked.example"],
                               "text": "No mail for"})
        out = subprocess.run(["swaks", "--server", f"127.0.0.1:{p.port}", "--ehlo", "swaks.test",
                              "--from", "app@example.org",
                              "--to", "x@blocked.example,y@ok.example,z@sub.blocked.example",
                              "--header", "Subject: lua swaks"],
                             capture_output=True, text=True, timeout=30)
        self.assertIn("<** 550 5.7.1 No mail for blocked.example\n", out.stdout)
        self.assertIn("<** 550 5.7.1 No mail for sub.blocked.example\n", out.stdout)
        self.assertIn(" -> RCPT TO:<y@ok.example>\n<-  250 2.1.5", out.stdout)
        m = re.search(r"<-  250 2\.0\.0 Ok: queued as (\S+)", out.stdout)
        self.assertIsNotNone(m, out.stdout + out.stderr)
        messages = p.messages()
        self.assertEqual(list(messages), [m.group(1)])
        eml, env = messages[m.group(1)]
        self.assertEqual([r["address"] for r in env["recipients"]], ["y@ok.example"])
        self.assertIn(b"Subject: lua swaks\r\n", eml)
        received = eml[:eml.index(b"\r\n\r\n")]
        self.assertIn(b"for <y@ok.example>;", received)
        self.assertNotIn(b"blocked.example>", received)
        verdicts = self.wait_event(p, "filter_verdict", 2)
        self.assertEqual({(v["filter"], v["stage"], v["action"], v["reply"]) for v in verdicts},
                         {("policy", "rcpt_to", "reject", "550 5.7.1 No mail for blocked.example"),
                          ("policy", "rcpt_to", "reject",
                           "550 5.7.1 No mail for sub.blocked.example")})
        self.assertEqual({v["queue_id"] for v in verdicts}, {m.group(1)})


# --- 2. header edits at data ---------------------------------------------------------------------

HEADER_EDITS = """\
postern.on("data", function(tx, msg)
  if msg:header("X-Leave-Alone") then
    return
  end
  msg:add_header("X-Policy-Checked", "yes; id=" .. tx.id)
  msg:set_header("Subject", "[checked] " .. (msg:header("subject") or ""))
  local removed = msg:remove_header("x-internal")
  msg:add_header("X-Removed", tostring(removed))
  msg:set_header("X-Single", "one")
end)
"""


class HeaderEditTest(LuaCase):

    BODY = (b"line one\r\n..two dots after unstuffing\r\n.\r\nnot the end\r\n"
            b"\xc3\xa9 8-bit \xe2\x82\xac\r\n \r\n\ttab\r\n"
            + b"".join(b"body line %06d %s\r\n" % (i, b"y" * 60) for i in range(4000))
            + b"\r\n")

    def test_add_set_remove_header_and_the_rest_is_byte_exact(self):
        p = self.start(HEADER_EDITS)
        header = (b"From: App <app@example.org>\r\n"
                  b"To: someone@example.net\r\n"
                  b"X-Internal: first\r\n"
                  b"Subject: quarterly  report\r\n"
                  b"X-Folded: a value\r\n"
                  b"\tcontinued  here\r\n"
                  b"X-Single: 1\r\n"
                  b"x-internal: second\r\n"
                  b"X-Single: 2\r\n")
        c = self.client(p)
        result = self.transaction(c, body=header + b"\r\n" + self.BODY)
        qid = self.queued_id(result["data"])
        eml, _ = p.messages()[qid]
        expected = (b"From: App <app@example.org>\r\n"
                    b"To: someone@example.net\r\n"
                    b"Subject: [checked] quarterly  report\r\n"  # set_header: in place
                    b"X-Folded: a value\r\n"
                    b"\tcontinued  here\r\n"
                    b"X-Single: one\r\n"  # set_header: the first replaced, the others gone
                    b"X-Policy-Checked: yes; id=" + qid.encode() + b"\r\n"
                    b"X-Removed: 2\r\n"
                    b"\r\n" + self.BODY)
        self.assertEqual(strip_received(eml), expected)

        # A message the script leaves alone is stored as sent.
        untouched = b"X-Leave-Alone: 1\r\nX-Internal: kept\r\nSubject: as is\r\n\r\n" + self.BODY
        qid2 = self.queued_id(self.transaction(c, body=untouched)["data"])
        self.assertEqual(strip_received(p.messages()[qid2][0]), untouched)

    def test_bdat_message_is_edited_too(self):
        p = self.start(HEADER_EDITS)
        c = self.client(p)
        self.assertEqual(c.cmd("MAIL FROM:<app@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<someone@example.net>")[0], 250)
        parts = [b"Subject: chunked\r\nX-Internal: x\r\n", b"\r\n.body\r\n", b"end\r\n"]
        c.send(b"BDAT %d\r\n%s" % (len(parts[0]), parts[0]))
        self.assertEqual(c.reply()[0], 250)
        c.send(b"BDAT %d\r\n%sBDAT %d LAST\r\n%s" % (len(parts[1]), parts[1], len(parts[2]),
                                                     parts[2]))
        self.assertEqual(c.reply()[0], 250)
        qid = self.queued_id(c.reply()[:2])
        self.assertEqual(strip_received(p.messages()[qid][0]),
                         b"Subject: [checked] chunked\r\n"
                         b"X-Policy-Checked: yes; id=" + qid.encode() + b"\r\n"
                         b"X-Removed: 1\r\n"
                         b"X-Single: one\r\n"
                         b"\r\n.body\r\nend\r\n")

    def test_message_without_a_body(self):
        # No empty line at all: the message is all header; the edit goes after the last field.
        p = self.start(HEADER_EDITS)
        c = self.client(p)
        qid = self.queued_id(self.transaction(c, body=b"Subject: bare\r\n")["data"])
        self.assertEqual(strip_received(p.messages()[qid][0]),
                         b"Subject: [checked] bare\r\n"
                         b"X-Policy-Checked: yes; id=" + qid.encode() + b"\r\n"
                         b"X-Removed: 0\r\n"
                         b"X-Single: one\r\n")


# --- 3. routes chosen by the script ------------------------------------------------------------

ROUTE_POLICY = """\
postern.on("mail_from", function(tx)
  if tx.mail_from["local"] == "bulk" then
    tx:route("other")
  elseif tx.mail_from["local"] == "lost" then
    tx:route("nowhere")
  end
end)
postern.on("data", function(tx, msg)
  if msg:header("X-Route") then
    tx:route(msg:header("X-Route"))
  end
  msg:add_header("X-Route-Seen", tx:route() or "-")
end)
"""


STICKY_ROUTE = """\
postern.on("rcpt_to", function(tx, rcpt)
  if rcpt.domain == "partner.example" then
    tx:route("other")
    tx:set_mail_from("rewritten@example.org")
    if rcpt["local"] == "refused" then
      return postern.reject(550, "5.7.1", "not this one")
    end
  end
end)
"""

HELO_GATE = """\
postern.on("helo", function(conn)
  if conn.helo == "bad.example" then return postern.reject(550, "5.7.1", "go away") end
end)
"""


class ReviewFixTest(LuaCase):

    def test_a_refused_recipient_leaves_no_route_or_sender_change(self):
        default_dir = os.path.join(self.tmp, "outbox")
        other_dir = os.path.join(self.tmp, "other-outbox")
        p = self.start(STICKY_ROUTE, routes={"default": {"outbox": default_dir},
                                             "other": {"outbox": other_dir}})
        c = self.client(p)
        self.assertEqual(c.cmd("MAIL FROM:<app@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<a@normal.example>")[0], 250)
        # Refused by the script after it chose a route and a sender: both are undone.
        self.assertEqual(c.cmd("RCPT TO:<refused@partner.example>")[0], 550)
        # Accepted by the script but on another route than the transaction's: 452, undone.
        self.assertEqual(c.cmd("RCPT TO:<b@partner.example>")[0], 452)
        self.assertEqual(c.cmd("DATA")[0], 354)
        qid = self.queued_id(c.cmd("Subject: x\r\n\r\nx\r\n.")[:2])
        default = self.messages_in(default_dir)
        self.assertIn(qid, default)
        self.assertEqual(self.messages_in(other_dir), {})
        envelope = default[qid][1]
        self.assertEqual(envelope["route"], "default")
        self.assertEqual(envelope["mail_from"], "app@example.org")
        self.assertEqual([r["address"] for r in envelope["recipients"]], ["a@normal.example"])

    def test_a_refused_ehlo_ungreets_the_session(self):
        p = self.start(HELO_GATE)
        c = self.client(p, ehlo="good.example")
        self.assertEqual(c.cmd("EHLO bad.example")[0], 550)
        # As if no EHLO had been said: MAIL needs one first.
        self.assertEqual(c.cmd("MAIL FROM:<app@example.org>")[0], 503)
        self.assertEqual(c.cmd("EHLO good.example")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<app@example.org>")[0], 250)


class RouteTest(LuaCase):

    def test_route_chosen_at_mail_from_and_at_data(self):
        default_dir = os.path.join(self.tmp, "outbox")
        other_dir = os.path.join(self.tmp, "other-outbox")
        p = self.start(ROUTE_POLICY, routes={"default": {"outbox": default_dir},
                                             "other": {"outbox": other_dir}})
        c = self.client(p)
        at_mail = self.queued_id(self.transaction(c, mail_from="bulk@example.org")["data"])
        at_data = self.queued_id(self.transaction(
            c, body=b"Subject: data route\r\nX-Route: other\r\n\r\nx\r\n")["data"])
        plain = self.queued_id(self.transaction(c)["data"])

        other = self.messages_in(other_dir)
        default = self.messages_in(default_dir)
        self.assertEqual(set(other), {at_mail, at_data})
        self.assertEqual(set(default), {plain})
        self.assertEqual(other[at_mail][1]["route"], "other")
        self.assertEqual(other[at_data][1]["route"], "other")
        self.assertEqual(default[plain][1]["route"], "default")
        self.assertIn(b"X-Route-Seen: other\r\n", other[at_mail][0])
        self.assertIn(b"X-Route-Seen: other\r\n", other[at_data][0])
        self.assertIn(b"X-Route-Seen: -\r\n", default[plain][0])
        queued = {e["queue_id"]: e for e in self.wait_event(p, "queued", 3)}
        for qid in (at_mail, at_data):
            self.assertEqual((queued[qid]["route"], queued[qid]["target"]), ("other", other_dir))
        self.assertEqual(queued[plain]["route"], "default")

        # An unknown route is a script error: the stage fails with 451 4.3.0.
        result = self.transaction(c, mail_from="lost@example.org")
        self.assertEqual(result["mail"], POLICY_FAILED)
        [failed] = self.wait_event(p, "filter_failed")
        self.assertEqual(failed["stage"], "mail_from")
        self.assertIn('unknown route "nowhere"', failed["error"])
        self.assertIn("policy.lua:", failed["error"])
        # ... and the next transaction goes on.
        self.queued_id(self.transaction(c)["data"])


RCPT_CHANGES = """\
postern.on("mail_from", function(tx)
  if tx.mail_from["local"] == "archived" then
    tx:add_rcpt("archive@archive.example")
  end
end)
postern.on("rcpt_to", function(tx, rcpt)
  if rcpt["local"] == "cc-audit" then
    tx:add_rcpt("audit@archive.example")
  end
end)
"""


class RecipientChangeTest(LuaCase):
    """tx:add_rcpt / tx:remove_rcpt: applied before storage, even without a data handler."""

    def test_recipients_added_before_data(self):
        p = self.start(RCPT_CHANGES)
        c = self.client(p)
        result = self.transaction(c, mail_from="archived@example.org",
                                  rcpts=["a@example.net", "cc-audit@example.net"])
        qid = self.queued_id(result["data"])
        eml, env = p.messages()[qid]
        self.assertEqual([r["address"] for r in env["recipients"]],
                         ["a@example.net", "cc-audit@example.net", "archive@archive.example",
                          "audit@archive.example"])
        # Nothing left over for the next transaction.
        qid = self.queued_id(self.transaction(c)["data"])
        self.assertEqual([r["address"] for r in p.messages()[qid][1]["recipients"]],
                         ["someone@example.net"])

    def test_recipients_changed_at_data(self):
        p = self.start("""\
postern.on("data", function(tx, msg)
  tx:remove_rcpt("someone@example.net")
  if msg:header("X-Copy") then
    tx:add_rcpt(msg:header("X-Copy"))
  end
end)
""")
        c = self.client(p)
        qid = self.queued_id(self.transaction(
            c, rcpts=["someone@example.net", "kept@example.net"],
            body=b"Subject: copy\r\nX-Copy: copy@example.com\r\n\r\nx\r\n")["data"])
        eml, env = p.messages()[qid]
        self.assertEqual([r["address"] for r in env["recipients"]],
                         ["kept@example.net", "copy@example.com"])
        # Every recipient removed: answered 250, nothing stored, logged as discarded.
        qid = self.queued_id(self.transaction(c)["data"])
        self.assertNotIn(qid, p.messages())
        [line] = self.wait_event(p, "discarded", where=lambda e: e.get("queue_id") == qid)
        self.assertEqual(line["reason"], "every recipient removed by a filter")


# --- 4. SIGHUP reloads the script --------------------------------------------------------------

def refusing(domain, version):
    return f"""\
postern.on("rcpt_to", function(tx, rcpt)
  if rcpt.domain == "{domain}" then
    return postern.reject(550, "5.7.1", "{version} refuses {domain}")
  end
end)
"""


BROKEN_SYNTAX = """\
postern.on("rcpt_to", function(tx, rcpt)
  if rcpt.domain == then
    return postern.reject()
  end
end)
"""

BROKEN_AT_RUN = """\
local limit = 10
error("top level failure " .. limit)
"""


class ReloadTest(LuaCase):

    def hup(self, p, count):
        p.proc.send_signal(signal.SIGHUP)
        self.wait_event(p, "reload", count)

    def rcpt(self, c, address):
        self.assertEqual(c.cmd("RSET")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<app@example.org>")[0], 250)
        return c.cmd(f"RCPT TO:<{address}>")[:2]

    def test_broken_script_keeps_the_old_one_and_a_good_one_takes_over(self):
        p = self.start(refusing("one.example", "v1"))
        c = self.client(p)
        self.assertEqual(self.rcpt(c, "x@one.example"), (550, "5.7.1 v1 refuses one.example"))
        self.assertEqual(self.rcpt(c, "x@two.example")[0], 250)

        self.write("policy.lua", BROKEN_SYNTAX)
        self.hup(p, 1)
        [failed] = self.wait_event(p, "filter_reload_failed")
        self.assertIn(f"policy: {lua_src(self.script_path)}:2: ", failed["error"])
        self.assertIn("near 'then'", failed["error"])
        self.assertEqual(failed["level"], "error")
        for conn in (c, self.client(p)):  # the open session and a new one
            self.assertEqual(self.rcpt(conn, "x@one.example"),
                             (550, "5.7.1 v1 refuses one.example"))
            self.assertEqual(self.rcpt(conn, "x@two.example")[0], 250)

        # A script that compiles but fails at its top level is refused too.
        self.write("policy.lua", BROKEN_AT_RUN)
        self.hup(p, 2)
        failed = self.wait_event(p, "filter_reload_failed", 2)[-1]
        self.assertIn(f"{lua_src(self.script_path)}:2: top level failure 10", failed["error"])
        self.assertEqual(self.rcpt(c, "x@one.example"), (550, "5.7.1 v1 refuses one.example"))

        self.write("policy.lua", refusing("two.example", "v2"))
        self.hup(p, 3)
        self.assertEqual(len(self.events(p, "filter_reload_failed")), 2, p.log())
        for conn in (c, self.client(p)):
            self.assertEqual(self.rcpt(conn, "x@one.example")[0], 250)
            self.assertEqual(self.rcpt(conn, "x@two.example"),
                             (550, "5.7.1 v2 refuses two.example"))
        self.assertEqual(c.cmd("RSET")[0], 250)
        self.queued_id(self.transaction(c, rcpts=["x@one.example", "x@two.example"])["data"])
        self.assertIsNone(p.proc.poll())

    def test_reload_can_add_a_stage(self):
        # The first script has no mail_from handler; the reloaded one has.
        p = self.start(refusing("one.example", "v1"))
        self.write("policy.lua", refusing("one.example", "v1") + """\
postern.on("mail_from", function(tx)
  if tx.mail_from.domain == "spam.example" then
    return postern.reject(553, "5.7.1", "v2 refuses the sender")
  end
end)
""")
        c = self.client(p)
        self.assertEqual(c.cmd("MAIL FROM:<a@spam.example>")[0], 250)
        self.assertEqual(c.cmd("RSET")[0], 250)
        self.hup(p, 1)
        self.assertEqual(self.events(p, "filter_reload_failed"), [])
        self.assertEqual(c.cmd("MAIL FROM:<a@spam.example>")[:2],
                         (553, "5.7.1 v2 refuses the sender"))


# --- 5. script errors and limits ---------------------------------------------------------------

LOOPING = """\
postern.on("rcpt_to", function(tx, rcpt)
  if rcpt["local"] == "loop" then
    local n = 0
    while true do n = n + 1 end
  end
  if rcpt["local"] == "hog" then
    local t = {}
    for i = 1, 100000000 do t[i] = string.rep("x", 100) .. i end
  end
  if rcpt["local"] == "oops" then
    local missing = nil
    return missing.field
  end
  if rcpt["local"] == "badverdict" then
    return "yes"
  end
end)
"""


class ScriptErrorTest(LuaCase):

    def test_infinite_loop_tempfails_the_recipient_and_the_server_goes_on(self):
        # A generous timeout: filling 64 MiB takes a while under the sanitizers, and the memory
        # limit (not the clock) is what the "hog" case is about.
        p = self.start(LOOPING, filter_keys={"timeout": "20s"})
        c = self.client(p)
        self.assertEqual(c.cmd("MAIL FROM:<app@example.org>")[0], 250)
        started = time.monotonic()
        self.assertEqual(c.cmd("RCPT TO:<loop@example.net>")[:2], POLICY_FAILED)
        self.assertLess(time.monotonic() - started, 5)
        [failed] = self.wait_event(p, "filter_failed")
        self.assertEqual((failed["filter"], failed["stage"], failed["on_error"]),
                         ("policy", "rcpt_to", "tempfail"))
        self.assertIn(f"{lua_src(self.script_path)}:4: instruction budget exceeded",
                      failed["error"])
        self.assertEqual(failed["level"], "error")
        self.assertTrue(failed["queue_id"])
        # The same transaction goes on with another recipient.
        self.assertEqual(c.cmd("RCPT TO:<ok@example.net>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        qid = self.queued_id(c.cmd("Subject: after the loop\r\n\r\nx\r\n.")[:2])
        self.assertEqual([r["address"] for r in p.messages()[qid][1]["recipients"]],
                         ["ok@example.net"])
        # Other failures: a run-time error, a handler that returns no verdict, memory.
        for local, needle in (("oops", f"{lua_src(self.script_path)}:12: attempt to index"),
                              ("badverdict", "the handler returned a string"),
                              ("hog", "memory limit exceeded")):
            with self.subTest(local=local):
                c2 = self.client(p)
                result = self.transaction(c2, rcpts=[f"{local}@example.net", "ok@example.net"])
                self.assertEqual(result["rcpt"][0], POLICY_FAILED)
                self.assertEqual(result["rcpt"][1][0], 250)
                self.queued_id(result["data"])
                self.wait_event(p, "filter_failed", where=lambda e: needle in e["error"])
        # The loop again, then a new connection: the server is alive and well.
        self.assertEqual(self.transaction(self.client(p), rcpts=["loop@example.net"])["rcpt"],
                         [POLICY_FAILED])
        self.queued_id(self.transaction(self.client(p))["data"])
        self.assertIsNone(p.proc.poll())

    def test_error_at_connect(self):
        text = 'postern.on("connect", function(conn) return conn.nonexistent end)\n'
        p = self.start(text)
        c = p.connect()
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[:2], (421, "Policy check failed; try again later"))
        self.assertTrue(c.closed())
        failed = self.wait_event(p, "filter_failed")[-1]
        self.assertEqual((failed["stage"], failed["queue_id"]), ("connect", ""))
        self.assertIn(f"{lua_src(self.script_path)}:1: conn has no field 'nonexistent'",
                      failed["error"])

        p.stop()  # its outbox is locked while it runs
        p = self.start(text, filter_keys={"on_error": "continue"})
        self.queued_id(self.transaction(self.client(p))["data"])
        self.wait_event(p, "filter_failed_open")

    def test_timeout_limit(self):
        p = self.start(LOOPING, filter_keys={"timeout": "150ms",
                                             "instruction_limit": 10 ** 15})
        c = self.client(p)
        self.assertEqual(c.cmd("MAIL FROM:<app@example.org>")[0], 250)
        started = time.monotonic()
        self.assertEqual(c.cmd("RCPT TO:<loop@example.net>")[:2], POLICY_FAILED)
        self.assertLess(time.monotonic() - started, 3)
        [failed] = self.wait_event(p, "filter_failed")
        self.assertIn(f"{lua_src(self.script_path)}:4: timeout exceeded (150 ms)", failed["error"])

    def test_memory_limit_names_the_handler(self):
        p = self.start(LOOPING, filter_keys={"memory_limit": "2MiB"})
        c = self.client(p)
        result = self.transaction(c, rcpts=["hog@example.net"])
        self.assertEqual(result["rcpt"], [POLICY_FAILED])
        [failed] = self.wait_event(p, "filter_failed")
        self.assertIn("memory limit exceeded (2 MiB) in the function at "
                      f"{lua_src(self.script_path)}:1", failed["error"])
        self.queued_id(self.transaction(self.client(p))["data"])

    def test_on_error_continue_accepts_and_logs(self):
        p = self.start(LOOPING, filter_keys={"on_error": "continue"})
        c = self.client(p)
        result = self.transaction(c, rcpts=["loop@example.net", "oops@example.net"])
        self.assertEqual([code for code, _ in result["rcpt"]], [250, 250])
        qid = self.queued_id(result["data"])
        self.assertEqual([r["address"] for r in p.messages()[qid][1]["recipients"]],
                         ["loop@example.net", "oops@example.net"])
        failed = self.wait_event(p, "filter_failed", 2)
        self.assertEqual({e["on_error"] for e in failed}, {"continue"})
        self.assertIn(f"{lua_src(self.script_path)}:4: instruction budget exceeded",
                      failed[0]["error"])
        opened = self.wait_event(p, "filter_failed_open", 2)
        self.assertEqual([(e["filter"], e["stage"], e["queue_id"], e["failed_open_total"])
                          for e in opened],
                         [("policy", "rcpt_to", qid, "1"), ("policy", "rcpt_to", qid, "2")])
        self.assertEqual(opened[0]["level"], "warn")


# --- 6. verdicts at every stage ----------------------------------------------------------------

STAGES = """\
postern.on("connect", function(conn)
  if conn.ip == "127.0.0.2" then
    return postern.reject(550, "5.7.1", "Client " .. conn.ip .. " refused")
  elseif conn.ip == "127.0.0.3" then
    return postern.tempfail("Busy, come back later")
  end
end)
postern.on("helo", function(conn)
  if conn.helo == "bad.example" then
    return postern.reject(550, "5.7.1", "HELO " .. conn.helo .. " refused")
  elseif conn.helo == "gone.example" then
    return postern.disconnect(554, "5.7.1", "Go away")
  end
end)
postern.on("mail_from", function(tx)
  if tx.mail_from["local"] == "later" then
    return postern.tempfail(452, "4.3.1", "Sender over quota, try later")
  elseif tx.mail_from["local"] == "no" then
    return postern.reject("Sender refused")
  end
end)
postern.on("rcpt_to", function(tx, rcpt)
  if rcpt["local"] == "bye" then
    return postern.disconnect()
  elseif rcpt["local"] == "void" then
    return postern.discard("void recipient")
  end
end)
postern.on("data", function(tx, msg)
  if msg:header("X-Discard") then
    return postern.discard("discard requested")
  end
end)
"""


class StageVerdictTest(LuaCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp_class = tempfile.mkdtemp(prefix="postern-lua-")
        script = os.path.join(cls.tmp_class, "stages.lua")
        with open(script, "w") as f:
            f.write(STAGES)
        cls.outbox = os.path.join(cls.tmp_class, "outbox")
        cls.p = Postern(listener={"name": "lua-test"},
                        routes={"default": {"outbox": cls.outbox}},
                        extra_toml=filter_toml(script)).start()
        cls.p.outbox = cls.outbox

    @classmethod
    def tearDownClass(cls):
        cls.p.cleanup()
        shutil.rmtree(cls.tmp_class, ignore_errors=True)

    def raw(self, source=None):
        c = self.p.connect(source=source)
        self.addCleanup(c.close)
        return c

    def test_connect_reject_is_a_554_greeting_then_close(self):
        # Before EHLO a reply carries no enhanced status code (RFC 2034), the script's either.
        c = self.raw(source="127.0.0.2")
        self.assertEqual(c.reply()[:2], (554, "Client 127.0.0.2 refused"))
        self.assertTrue(c.closed())
        c = self.raw(source="127.0.0.3")
        self.assertEqual(c.reply()[:2], (421, "Busy, come back later"))
        self.assertTrue(c.closed())
        # Both disconnect lines: the second may be written just after the client saw the close.
        refused = self.wait_event(self.p, "disconnect", 2,
                                  where=lambda e: e.get("reason") == "refused by filter")
        self.assertEqual(len(refused), 2)
        # Everyone else is greeted.
        self.client(self.p, source="127.0.0.4")

    def test_helo_reject_and_disconnect(self):
        # Refused before any EHLO succeeded: no enhanced status code (RFC 2034).
        c = self.client(self.p, ehlo=None)
        self.assertEqual(c.cmd("EHLO bad.example")[:2], (550, "HELO bad.example refused"))
        self.assertEqual(c.cmd("HELO bad.example")[:2], (550, "HELO bad.example refused"))
        self.assertEqual(c.cmd("MAIL FROM:<app@example.org>")[0], 503)  # not greeted
        self.assertEqual(c.cmd("EHLO good.example")[0], 250)
        self.queued_id(self.transaction(c)["data"])
        # After a good EHLO, a refused second one has its enhanced code.
        self.assertEqual(c.cmd("EHLO bad.example")[:2], (550, "5.7.1 HELO bad.example refused"))
        c = self.client(self.p, ehlo=None)
        self.assertEqual(c.cmd("EHLO gone.example")[:2], (554, "Go away"))
        self.assertTrue(c.closed())

    def test_mail_from_tempfail_and_reject_with_their_own_replies(self):
        c = self.client(self.p)
        self.assertEqual(c.cmd("MAIL FROM:<later@example.org>")[:2],
                         (452, "4.3.1 Sender over quota, try later"))
        self.assertEqual(c.cmd("RCPT TO:<someone@example.net>")[0], 503)  # no transaction
        self.assertEqual(c.cmd("MAIL FROM:<no@example.org>")[:2], (550, "5.7.1 Sender refused"))
        self.queued_id(self.transaction(c)["data"])

    def test_discard_at_data_answers_250_and_stores_nothing(self):
        before = set(self.p.messages())
        c = self.client(self.p)
        result = self.transaction(c, body=b"Subject: drop me\r\nX-Discard: 1\r\n\r\nx\r\n")
        qid = self.queued_id(result["data"])
        [discarded] = self.wait_event(self.p, "discarded",
                                      where=lambda e: e.get("queue_id") == qid)
        self.assertEqual((discarded["reason"], discarded["nrcpt"]), ("discard requested", "1"))
        self.assertEqual(set(self.p.messages()), before)
        self.assertFalse(any(n.startswith(qid) for n in os.listdir(self.outbox)))
        self.assertEqual(c.cmd("NOOP")[0], 250)
        # The server goes on (in a new session: see test_session_delivers_again_after_a_discard).
        kept = self.queued_id(self.transaction(self.client(self.p))["data"])
        self.assertIn(kept, self.p.messages())

    def test_discard_at_rcpt_drops_that_recipient(self):
        c = self.client(self.p)
        result = self.transaction(c, rcpts=["real@example.net", "void@example.net"])
        self.assertEqual(result["rcpt"], [(250, "2.1.5 Ok")] * 2)
        qid = self.queued_id(result["data"])
        self.assertEqual([r["address"] for r in self.p.messages()[qid][1]["recipients"]],
                         ["real@example.net"])
        self.wait_event(self.p, "discarded", where=lambda e: e.get("rcpt") == "void@example.net"
                        and e.get("reason") == "void recipient")
        # Only discarded recipients: the message is answered 250 and not stored.
        c = self.client(self.p)
        result = self.transaction(c, rcpts=["void@example.net"])
        qid = self.queued_id(result["data"])
        self.assertNotIn(qid, self.p.messages())
        self.wait_event(self.p, "discarded",
                        where=lambda e: e.get("queue_id") == qid and "rcpt" not in e)

    def test_session_delivers_again_after_a_discard(self):
        # A discarded recipient, then a normal one in the same transaction.
        c = self.client(self.p)
        result = self.transaction(c, rcpts=["void@example.net", "real@example.net"])
        qid = self.queued_id(result["data"])
        self.assertIn(qid, self.p.messages())
        self.assertEqual([r["address"] for r in self.p.messages()[qid][1]["recipients"]],
                         ["real@example.net"])
        # A message discarded at data, then a normal one on the same connection.
        c = self.client(self.p)
        self.queued_id(self.transaction(c, body=b"X-Discard: 1\r\n\r\nx\r\n")["data"])
        kept = self.queued_id(self.transaction(c)["data"])
        self.assertIn(kept, self.p.messages())

    def test_disconnect_at_rcpt_is_421_and_close(self):
        c = self.client(self.p)
        self.assertEqual(c.cmd("MAIL FROM:<app@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<bye@example.net>")[:2], (421, "4.7.0 Closing connection"))
        self.assertTrue(c.closed())
        self.wait_event(self.p, "disconnect",
                        where=lambda e: e.get("reason") == "disconnected by filter")


# --- 7. tags, notes and connection fields -------------------------------------------------------

CONTEXT = """\
postern.on("helo", function(conn)
  if conn.helo ~= "helo.client.test" and conn.helo ~= "other.client.test" then
    return postern.reject("unexpected helo " .. tostring(conn.helo))
  end
end)
postern.on("mail_from", function(tx)
  if tx.mail_from["local"] ~= "quiet" then
    tx.notes.stamp = "from-mail:" .. tx.mail_from.address
    tx.notes.count = 41
    tx.notes.flag = true
  end
  if tx.tags.internal == "true" then
    tx.tags.extra = "added at mail"
  end
end)
postern.on("data", function(tx, msg)
  local tags = {}
  for k, v in pairs(tx.tags) do tags[#tags + 1] = k .. "=" .. v end
  table.sort(tags)
  msg:add_header("X-Tags", table.concat(tags, ","))
  if tx.notes.stamp then
    msg:add_header("X-Notes", tx.notes.stamp .. ";" .. (tx.notes.count + 1) .. ";"
                   .. tostring(tx.notes.flag))
  else
    msg:add_header("X-Notes", "none")
  end
  local c = tx.conn
  msg:add_header("X-Conn", table.concat({c.ip, tostring(c.port), c.listener, c.helo,
                                         tostring(c.tls), tostring(c.auth_user)}, " "))
  local rcpts = {}
  for _, r in ipairs(tx.rcpts) do rcpts[#rcpts + 1] = r.address end
  msg:add_header("X-Tx", tx.mail_from.address .. " -> " .. table.concat(rcpts, ",")
                 .. " size=" .. tx.size .. " body=" .. msg:body_size()
                 .. " filter=" .. postern.filter_name)
end)
"""


class ContextTest(LuaCase):

    def header(self, eml, name):
        m = re.search(rb"(?m)^" + name.encode() + rb": ([^\r\n]*)\r\n", eml)
        self.assertIsNotNone(m, eml[:500])
        return m.group(1).decode()

    def test_tags_notes_and_conn_fields(self):
        p = self.start(CONTEXT, listener={"tags": ["internal", "dept-a"]})
        c = self.client(p, ehlo="helo.client.test")
        body = b"Subject: context\r\n\r\nfive\r\n"
        qid = self.queued_id(self.transaction(c, rcpts=["a@example.net", "b@example.net"],
                                              body=body)["data"])
        eml, env = p.messages()[qid]
        self.assertEqual(self.header(eml, "X-Tags"),
                         "dept-a=true,extra=added at mail,internal=true")
        self.assertEqual(self.header(eml, "X-Notes"), "from-mail:app@example.org;42;true")
        self.assertEqual(self.header(eml, "X-Conn"),
                         f"127.0.0.1 {env['client_port']} lua-test helo.client.test nil nil")
        self.assertEqual(self.header(eml, "X-Tx"),
                         f"app@example.org -> a@example.net,b@example.net size={len(body)} "
                         "body=6 filter=policy")

        # Notes do not outlive their transaction; a second EHLO is seen as the new helo.
        self.assertEqual(c.cmd("EHLO other.client.test")[0], 250)
        qid = self.queued_id(self.transaction(c, mail_from="quiet@example.org")["data"])
        eml, env = p.messages()[qid]
        self.assertEqual(self.header(eml, "X-Notes"), "none")
        self.assertEqual(self.header(eml, "X-Tags"),
                         "dept-a=true,extra=added at mail,internal=true")
        self.assertTrue(self.header(eml, "X-Conn").endswith(" lua-test other.client.test nil nil"))

    def test_concurrent_sessions_keep_their_own_notes(self):
        p = self.start(CONTEXT, listener={"max_connections_per_ip": 100})
        results, errors = {}, []

        def one(i):
            try:
                c = p.connect()
                try:
                    c.reply()
                    c.cmd("EHLO helo.client.test")
                    r = self.transaction(c, mail_from=f"sender{i}@example.org",
                                         rcpts=[f"rcpt{i}@example.net"],
                                         body=b"Subject: n%d\r\n\r\nx\r\n" % i)
                    results[i] = r["data"]
                finally:
                    c.close()
            except Exception as e:  # reported below
                errors.append(repr(e))
        threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        messages = p.messages()
        for i in range(24):
            qid = self.queued_id(results[i])
            eml, env = messages[qid]
            self.assertIn(b"Subject: n%d\r\n" % i, eml)
            self.assertEqual(self.header(eml, "X-Notes"),
                             f"from-mail:sender{i}@example.org;42;true")
            self.assertTrue(self.header(eml, "X-Tx").startswith(
                f"sender{i}@example.org -> rcpt{i}@example.net "))

    def test_without_listener_tags(self):
        p = self.start(CONTEXT)
        c = self.client(p, ehlo="helo.client.test")
        qid = self.queued_id(self.transaction(c)["data"])
        eml, _ = p.messages()[qid]
        self.assertEqual(self.header(eml, "X-Tags"), "")
        self.assertNotIn(b"X-Tags: ", eml.replace(b"X-Tags: \r\n", b""))


# --- 8. check-config compiles the scripts ------------------------------------------------------

class CheckConfigTest(LuaCase):

    def check(self, script_text):
        script = self.write("policy.lua", script_text)
        p = Postern(routes={"default": {"outbox": os.path.join(self.tmp, "outbox")}},
                    extra_toml=filter_toml(script))
        self.addCleanup(shutil.rmtree, p.dir, True)
        out = subprocess.run([BINARY, "check-config", "--config", p.config_path],
                             capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        return out.returncode, out.stdout + out.stderr, script

    def test_good_script_passes(self):
        rc, output, _ = self.check(
            RECIPIENT_POLICY.replace("postern.config.blocked", '{"x.example"}')
                            .replace("postern.config.text", '"No"'))
        self.assertEqual(rc, 0, output)
        self.assertIn(": ok (1 listener, 1 route", output)

    def test_script_that_does_not_compile_fails_with_file_and_line(self):
        rc, output, script = self.check(BROKEN_SYNTAX)
        self.assertEqual(rc, 1, output)
        self.assertIn(f"filter policy: {lua_src(script)}:2: ", output)
        self.assertIn("configuration has errors", output)

    def test_script_failing_at_load_fails(self):
        cases = ((BROKEN_AT_RUN, ":2: top level failure 10"),
                 ('\n\npostern.on("rcpt", function() end)\n',
                  ':3: postern.on: unknown event "rcpt"'),
                 ("-- no [filter.config]\nlocal x = postern.config.list[1]\n",
                  ":2: attempt to index"))
        for text, needle in cases:
            with self.subTest(needle=needle):
                rc, output, script = self.check(text)
                self.assertEqual(rc, 1, output)
                self.assertIn(f"filter policy: {lua_src(script)}{needle}", output)

    def test_missing_script(self):
        p = Postern(extra_toml=filter_toml(os.path.join(self.tmp, "absent.lua")))
        self.addCleanup(shutil.rmtree, p.dir, True)
        out = subprocess.run([BINARY, "check-config", "--config", p.config_path],
                             capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertIn("cannot read the script", out.stderr)


# --- 9. postern policy test ------------------------------------------------------------------

POLICY_TEST_SCRIPT = """\
postern.on("connect", function(conn)
  if conn.ip == "192.0.2.66" then
    return postern.reject("Blocked client")
  end
end)
postern.on("mail_from", function(tx)
  if tx.mail_from.domain == "slow.example" then
    return postern.tempfail(451, "4.7.1", "Greylisted, come back later")
  end
  tx.tags.checked = "yes"
end)
postern.on("rcpt_to", function(tx, rcpt)
  if rcpt.domain == "blocked.example" then
    return postern.reject(550, "5.7.1", "No mail for blocked.example")
  end
end)
postern.on("data", function(tx, msg)
  postern.log.info("subject is", msg:header("Subject"))
  msg:add_header("X-Checked", "yes")
  msg:remove_header("X-Secret")
  if tx.tags.internal then
    tx:route("internal")
  end
end)
postern.on("queued", function(tx, result)
  postern.log.info("queued", tx.id, result.status)
end)
"""

SAMPLE_EML = (b"From: App <app@example.org>\n"
              b"To: someone@example.net\n"
              b"Subject: Invoice 42\n"
              b"X-Secret: s3cret\n"
              b"\n"
              b"Hello.\n")


class PolicyTestCommandTest(LuaCase):

    def policy(self, *args, script="policy.lua"):
        out = subprocess.run([BINARY, "policy", "test", "--script", script, *args],
                             capture_output=True, text=True, timeout=20, cwd=self.tmp,
                             stdin=subprocess.DEVNULL)
        return out.returncode, out.stdout, out.stderr

    def setUp(self):
        super().setUp()
        self.write("policy.lua", POLICY_TEST_SCRIPT)
        with open(os.path.join(self.tmp, "sample.eml"), "wb") as f:
            f.write(SAMPLE_EML)

    def test_accepted_message_trace(self):
        rc, out, err = self.policy("--eml", "sample.eml", "--from", "app@example.org",
                                   "--to", "someone@example.net,x@blocked.example",
                                   "--tag", "internal")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(out.splitlines(), [
            "policy test: policy.lua",
            "stage connect: continue",
            "  handler at policy.lua:1: continue",
            "stage helo: continue",
            "stage mail_from: continue",
            "  change: tag checked = yes",
            "  handler at policy.lua:6: continue",
            "stage rcpt_to <someone@example.net>: continue",
            "  handler at policy.lua:12: continue",
            "stage rcpt_to <x@blocked.example>: reject 550 5.7.1 No mail for blocked.example",
            "  handler at policy.lua:12: reject 550 5.7.1 No mail for blocked.example",
            "stage data: continue",
            "  log info: subject is Invoice 42",
            "  change: header added X-Checked: yes",
            "  change: header removed X-Secret (1)",
            "  change: route internal",
            "  handler at policy.lua:17: continue",
            "header section after the data stage:",
            "  | From: App <app@example.org>",
            "  | To: someone@example.net",
            "  | Subject: Invoice 42",
            "  | X-Checked: yes",
            "sender: <app@example.org>",
            "recipients: someone@example.net",
            "route: internal",
            "tags: checked=yes internal=true",
            "event queued",
            "  log info: queued POLICYTEST01 queued",
            "result: accept at the end (the message would be queued)",
        ])

    def test_rejected_tempfailed_and_broken(self):
        rc, out, err = self.policy("--from", "app@example.org", "--to", "x@blocked.example")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("no recipient accepted: the data stage does not run\n", out)
        self.assertTrue(out.endswith(
            "result: reject 550 5.7.1 No mail for blocked.example at rcpt_to\n"), out)

        rc, out, err = self.policy("--from", "app@example.org", "--to", "a@example.net",
                                   "--ip", "192.0.2.66")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("stage connect: reject 550 5.7.1 Blocked client\n", out)
        self.assertTrue(out.endswith("result: reject 550 5.7.1 Blocked client at connect\n"), out)
        self.assertNotIn("stage helo", out)

        rc, out, err = self.policy("--from", "<bob@slow.example>", "--to", "a@example.net")
        self.assertEqual(rc, 2, out + err)
        self.assertIn("  handler at policy.lua:6: tempfail 451 4.7.1 Greylisted, come back later\n",
                      out)
        self.assertTrue(out.endswith(
            "result: tempfail 451 4.7.1 Greylisted, come back later at mail_from\n"), out)

        self.write("broken.lua", BROKEN_SYNTAX)
        rc, out, err = self.policy("--from", "a@example.org", "--to", "b@example.net",
                                   script="broken.lua")
        self.assertEqual(rc, 3, out + err)
        self.assertRegex(out, r"^script does not load: broken\.lua:2: .*near 'then'\n$")

        rc, out, err = self.policy("--to", "b@example.net")
        self.assertEqual(rc, 64, out + err)
        self.assertIn("--from is required", err)

    def test_script_error_is_a_tempfail(self):
        self.write("loop.lua", LOOPING)
        rc, out, err = self.policy("--from", "a@example.org", "--to", "loop@example.net",
                                   script="loop.lua")
        self.assertEqual(rc, 2, out + err)
        self.assertIn("  handler at loop.lua:1: error: loop.lua:4: instruction budget exceeded",
                      out)
        self.assertIn("  filter policy-test failed: loop.lua:4: instruction budget exceeded", out)
        self.assertTrue(out.endswith(
            "result: tempfail 451 4.3.0 Policy check failed; try again later (filter "
            "policy-test failed) at rcpt_to\n"), out)


# --- 10. passthrough ----------------------------------------------------------------------------

PASSTHROUGH_POLICY = """\
postern.on("rcpt_to", function(tx, rcpt)
  if rcpt.domain == "blocked.example" then
    return postern.reject(550, "5.7.1", "No mail for blocked.example")
  end
end)
postern.on("data", function(tx, msg)
  if msg:header("X-Spam") == "yes" then
    return postern.reject(554, "5.7.1", "Spam refused by policy")
  end
  if msg:header("X-Tag-Me") then
    msg:add_header("X-Tagged", "yes")
  end
end)
postern.on("delivered", function(tx, result)
  postern.log.info("delivered", tx.id, result.rcpt, result.route)
end)
"""


class PassthroughTest(RelayTestCase):

    def setUp(self):
        super().setUp()
        self.up = self.upstream(tls="starttls")
        script = os.path.join(self.tmp, "policy.lua")
        with open(script, "w") as f:
            f.write(PASSTHROUGH_POLICY)
        self.script = script
        self.p = self.postern({"hosts": [self.up.address]}, extra_toml=filter_toml(script))

    def test_data_reject_never_reaches_the_upstream(self):
        c = self.client(self.p)
        spam = self.transaction(c, "app@example.org", ["a@example.net", "x@blocked.example"],
                                b"Subject: spam\r\nX-Spam: yes\r\n\r\nbuy\r\n", quit=False)
        self.assertEqual(spam["rcpt"][0][0], 250, spam)
        self.assertEqual(spam["rcpt"][1], (550, "5.7.1 No mail for blocked.example"))
        self.assertEqual(spam["data"], (554, "5.7.1 Spam refused by policy"))
        # The same connection, then another message: only that one arrives.
        good = self.transaction(c, "app@example.org", ["b@example.net"],
                                b"Subject: fine\r\n\r\nhello\r\n")
        self.assertEqual(good["data"][0], 250, good)
        [m] = self.up.wait_messages(1)
        self.assertEqual(m["rcpt_tos"], ["b@example.net"])
        self.assertIn(b"Subject: fine\r\n", m["data"])
        time.sleep(0.3)
        self.assertEqual(len(self.up.messages()), 1)
        # The refused recipient never went upstream either.
        self.assertNotIn("x@blocked.example", json.dumps(self.up.events("rcpt")))
        # delivered: one notification per recipient, with the queue id.
        relayed = self.wait_event(self.p, "relayed")[-1]
        lines = self.wait_event(self.p, "lua", where=lambda e: e["message"].startswith("delivered"))
        self.assertEqual(lines[0]["message"],
                         f"delivered {relayed['queue_id']} b@example.net default")
        self.assertEqual(lines[0]["queue_id"], relayed["queue_id"])

    def test_streamed_message_refused_at_data_never_arrives(self):
        # Larger than what postern holds before it starts streaming upstream (256 KiB): the
        # data stage sees the header section at the end, when the body is already upstream.
        body = b"".join(b"line %06d %s\r\n" % (i, b"z" * 80) for i in range(8000))
        c = self.client(self.p)
        spam = self.transaction(c, "app@example.org", ["a@example.net"],
                                b"Subject: big spam\r\nX-Spam: yes\r\n\r\n" + body, quit=False)
        self.assertEqual(spam["data"], (554, "5.7.1 Spam refused by policy"))
        big = b"Subject: big fine\r\n\r\n" + body
        good = self.transaction(c, "app@example.org", ["b@example.net"], big)
        self.assertEqual(good["data"][0], 250, good)
        [m] = self.up.wait_messages(1)
        self.assertEqual(strip_received(m["data"]), big)
        time.sleep(0.3)
        self.assertEqual(len(self.up.messages()), 1)
        # An edit of a streamed message fails as well.
        result = self.send(self.p, rcpts=["c@example.net"],
                           body=b"Subject: big tag\r\nX-Tag-Me: 1\r\n\r\n" + body)
        self.assertEqual(result["data"], POLICY_FAILED)
        time.sleep(0.3)
        self.assertEqual(len(self.up.messages()), 1)

    def test_header_edit_in_passthrough_is_a_filter_failure(self):
        result = self.send(self.p, rcpts=["a@example.net"],
                           body=b"Subject: tag\r\nX-Tag-Me: 1\r\n\r\nx\r\n")
        self.assertEqual(result["rcpt"][0][0], 250, result)
        self.assertEqual(result["data"], POLICY_FAILED)
        [failed] = self.wait_event(self.p, "filter_failed")
        self.assertEqual(failed["stage"], "data")
        self.assertIn('msg:add_header needs delivery = "queue"', failed["error"])
        self.assertIn(f"{lua_src(self.script)}:11:", failed["error"])
        time.sleep(0.3)
        self.assertEqual(self.up.messages(), [])
        # The next one goes through.
        self.assertEqual(self.send(self.p, rcpts=["a@example.net"])["data"][0], 250)
        self.assertEqual(len(self.up.wait_messages(1)), 1)


# --- 11. notifications --------------------------------------------------------------------------

NOTIFY = """\
postern.on("queued", function(tx, result)
  postern.log.info("queued", tx.id, "status=" .. result.status, "route=" .. result.route,
                   "reply=" .. result.reply, "rcpts=" .. #tx.rcpts)
  if tx.mail_from["local"] == "meddle" then
    tx:route("default")
  end
end)
postern.on("queued", function(tx, result)
  postern.log.warn("second handler", tx.id)
end)
"""


class NotificationTest(LuaCase):

    def test_queued_handler_logs_with_the_queue_id(self):
        p = self.start(NOTIFY)
        c = self.client(p)
        qid = self.queued_id(self.transaction(c, rcpts=["a@example.net", "b@example.net"])["data"])
        lines = self.wait_event(p, "lua", 2, where=lambda e: e["queue_id"] == qid)
        self.assertEqual([(e["level"], e["filter"], e["client"], e["message"]) for e in lines], [
            ("info", "policy", "127.0.0.1",
             f"queued {qid} status=queued route=default reply=250 2.0.0 Ok: queued as {qid} "
             "rcpts=2"),
            ("warn", "policy", "127.0.0.1", f"second handler {qid}"),
        ])
        # A notification cannot change the transaction: the error is logged, the message
        # was stored all the same.
        qid = self.queued_id(self.transaction(c, mail_from="meddle@example.org")["data"])
        self.assertIn(qid, p.messages())

        def failed_lines():  # raw lines: see test_notification_failure_log_line
            return [line for line in p.log().splitlines()
                    if " event=filter_failed " in line and f"queue_id={qid}" in line]
        wait_for(failed_lines)
        [line] = failed_lines()
        self.assertIn(f'{lua_src(self.script_path)}:5: tx:route: a notification cannot change the '
                      'transaction"', line)
        self.assertIn(" level=error ", line)
        # The handlers after the failing one still ran.
        self.wait_event(p, "lua", where=lambda e: e["message"] == f"second handler {qid}")

    def test_notification_failure_log_line(self):
        p = self.start(NOTIFY)
        result = self.transaction(self.client(p), mail_from="meddle@example.org")
        qid = self.queued_id(result["data"])
        failed = self.wait_event(p, "filter_failed", where=lambda e: e.get("queue_id") == qid)
        self.assertIn("a notification cannot change the transaction", failed[0]["error"])
        self.assertEqual(failed[0]["_line"].count(" event="), 1, failed[0]["_line"])


if __name__ == "__main__":
    unittest.main()
