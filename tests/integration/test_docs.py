"""The operator's documentation keeps up with the code:
- every event postern logs has a row in the log-event tables of docs/troubleshooting.md, the
  page that lists every error message;
- every fixed 4xx/5xx reply (proxy/smtp/replies.hpp) is on that page too;
- every configuration key postern accepts is named in docs/configuration.md.

Reads the sources only (no server is started): each call of the form log(LEVEL, "event", ...)
names an event, and the page's rows begin with the event's name in backquotes; the keys are
the lists the configuration loader checks each table against (anything else is refused as an
unknown key)."""
import glob
import os
import re
import unittest

SOURCE = os.environ.get("POSTERN_SOURCE",
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
# log(LogLevel::kInfo, "event", ...), observe::log(config::LogLevel::kError, "event", ...) and
# log(cond ? LogLevel::kWarn : LogLevel::kInfo, "event", ...), over line breaks too.
LOG_CALL = re.compile(r'\blog\(([^;"]*?),\s*"([a-z_]+)"')
EVENT_ROW = re.compile(r'^\| `([a-z_]+)` \|', re.M)
# w.check_keys(table, "path", {"key", "key", ...}) in the configuration loader.
KEY_LIST = re.compile(r'check_keys\([^{;]*\{([^}]*)\}', re.S)
# inline const Reply kName{550, "5.7.1", "text" "more text"};
REPLY = re.compile(r'inline const Reply (\w+)\{(\d+),\s*"([^"]*)",\s*((?:"[^"]*"\s*)+)\}')


def logged_events():
    """Event name -> the first source file that logs it."""
    events = {}
    for tree in ("proxy", "filters"):
        for path in sorted(glob.glob(os.path.join(SOURCE, tree, "**", "*.[ch]pp"),
                                     recursive=True)):
            with open(path, encoding="utf-8") as f:
                for match in LOG_CALL.finditer(f.read()):
                    events.setdefault(match.group(2), os.path.relpath(path, SOURCE))
    return events


class DocsTest(unittest.TestCase):
    def test_every_logged_event_has_a_row(self):
        events = logged_events()
        # The scan itself must find the events, or this test would pass on nothing.
        for known in ("connect", "startup_failed", "upstream_connected", "filter_failed"):
            self.assertIn(known, events)
        with open(os.path.join(SOURCE, "docs", "troubleshooting.md"), encoding="utf-8") as f:
            documented = set(EVENT_ROW.findall(f.read()))
        missing = sorted(f"{event} (logged in {path})" for event, path in events.items()
                         if event not in documented)
        self.assertEqual(missing, [], "log events with no row in docs/troubleshooting.md")

    def test_every_configuration_key_is_named(self):
        with open(os.path.join(SOURCE, "proxy", "config", "config_loader.cpp"),
                  encoding="utf-8") as f:
            loader = f.read()
        keys = set()
        for key_list in KEY_LIST.findall(loader):
            keys.update(re.findall(r'"([a-z0-9_]+)"', key_list))
        for known in ("hostname", "max_connections", "password_file", "on_error"):
            self.assertIn(known, keys)
        with open(os.path.join(SOURCE, "docs", "configuration.md"), encoding="utf-8") as f:
            page = f.read()
        missing = sorted(key for key in keys if f"`{key}`" not in page)
        self.assertEqual(missing, [], "configuration keys not named in docs/configuration.md")

    def test_every_fixed_error_reply_is_on_the_page(self):
        with open(os.path.join(SOURCE, "proxy", "smtp", "replies.hpp"), encoding="utf-8") as f:
            header = f.read()
        replies = REPLY.findall(header)
        # Every declaration parsed: a reply the pattern missed would go unchecked.
        self.assertEqual(len(replies), header.count("inline const Reply "))
        with open(os.path.join(SOURCE, "docs", "troubleshooting.md"), encoding="utf-8") as f:
            page = f.read()
        missing = []
        for name, code, _enhanced, text_parts in replies:
            text = "".join(re.findall(r'"([^"]*)"', text_parts))
            if int(code) >= 400 and text not in page:
                missing.append(f"{name}: {code} {text}")
        self.assertEqual(missing, [], "error replies missing from docs/troubleshooting.md")


if __name__ == "__main__":
    unittest.main()
