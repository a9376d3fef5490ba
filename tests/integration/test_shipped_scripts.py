"""The Lua policy scripts shipped in scripts/, each through `postern policy test`.

Every script with a --script-config TOML file written here: the cases it allows and refuses,
the exit codes, the changes it makes (headers, envelope sender, route, tags), and the
configurations it refuses to load (exit 3, naming the key). The [[filter]] examples of the
scripts' header comments and of the cookbook pass check-config, and the script lines the docs
name are still the handlers and errors they were. Then sender_rewrite.lua in a real postern:
the envelope sender in the outbox's .json and the header From: in its .eml (with
require_headers.lua's Message-ID: made from [server] hostname), and in passthrough, where
only the envelope sender can change; and non_production_capture.lua refusing a message it
cannot capture in passthrough.

The scripts are read from POSTERN_SOURCE/scripts; `policy test` runs with POSTERN_SOURCE as
its working directory, so the trace names them "scripts/NAME.lua:LINE".
"""
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import BINARY, QUEUED, SOURCE, Postern, outbox_messages, wait_for
from upstreams import RelayTestCase, log_events

SCRIPTS = os.path.join(SOURCE, "scripts")
SHIPPED = ["non_production_capture.lua", "recipient_domain_policy.lua", "require_headers.lua",
           "route_by_sender.lua", "sender_rewrite.lua", "tag_and_limit_size.lua"]

# The routes `--config` gives tx:route and postern.routes.
POSTERN_TOML = """\
[server]
hostname = "relay.example.com"
[[listener]]
name = "staging"
address = "127.0.0.1:2525"
trusted_networks = ["127.0.0.0/8"]
tags = ["non-production"]
[route.default]
outbox = "{tmp}/outbox"
[route.bulk]
outbox = "{tmp}/bulk"
[route.capture]
outbox = "{tmp}/capture"
"""


def handler_line(script, event):
    """The line of `postern.on("EVENT", ...)` in a shipped script: where the trace says its
    handler is."""
    with open(os.path.join(SCRIPTS, script)) as f:
        for number, line in enumerate(f, 1):
            if line.startswith(f'postern.on("{event}"'):
                return number
    raise AssertionError(f"{script} has no {event} handler")


def parse_trace(out):
    """`policy test` output as {"stages": [(head, verdict, [indented lines])], "header":
    [header section lines], "summary": {sender, recipients, route, tags, result}}."""
    trace = {"stages": [], "header": [], "summary": {}, "lines": out.splitlines()}
    block = None
    for line in trace["lines"]:
        if line.startswith("stage "):
            head, verdict = line[len("stage "):].split(": ", 1)
            block = []
            trace["stages"].append((head, verdict, block))
        elif line.startswith("  | "):
            trace["header"].append(line[4:])
        elif line.startswith("  ") and block is not None:
            block.append(line[2:])
        elif line == "header section after the data stage:":
            block = None
        else:
            key, _, value = line.partition(": ")
            if key in ("sender", "recipients", "route", "tags", "result"):
                trace["summary"][key] = value
            elif line == "recipients:":
                trace["summary"]["recipients"] = ""
            block = None
    return trace


class ScriptTestCase(unittest.TestCase):
    """Runs `postern policy test` on a shipped script with a config file written per call."""

    SCRIPT = None

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="postern-scripts-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.config_file = os.path.join(self.tmp, "postern.toml")
        with open(self.config_file, "w") as f:
            f.write(POSTERN_TOML.format(tmp=self.tmp))

    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        return path

    def policy(self, config, *args, eml=None, routes=False, script=None):
        """(exit code, stdout, trace) of `postern policy test` on the script with `config`
        (TOML text) as postern.config; eml: the message (bytes); routes: --config with the
        routes default, bulk and capture."""
        command = [BINARY, "policy", "test", "--script", "scripts/" + (script or self.SCRIPT)]
        if config is not None:
            command += ["--script-config", self.write("script-config.toml", config)]
        if eml is not None:
            command += ["--eml", self.write("message.eml", eml)]
        if routes:
            command += ["--config", self.config_file]
        out = subprocess.run(command + list(args), capture_output=True, text=True, timeout=20,
                             cwd=SOURCE, stdin=subprocess.DEVNULL)
        return out.returncode, out.stdout, parse_trace(out.stdout) | {"stderr": out.stderr}

    def stage(self, trace, head):
        """(verdict, indented lines) of the stage line `stage HEAD: ...`."""
        found = [(v, lines) for h, v, lines in trace["stages"] if h == head]
        self.assertEqual(len(found), 1, f"stage {head} in:\n" + "\n".join(trace["lines"]))
        return found[0]

    def changes(self, trace, head):
        return [line[len("change: "):] for line in self.stage(trace, head)[1]
                if line.startswith("change: ")]

    def handler(self, event, verdict="continue"):
        return f"handler at scripts/{self.SCRIPT}:{handler_line(self.SCRIPT, event)}: {verdict}"

    def assert_refuses_config(self, config, *needles):
        """The script does not load with this config: exit 3, one line naming the problem."""
        rc, out, _ = self.policy(config, "--from", "app@example.com", "--to", "a@example.net")
        self.assertEqual(rc, 3, out)
        self.assertTrue(out.startswith(f"script does not load: scripts/{self.SCRIPT}:"), out)
        self.assertEqual(out.count("\n"), 1, out)
        for needle in needles:
            self.assertIn(needle, out)


class EveryScriptTest(ScriptTestCase):

    def test_each_shipped_script_is_tested_here(self):
        shipped = sorted(n for n in os.listdir(SCRIPTS) if n.endswith(".lua"))
        self.assertEqual(shipped, SHIPPED)

    def test_without_a_config_each_script_refuses_to_load(self):
        # None of them has a meaningful default: an empty [filter.config] is a mistake.
        needles = {
            "non_production_capture.lua": "set capture_route",
            "recipient_domain_policy.lua": "set allow and/or deny in [filter.config]",
            "route_by_sender.lua": "no rules: add [[filter.config.rules]]",
            "sender_rewrite.lua": "no rules: add [filter.config.users.NAME]",
            "tag_and_limit_size.lua": "set [filter.config.limits] and/or default_limit",
        }
        for script, needle in needles.items():
            with self.subTest(script=script):
                rc, out, _ = self.policy(None, "--from", "a@example.com", "--to", "b@example.net",
                                         script=script)
                self.assertEqual(rc, 3, out)
                self.assertIn(needle, out)
        # require_headers.lua is the exception: mode "add" of both headers by default.
        rc, out, _ = self.policy(None, "--from", "a@example.com", "--to", "b@example.net",
                                 script="require_headers.lua")
        self.assertEqual(rc, 0, out)

    def test_check_config_loads_every_script_with_its_documented_example(self):
        # The [[filter]] example of each header comment, as check-config loads it.
        examples = []
        for script in SHIPPED:
            with open(os.path.join(SCRIPTS, script)) as f:
                text = f.read()
            block = re.search(r"^--   \[\[filter\]\]\n((?:--   .*\n)+)", text, re.M)
            self.assertIsNotNone(block, script)
            toml = "[[filter]]\n" + "".join(line[5:] + "\n"
                                            for line in block.group(1).splitlines())
            toml = toml.replace('script = "scripts/', f'script = "{SCRIPTS}/')
            examples.append(toml)
        self.check_config("\n".join(examples))

    def test_check_config_loads_the_cookbooks_six_together(self):
        with open(os.path.join(SOURCE, "docs", "policy-cookbook.md")) as f:
            text = f.read()
        section = text[text.index("## All six together"):]
        toml = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
        self.assertEqual(toml.count("[[filter]]"), 6)
        self.check_config(toml.replace('script = "scripts/', f'script = "{SCRIPTS}/'))

    def test_docs_name_the_right_lines(self):
        # "handler at scripts/X.lua:N" in the docs is where a handler starts, and
        # "scripts/X.lua:N: config..." a line that raises the error: they go stale when a
        # script is edited.
        lines = {}
        for script in SHIPPED:
            with open(os.path.join(SCRIPTS, script)) as f:
                lines[script] = f.read().splitlines()
        for doc in ("lua-api.md", "policy-cookbook.md", "troubleshooting.md"):
            with open(os.path.join(SOURCE, "docs", doc)) as f:
                text = f.read()
            for m in re.finditer(r"(handler at )?scripts/(\w+\.lua):(\d+):", text):
                script, number = m.group(2), int(m.group(3))
                if script not in lines:
                    continue  # an example's own script
                line = lines[script][number - 1]
                with self.subTest(doc=doc, at=m.group(0)):
                    if m.group(1):
                        self.assertTrue(line.startswith("postern.on("), line)
                    else:
                        self.assertIn("error(", line)

    def check_config(self, extra_toml):
        """check-config passes with these [[filter]] entries and the routes the examples
        name (default, bulk, corporate, capture)."""
        p = Postern(routes={name: {"outbox": os.path.join(self.tmp, name)}
                            for name in ("default", "bulk", "corporate", "capture")},
                    extra_toml=extra_toml)
        self.addCleanup(shutil.rmtree, p.dir, True)
        out = subprocess.run([BINARY, "check-config", "--config", p.config_path],
                             capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertNotIn("filter", out.stdout + out.stderr)


# --- recipient_domain_policy.lua ----------------------------------------------------------------

DOMAINS = """\
allow = ["example.com", "*.example.com", "partner.example.net"]
deny = ["legacy.example.com"]
"""


class RecipientDomainPolicyTest(ScriptTestCase):
    SCRIPT = "recipient_domain_policy.lua"

    def test_allowed_and_refused_recipients(self):
        rc, out, t = self.policy(DOMAINS, "--from", "app@example.com", "--to",
                                 "alice@example.com,bob@competitor.example,c@Sub.Example.COM,"
                                 "d@partner.example.net")
        self.assertEqual(rc, 0, out)
        refused = "reject 550 5.7.1 Recipient domain competitor.example is not allowed"
        self.assertEqual(self.stage(t, "rcpt_to <alice@example.com>"),
                         ("continue", [self.handler("rcpt_to")]))
        self.assertEqual(self.stage(t, "rcpt_to <bob@competitor.example>"),
                         (refused, [self.handler("rcpt_to", refused)]))
        self.assertEqual(self.stage(t, "rcpt_to <c@Sub.Example.COM>")[0], "continue")
        self.assertEqual(t["summary"], {
            "sender": "<app@example.com>",
            "recipients": "alice@example.com c@Sub.Example.COM d@partner.example.net",
            "result": "accept at the end (the message would be queued)"})
        self.assertNotIn("tags", t["summary"])

    def test_deny_wins_over_allow_and_a_wildcard_is_not_the_domain_itself(self):
        rc, out, t = self.policy('allow = "*.example.com"\ndeny = ["legacy.example.com"]\n',
                                 "--from", "app@example.com",
                                 "--to", "a@legacy.example.com,b@example.com")
        self.assertEqual(rc, 1, out)
        self.assertIn("no recipient accepted: the data stage does not run", t["lines"])
        self.assertEqual(self.stage(t, "rcpt_to <a@legacy.example.com>")[0],
                         "reject 550 5.7.1 Recipient domain legacy.example.com is not allowed")
        self.assertEqual(t["summary"]["result"],
                         "reject 550 5.7.1 Recipient domain example.com is not allowed at rcpt_to")
        self.assertNotIn("stage data", out)

    def test_deny_only(self):
        rc, out, t = self.policy('deny = "competitor.example"\n', "--from", "app@example.com",
                                 "--to", "x@anywhere.example.org")
        self.assertEqual(rc, 0, out)
        rc, out, t = self.policy('deny = "competitor.example"\n', "--from", "app@example.com",
                                 "--to", "x@COMPETITOR.example")
        self.assertEqual(rc, 1, out)
        self.assertEqual(t["summary"]["result"], "reject 550 5.7.1 Recipient domain "
                         "COMPETITOR.example is not allowed at rcpt_to")

    def test_bad_configs_name_the_key(self):
        self.assert_refuses_config('allow = ["*example.com"]\n',
                                   'config.allow[1] "*example.com" is not a domain such as '
                                   '"example.com" or "*.example.com"')
        self.assert_refuses_config('deny = ["ok.example", "@example.com"]\n',
                                   'config.deny[2] "@example.com" is not a domain')
        self.assert_refuses_config("allow = []\n",
                                   "config.allow must be a non-empty list of domains")
        self.assert_refuses_config("deny = [1]\n", "config.deny[1] is not a domain")
        self.assert_refuses_config("allow = 5\n", "config.allow must be a non-empty list")
        # Not TOML at all: refused before the script runs.
        rc, out, _ = self.policy("allow = [\n", "--from", "a@example.com", "--to", "b@example.net")
        self.assertEqual(rc, 3, out)
        self.assertTrue(out.startswith("script does not load: the script's config: line 1: "), out)


# --- sender_rewrite.lua -------------------------------------------------------------------------

REWRITE = """\
[users.billing]
from = "Example Billing <billing@example.com>"
reply_to = "original"
[users.monitoring]
from = "Monitoring <alerts@example.com>"
envelope_from = "alerts-bounces@example.com"
reply_to = "ops@example.com"
[users.legacy]
from = "Legacy App <legacy@example.com>"
envelope_from = "original"
[listeners.printers]
from = "scanner@example.com"
sender = "relay@example.com"
"""

NIGHTLY = (b"From: root@build-42.internal\n"
           b"To: someone@example.net\n"
           b"Subject: nightly report\n"
           b"\n"
           b"All good.\n")


class SenderRewriteTest(ScriptTestCase):
    SCRIPT = "sender_rewrite.lua"

    def run_as(self, *args, eml=NIGHTLY, sender="root@build-42.internal", config=REWRITE):
        return self.policy(config, "--from", sender, "--to", "someone@example.net", *args,
                           eml=eml)

    def test_user_rule_rewrites_envelope_and_header(self):
        rc, out, t = self.run_as("--user", "billing")
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.stage(t, "mail_from"), ("continue", [
            "change: tag sender_rewrite = user billing",
            "change: sender billing@example.com",
            self.handler("mail_from"),
        ]))
        self.assertEqual(self.stage(t, "data"), ("continue", [
            "change: header set X-Original-From: root@build-42.internal",
            "change: header set From: Example Billing <billing@example.com>",
            "change: header set Reply-To: root@build-42.internal",
            self.handler("data"),
        ]))
        self.assertEqual(t["header"], [
            "From: Example Billing <billing@example.com>",
            "To: someone@example.net",
            "Subject: nightly report",
            "X-Original-From: root@build-42.internal",
            "Reply-To: root@build-42.internal",
        ])
        self.assertEqual(t["summary"], {
            "sender": "<billing@example.com>",
            "recipients": "someone@example.net",
            "tags": "sender_rewrite=user billing",
            "result": "accept at the end (the message would be queued)"})

    def test_envelope_from_of_its_own_and_reply_to_address(self):
        eml = NIGHTLY.replace(b"Subject:", b"Reply-To: dev@build-42.internal\nSubject:")
        rc, out, t = self.run_as("--user", "monitoring", eml=eml)
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.changes(t, "mail_from"), [
            "tag sender_rewrite = user monitoring", "sender alerts-bounces@example.com"])
        self.assertEqual(self.changes(t, "data"), [
            "header set X-Original-From: root@build-42.internal",
            "header set From: Monitoring <alerts@example.com>",
            "header set Reply-To: ops@example.com",
        ])
        self.assertIn("Reply-To: ops@example.com", t["header"])
        self.assertNotIn("Reply-To: dev@build-42.internal", t["header"])
        self.assertEqual(t["summary"]["sender"], "<alerts-bounces@example.com>")

    def test_envelope_from_original_keeps_the_clients_sender(self):
        rc, out, t = self.run_as("--user", "legacy")
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.changes(t, "mail_from"), ["tag sender_rewrite = user legacy"])
        self.assertIn("header set From: Legacy App <legacy@example.com>",
                      self.changes(t, "data"))
        self.assertEqual(t["summary"]["sender"], "<root@build-42.internal>")

    def test_the_null_sender_stays_null(self):
        rc, out, t = self.run_as("--user", "billing", sender="<>")
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.changes(t, "mail_from"), ["tag sender_rewrite = user billing"])
        self.assertIn("header set From: Example Billing <billing@example.com>",
                      self.changes(t, "data"))
        self.assertEqual(t["summary"]["sender"], "<>")

    def test_sender_already_right_is_not_rewritten(self):
        rc, out, t = self.run_as("--user", "billing", sender="billing@example.com")
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.changes(t, "mail_from"), ["tag sender_rewrite = user billing"])

    def test_listener_rule_and_a_user_rule_wins_over_it(self):
        rc, out, t = self.run_as("--listener", "printers")
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.changes(t, "mail_from"), [
            "tag sender_rewrite = listener printers", "sender scanner@example.com"])
        self.assertEqual(self.changes(t, "data"), [
            "header set X-Original-From: root@build-42.internal",
            "header set From: scanner@example.com",
            "header set Sender: relay@example.com",
        ])
        # A user of that listener with a rule of its own gets its own rule.
        rc, out, t = self.run_as("--listener", "printers", "--user", "monitoring")
        self.assertEqual(t["summary"]["tags"], "sender_rewrite=user monitoring")
        self.assertEqual(t["summary"]["sender"], "<alerts-bounces@example.com>")
        self.assertNotIn("Sender: relay@example.com", t["header"])
        # A user without a rule on that listener gets the listener's.
        rc, out, t = self.run_as("--listener", "printers", "--user", "nobody")
        self.assertEqual(t["summary"]["tags"], "sender_rewrite=listener printers")

    def test_no_rule_no_change(self):
        rc, out, t = self.run_as("--user", "someone-else")
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.stage(t, "mail_from"), ("continue", [self.handler("mail_from")]))
        self.assertEqual(self.stage(t, "data"), ("continue", [self.handler("data")]))
        self.assertNotIn("header section after the data stage:", t["lines"])
        self.assertEqual(t["summary"]["sender"], "<root@build-42.internal>")
        self.assertNotIn("tags", t["summary"])

    def test_forged_x_original_from_is_replaced_or_removed(self):
        forged = b"X-Original-From: ceo@example.com\n" + NIGHTLY
        rc, out, t = self.run_as("--user", "billing", eml=forged)
        self.assertIn("X-Original-From: root@build-42.internal", t["header"])
        self.assertNotIn("X-Original-From: ceo@example.com", t["header"])
        # Without a From: there is nothing to keep: the forged one goes.
        no_from = b"X-Original-From: ceo@example.com\nTo: someone@example.net\n\nhi\n"
        rc, out, t = self.run_as("--user", "billing", eml=no_from)
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.changes(t, "data"), [
            "header removed X-Original-From (1)",
            "header set From: Example Billing <billing@example.com>",
        ])
        self.assertEqual(t["header"], ["To: someone@example.net",
                                       "From: Example Billing <billing@example.com>"])

    def test_reply_to_original_keeps_a_reply_to_the_message_has(self):
        eml = NIGHTLY.replace(b"Subject:", b"Reply-To: dev@build-42.internal\nSubject:")
        rc, out, t = self.run_as("--user", "billing", eml=eml)
        self.assertIn("Reply-To: dev@build-42.internal", t["header"])
        self.assertNotIn("header set Reply-To: root@build-42.internal", self.changes(t, "data"))

    def test_long_original_from_is_cut_to_900_octets(self):
        long_from = "Very Long " + "\u00e9" * 600 + " <root@build-42.internal>"
        eml = ("From: " + long_from + "\nTo: someone@example.net\n\nhi\n").encode()
        rc, out, t = self.run_as("--user", "billing", eml=eml)
        self.assertEqual(rc, 0, out)
        [kept] = [h for h in t["header"] if h.startswith("X-Original-From: ")]
        value = kept[len("X-Original-From: "):]
        self.assertLessEqual(len(value.encode()), 900)
        self.assertTrue(long_from.startswith(value), value[-20:])  # cut between characters

    def test_bad_configs_name_the_key(self):
        self.assert_refuses_config("[users.billing]\n", "config.users.billing.from must be "
                                   "one line of text (at most 900 octets)")
        self.assert_refuses_config('[users.billing]\nfrom = "a@example.com"\ncolour = "red"\n',
                                   "config.users.billing.colour is not a key (from, "
                                   "envelope_from, reply_to, sender)")
        self.assert_refuses_config('[listeners.printers]\nfrom = "Scanner"\n',
                                   "config.listeners.printers.from has no address")
        self.assert_refuses_config('[users.app]\nfrom = "App <app@local host>"\n',
                                   'config.users.app.from: "app@local host" cannot be the '
                                   "envelope sender (a plain local@domain); set envelope_from")
        self.assert_refuses_config('[users.app]\nfrom = "App <app@example.com>"\n'
                                   'envelope_from = "App <app@example.com>"\n',
                                   "config.users.app.envelope_from must be an address such as "
                                   '"bounces@example.com" or "original"')
        self.assert_refuses_config('[users.app]\nfrom = "a@example.com"\nenvelope_from = ""\n',
                                   "config.users.app.envelope_from must be an address")
        self.assert_refuses_config('[users.app]\nfrom = "a@example.com"\nsender = "x\\ny"\n',
                                   "config.users.app.sender must be one line of text")
        self.assert_refuses_config('users = "billing"\n', "config.users must be a table of rules")
        self.assert_refuses_config("[users]\nbilling = 1\n",
                                   'config.users.billing must be a table with from = "..."')
        # A From: whose address cannot be the envelope sender is fine with envelope_from.
        rc, out, t = self.policy('[users.app]\nfrom = "App <app@local host>"\n'
                                 'envelope_from = "app@example.com"\n',
                                 "--from", "a@b.example", "--to", "c@d.example", "--user", "app")
        self.assertEqual(rc, 0, out)
        self.assertEqual(t["summary"]["sender"], "<app@example.com>")


# --- route_by_sender.lua ------------------------------------------------------------------------

RULES = """\
[[rules]]
auth_user = "newsletter"
sender_domain = "news.example.com"
route = "bulk"
[[rules]]
auth_user = ["billing", "invoices"]
route = "capture"
[[rules]]
sender_domain = ["example.com", "*.example.com"]
route = "default"
"""


class RouteBySenderTest(ScriptTestCase):
    SCRIPT = "route_by_sender.lua"

    def test_first_matching_rule_chooses_the_route(self):
        rc, out, t = self.policy(RULES, "--from", "news@news.example.com", "--to",
                                 "bob@example.net", "--user", "newsletter", routes=True)
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.stage(t, "mail_from"), ("continue", [
            "change: route bulk", "change: tag sender_route = bulk", self.handler("mail_from")]))
        self.assertEqual(t["summary"]["route"], "bulk")
        self.assertEqual(t["summary"]["tags"], "sender_route=bulk")
        # The newsletter user with another domain: the third rule (*.example.com).
        rc, out, t = self.policy(RULES, "--from", "news@shop.example.com", "--to",
                                 "bob@example.net", "--user", "newsletter", routes=True)
        self.assertEqual(t["summary"]["route"], "default")
        # A user of the second rule's list, whatever the sender.
        rc, out, t = self.policy(RULES, "--from", "x@elsewhere.example", "--to",
                                 "bob@example.net", "--user", "invoices", routes=True)
        self.assertEqual(t["summary"]["route"], "capture")

    def test_no_match_no_change(self):
        for sender in ("app@elsewhere.example", "<>"):
            with self.subTest(sender=sender):
                rc, out, t = self.policy(RULES, "--from", sender, "--to", "bob@example.net",
                                         routes=True)
                self.assertEqual(rc, 0, out)
                self.assertEqual(self.changes(t, "mail_from"), [])
                self.assertNotIn("route", t["summary"])
                self.assertNotIn("tags", t["summary"])

    def test_unknown_route_refuses_to_load_with_the_configuration(self):
        config = '[[rules]]\nauth_user = "a"\nroute = "nowhere"\n'
        rc, out, _ = self.policy(config, "--from", "x@example.com", "--to", "b@example.net",
                                 routes=True)
        self.assertEqual(rc, 3, out)
        self.assertIn("config.rules[1].route: no [route.nowhere] (routes: bulk, capture, "
                      "default)", out)
        # Without --config no route names are known: the rule loads and tx:route takes it.
        rc, out, t = self.policy(config, "--from", "x@example.com", "--to", "b@example.net",
                                 "--user", "a")
        self.assertEqual(rc, 0, out)
        self.assertEqual(t["summary"]["route"], "nowhere")

    def test_bad_configs_name_the_key(self):
        self.assert_refuses_config("rules = []\n", "no rules: add [[filter.config.rules]] "
                                   "tables with a route")
        self.assert_refuses_config('[[rules]]\nroute = "bulk"\n',
                                   "config.rules[1] needs auth_user or sender_domain")
        self.assert_refuses_config('[[rules]]\nauth_user = "a"\n',
                                   'config.rules[1] needs route = "NAME"')
        self.assert_refuses_config('[[rules]]\nauth_user = "a"\nroute = "bulk"\n'
                                   '[[rules]]\nuser = "b"\nroute = "bulk"\n',
                                   "config.rules[2].user is not a key (route, auth_user, "
                                   "sender_domain)")
        self.assert_refuses_config('[[rules]]\nsender_domain = []\nroute = "bulk"\n',
                                   "config.rules[1].sender_domain must be a string or a "
                                   "non-empty list")
        self.assert_refuses_config('[[rules]]\nauth_user = ["a", ""]\nroute = "bulk"\n',
                                   "config.rules[1].auth_user[2] must be a non-empty string")


# --- tag_and_limit_size.lua ---------------------------------------------------------------------

LIMITS = """\
default_limit = "2KiB"
[limits]
alerts = "1KiB"
billing = 1000000
"""


def message_of(size):
    """A message of `size` octets (with CRLF line ends, as the server stores it)."""
    head = b"From: a@example.com\r\nSubject: size\r\n\r\n"
    return head + b"x" * (size - len(head) - 2) + b"\r\n"


class TagAndLimitSizeTest(ScriptTestCase):
    SCRIPT = "tag_and_limit_size.lua"

    def test_user_limit_refuses_a_larger_message_at_data(self):
        rc, out, t = self.policy(LIMITS, "--from", "alerts@example.com", "--to",
                                 "ops@example.net", "--user", "alerts", eml=message_of(1500))
        self.assertEqual(rc, 1, out)
        refused = ("reject 552 5.3.4 Message size exceeds the limit of 1024 octets for user "
                   "alerts")
        self.assertEqual(self.stage(t, "mail_from"), ("continue", [
            "change: tag app = alerts", self.handler("mail_from")]))
        self.assertEqual(self.stage(t, "data"), (refused, [self.handler("data", refused)]))
        self.assertEqual(t["summary"], {"result": refused + " at data"})

    def test_within_the_limit_is_accepted_and_tagged(self):
        rc, out, t = self.policy(LIMITS, "--from", "alerts@example.com", "--to",
                                 "ops@example.net", "--user", "alerts", eml=message_of(1024))
        self.assertEqual(rc, 0, out)
        self.assertEqual(t["summary"]["tags"], "app=alerts")
        rc, out, t = self.policy(LIMITS, "--from", "b@example.com", "--to", "ops@example.net",
                                 "--user", "billing", eml=message_of(50000))
        self.assertEqual(rc, 0, out)
        self.assertEqual(t["summary"]["tags"], "app=billing")

    def test_default_limit_for_other_users_and_anonymous_clients(self):
        rc, out, t = self.policy(LIMITS, "--from", "x@example.com", "--to", "ops@example.net",
                                 "--user", "reports", eml=message_of(3000))
        self.assertEqual(rc, 1, out)
        self.assertEqual(t["summary"]["result"], "reject 552 5.3.4 Message size exceeds the "
                         "limit of 2048 octets for user reports at data")
        rc, out, t = self.policy(LIMITS, "--from", "x@example.com", "--to", "ops@example.net",
                                 eml=message_of(3000))
        self.assertEqual(rc, 1, out)
        self.assertEqual(t["summary"]["result"], "reject 552 5.3.4 Message size exceeds the "
                         "limit of 2048 octets for this client at data")
        self.assertEqual(self.changes(t, "mail_from"), [])  # no login, no app tag

    def test_without_default_limit_others_are_not_limited(self):
        rc, out, t = self.policy('[limits]\nalerts = "1KiB"\n', "--from", "x@example.com",
                                 "--to", "ops@example.net", eml=message_of(5000))
        self.assertEqual(rc, 0, out)
        self.assertNotIn("tags", t["summary"])

    def test_bad_configs_name_the_key(self):
        self.assert_refuses_config('[limits]\nalerts = "1.5MiB"\n',
                                   'config.limits.alerts: 1.5MiB is not a size such as "25MiB", '
                                   '"512KB" or a number of bytes')
        self.assert_refuses_config('[limits]\nalerts = "10 Mb"\n',
                                   "config.limits.alerts: 10 Mb is not a size")
        self.assert_refuses_config("default_limit = 0\n",
                                   "config.default_limit: 0 is not a size")
        self.assert_refuses_config('limits = "1MiB"\n',
                                   "config.limits must be a table of user = size")
        self.assert_refuses_config("[limits]\n",
                                   "set [filter.config.limits] and/or default_limit")


# --- require_headers.lua ------------------------------------------------------------------------

DATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|"
                  r"Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d \+0000$")

COMPLETE = (b"From: app@example.com\nTo: bob@example.net\nSubject: fine\n"
            b"Date: Mon, 02 Feb 2026 10:00:00 +0000\nMessage-ID: <1@example.com>\n\nhi\n")


class RequireHeadersTest(ScriptTestCase):
    SCRIPT = "require_headers.lua"

    def test_add_mode_adds_both(self):
        rc, out, t = self.policy(None, "--from", "app@example.com", "--to", "bob@example.net")
        self.assertEqual(rc, 0, out)
        verdict, lines = self.stage(t, "data")
        self.assertEqual(verdict, "continue")
        self.assertEqual(lines[-1], self.handler("data"))
        [mid, date, tag] = self.changes(t, "data")
        # No [server] hostname in `policy test`: postern.hostname is "" there.
        self.assertRegex(mid, r"^header set Message-ID: <[0-9a-f]{64}@postern\.invalid>$")
        self.assertRegex(date[len("header set Date: "):], DATE)
        self.assertEqual(tag, "tag headers_added = Message-ID,Date")
        self.assertEqual(t["summary"]["tags"], "headers_added=Message-ID,Date")
        self.assertEqual(t["header"][:3], ["From: <app@example.com>", "To: <bob@example.net>",
                                           "Subject: postern policy test"])

    def test_add_mode_with_a_domain_and_only_what_is_missing(self):
        eml = COMPLETE.replace(b"Message-ID: <1@example.com>\n", b"Message-ID:\n")
        rc, out, t = self.policy('domain = "relay.example.com"\n', "--from", "<>",
                                 "--to", "bob@example.net", eml=eml)
        self.assertEqual(rc, 0, out)
        [mid, tag] = self.changes(t, "data")  # an empty Message-ID: counts as missing
        self.assertRegex(mid, r"^header set Message-ID: <[0-9a-f]{64}@relay\.example\.com>$")
        self.assertEqual(tag, "tag headers_added = Message-ID")
        self.assertIn("Date: Mon, 02 Feb 2026 10:00:00 +0000", t["header"])

    def test_complete_message_is_not_touched(self):
        for config in (None, 'mode = "reject"\n'):
            with self.subTest(config=config):
                rc, out, t = self.policy(config, "--from", "app@example.com", "--to",
                                         "bob@example.net", eml=COMPLETE)
                self.assertEqual(rc, 0, out)
                self.assertEqual(self.stage(t, "data"), ("continue", [self.handler("data")]))
                self.assertNotIn("tags", t["summary"])

    def test_reject_mode_names_what_is_missing(self):
        rc, out, t = self.policy('mode = "reject"\n', "--from", "app@example.com",
                                 "--to", "bob@example.net")
        self.assertEqual(rc, 1, out)
        refused = "reject 550 5.6.0 Message lacks required headers: Message-ID, Date"
        self.assertEqual(self.stage(t, "data"), (refused, [self.handler("data", refused)]))
        self.assertEqual(t["summary"], {"result": refused + " at data"})
        rc, out, t = self.policy('mode = "reject"\nheaders = ["Date", "X-App"]\n',
                                 "--from", "app@example.com", "--to", "bob@example.net",
                                 eml=COMPLETE)
        self.assertEqual(rc, 1, out)
        self.assertEqual(t["summary"]["result"],
                         "reject 550 5.6.0 Message lacks required header: X-App at data")

    def test_bad_configs_name_the_key(self):
        self.assert_refuses_config('mode = "fix"\n',
                                   'config.mode must be "add" or "reject", not fix')
        self.assert_refuses_config('headers = ["X-App"]\n',
                                   'mode "add" can add Date and Message-ID, not X-App')
        self.assert_refuses_config('domain = "relay example.com"\n',
                                   'config.domain must be a domain such as "relay.example.com"')
        self.assert_refuses_config('mode = "reject"\nheaders = []\n', "config.headers is empty")
        self.assert_refuses_config('mode = "reject"\nheaders = ["Bad:Name"]\n',
                                   "config.headers[1] is not a header name")
        self.assert_refuses_config("headers = 1\n",
                                   "config.headers must be a list of header names")


# --- non_production_capture.lua -----------------------------------------------------------------

CAPTURE = """\
capture_route = "capture"
allow_domains = ["qa.example.com"]
"""


class NonProductionCaptureTest(ScriptTestCase):
    SCRIPT = "non_production_capture.lua"

    def test_tagged_message_with_an_outsider_is_captured(self):
        rc, out, t = self.policy(CAPTURE, "--tag", "non-production", "--from", "app@example.com",
                                 "--to", "tester@qa.example.com,customer@example.org",
                                 routes=True)
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.stage(t, "data"), ("continue", [
            "change: route capture",
            "change: tag captured = true",
            "log info: captured into route capture: 2 recipient(s), first not allowed: "
            "customer@example.org",
            self.handler("data"),
        ]))
        self.assertEqual(t["summary"], {
            "sender": "<app@example.com>",
            "recipients": "tester@qa.example.com customer@example.org",
            "route": "capture",
            "tags": "captured=true non-production=true",
            "result": "accept at the end (the message would be queued)"})

    def test_allowed_or_untagged_messages_are_not_touched(self):
        for args in (("--tag", "non-production", "--to", "a@qa.example.com,b@QA.example.com"),
                     ("--to", "customer@example.org")):
            with self.subTest(args=args):
                rc, out, t = self.policy(CAPTURE, "--from", "app@example.com", *args,
                                         routes=True)
                self.assertEqual(rc, 0, out)
                self.assertEqual(self.stage(t, "data"), ("continue", [self.handler("data")]))
                self.assertNotIn("route", t["summary"])

    def test_own_tag_and_no_allow_list_captures_everything_tagged(self):
        rc, out, t = self.policy('capture_route = "capture"\ntag = "staging"\n',
                                 "--tag", "staging", "--from", "app@example.com",
                                 "--to", "tester@qa.example.com", routes=True)
        self.assertEqual(rc, 0, out)
        self.assertEqual(t["summary"]["route"], "capture")
        # The default tag no longer counts.
        rc, out, t = self.policy('capture_route = "capture"\ntag = "staging"\n',
                                 "--tag", "non-production", "--from", "app@example.com",
                                 "--to", "tester@qa.example.com", routes=True)
        self.assertNotIn("route", t["summary"])

    def test_unknown_capture_route_refuses_to_load_with_the_configuration(self):
        rc, out, _ = self.policy('capture_route = "nowhere"\n', "--from", "a@example.com",
                                 "--to", "b@example.org", routes=True)
        self.assertEqual(rc, 3, out)
        self.assertIn("config.capture_route: no [route.nowhere] (routes: bulk, capture, "
                      "default)", out)

    def test_bad_configs_name_the_key(self):
        self.assert_refuses_config('allow_domains = ["qa.example.com"]\n',
                                   'set capture_route = "NAME"')
        self.assert_refuses_config('capture_route = ""\n', 'set capture_route = "NAME"')
        self.assert_refuses_config('capture_route = "capture"\nallow_domains = []\n',
                                   "config.allow_domains must be a non-empty list of domains")
        self.assert_refuses_config('capture_route = "capture"\nallow_domains = ["a", 2]\n',
                                   "config.allow_domains[2] is not a domain")
        self.assert_refuses_config('capture_route = "capture"\ntag = ""\n',
                                   "config.tag must be a tag name")


# --- sender_rewrite.lua in a real postern -------------------------------------------------------

def rewrite_filter(script="sender_rewrite.lua", name="sender_rewrite"):
    return ("[[filter]]\ntype = \"lua\"\n"
            f"name = {json.dumps(name)}\n"
            f"script = {json.dumps(os.path.join(SCRIPTS, script))}\n"
            "[filter.config.listeners.apps]\n"
            'from = "Example Apps <apps@example.com>"\n'
            'reply_to = "original"\n')


def smtp_send(c, mail_from, rcpt, body):
    """MAIL, RCPT, DATA on an open connection; the replies as (code, text)."""
    out = [c.cmd(f"MAIL FROM:<{mail_from}>")[:2], c.cmd(f"RCPT TO:<{rcpt}>")[:2]]
    code, text, _ = c.cmd("DATA")
    if code != 354:
        return out + [(code, text)]
    c.send(body.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    return out + [c.reply()[:2]]


def header_fields(eml):
    """The header fields of a stored message, unfolded, as (name, value) in order."""
    head = eml[:eml.index(b"\r\n\r\n")].decode()
    fields = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t"):
            fields[-1] = (fields[-1][0], fields[-1][1] + " " + line.strip())
        else:
            name, _, value = line.partition(":")
            fields.append((name, value.strip()))
    return fields


class SenderRewriteServerTest(unittest.TestCase):

    def test_envelope_in_json_and_header_in_eml(self):
        tmp = tempfile.mkdtemp(prefix="postern-scripts-")
        self.addCleanup(shutil.rmtree, tmp, True)
        outbox = os.path.join(tmp, "apps-outbox")
        extra = rewrite_filter() + (
            "[[filter]]\ntype = \"lua\"\nname = \"require_headers\"\n"
            f"script = {json.dumps(os.path.join(SCRIPTS, 'require_headers.lua'))}\n"
            "[[route_rule]]\nlistener = \"apps\"\nroute = \"apps\"\n")
        p = Postern(listener={"name": "apps"}, extra_toml=extra,
                    routes={"default": {"outbox": os.path.join(tmp, "outbox")},
                            "apps": {"outbox": outbox}})
        self.addCleanup(p.cleanup)
        p.start()
        c = p.connect()
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO build-42.internal")[0], 250)
        body = (b"From: Nightly <root@build-42.internal>\r\nTo: someone@example.net\r\n"
                b"Subject: nightly report\r\n\r\nAll good.\r\n")
        replies = smtp_send(c, "root@build-42.internal", "someone@example.net", body)
        self.assertEqual([code for code, _ in replies], [250, 250, 250], replies)
        qid = QUEUED.match(replies[2][1]).group(1)
        # A bounce from the application: its null sender stays null.
        replies = smtp_send(c, "", "someone@example.net", body)
        bounce_id = QUEUED.match(replies[2][1]).group(1)
        c.cmd("QUIT")

        stored = outbox_messages(outbox)
        self.assertEqual(sorted(stored), sorted([qid, bounce_id]))
        eml, env = stored[qid]
        self.assertEqual(env["mail_from"], "apps@example.com")
        self.assertEqual([r["address"] for r in env["recipients"]], ["someone@example.net"])
        fields = header_fields(eml)
        names = [n for n, _ in fields]
        self.assertEqual(names[0], "Received")
        self.assertEqual(names.count("From"), 1)
        self.assertIn(("From", "Example Apps <apps@example.com>"), fields)
        self.assertIn(("X-Original-From", "Nightly <root@build-42.internal>"), fields)
        self.assertIn(("Reply-To", "Nightly <root@build-42.internal>"), fields)
        # require_headers.lua, the next filter: a Message-ID: of this server's hostname.
        [mid] = [v for n, v in fields if n == "Message-ID"]
        self.assertRegex(mid, r"^<[0-9a-f]{64}@postern\.test>$")
        self.assertTrue(eml.endswith(b"\r\n\r\nAll good.\r\n"))

        bounce_eml, bounce_env = stored[bounce_id]
        self.assertEqual(bounce_env["mail_from"], "")
        self.assertIn(("From", "Example Apps <apps@example.com>"), header_fields(bounce_eml))

        # The log: one sender_rewritten, for the first message only.
        wait_for(lambda: log_events(p.log(), "sender_rewritten"))
        rewritten = log_events(p.log(), "sender_rewritten")
        self.assertEqual([(e["queue_id"], e["from"], e["to"]) for e in rewritten],
                         [(qid, "root@build-42.internal", "apps@example.com")])
        self.assertEqual(rewritten[0]["level"], "info")
        self.assertEqual(log_events(p.log(), "filter_failed"), [])
        self.assertEqual(log_events(p.log(), "filter_sender_invalid"), [])


class SenderRewritePassthroughTest(RelayTestCase):

    def test_only_the_envelope_changes_and_a_warning_says_so(self):
        up = self.upstream(tls="starttls")
        p = self.postern({"hosts": [up.address]}, listener={"name": "apps"},
                         extra_toml=rewrite_filter())
        body = (b"From: root@build-42.internal\r\nTo: someone@example.net\r\n"
                b"Subject: relayed\r\n\r\nlive\r\n")
        result = self.send(p, mail_from="root@build-42.internal", rcpts=["someone@example.net"],
                           body=body)
        self.assertEqual(result["data"][0], 250, result)
        [m] = up.wait_messages(1)
        self.assertEqual(m["mail_from"], "apps@example.com")
        self.assertEqual(m["rcpt_tos"], ["someone@example.net"])
        self.assertIn(b"\r\nFrom: root@build-42.internal\r\n", b"\r\n" + m["data"])
        self.assertNotIn(b"X-Original-From", m["data"])
        [warning] = self.wait_event(p, "lua", where=lambda e: e["level"] == "warn")
        self.assertEqual(warning["filter"], "sender_rewrite")
        self.assertEqual(warning["message"],
                         'listener apps: header From: not rewritten: the message is relayed live '
                         '(delivery = "passthrough"); envelope sender <apps@example.com>')
        [rewritten] = self.wait_event(p, "sender_rewritten")
        self.assertEqual((rewritten["from"], rewritten["to"]),
                         ("root@build-42.internal", "apps@example.com"))
        self.assertEqual(self.events(p, "filter_failed"), [])


class CapturePassthroughTest(RelayTestCase):

    def test_a_live_message_cannot_be_captured_and_is_refused(self):
        up = self.upstream(tls="starttls")
        extra = ("[[filter]]\ntype = \"lua\"\nname = \"capture\"\n"
                 f"script = {json.dumps(os.path.join(SCRIPTS, 'non_production_capture.lua'))}\n"
                 "[filter.config]\ncapture_route = \"capture\"\n")
        p = self.postern({"hosts": [up.address]}, extra_toml=extra,
                         listener={"tags": ["non-production"]},
                         routes={"default": {"upstream": "smart"},
                                 "capture": {"outbox": os.path.join(self.tmp, "capture")}})
        result = self.send(p, rcpts=["customer@example.org"])
        self.assertEqual(result["rcpt"], [(250, "2.1.5 Ok")])
        self.assertEqual(result["data"],
                         (451, "4.3.5 Mail from this system cannot be captured; try again later"))
        [line] = self.wait_event(p, "lua", where=lambda e: e["level"] == "error")
        self.assertEqual(line["message"], "non-production message not captured, refused: the "
                         'listener relays live (delivery = "passthrough")')
        self.assertEqual(up.messages(), [])
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "capture")) and
                         os.listdir(os.path.join(self.tmp, "capture")))


if __name__ == "__main__":
    unittest.main()
