"""A crash (SIGKILL) under load never leaves a message that was answered 250 missing or torn,
never shows an .eml without its .json, and a restart cleans up what the crash left."""
import os
import signal
import threading
import time
import unittest

from harness import QUEUED, Postern, strip_received


class CrashTest(unittest.TestCase):

    def test_sigkill_under_load(self):
        p = Postern(listener={"max_connections_per_ip": 200})
        self.addCleanup(p.cleanup)
        p.start()
        acknowledged = {}  # queue id -> body
        lock = threading.Lock()
        stop = threading.Event()

        def client(n):
            i = 0
            while not stop.is_set():
                i += 1
                body = (f"Subject: crash {n}-{i}\r\nMessage-ID: <{n}.{i}@crash>\r\n\r\n"
                        + f"line {n}-{i}\r\n" * 50).encode()
                c = None
                try:
                    c = p.connect(timeout=5)
                    c.reply()
                    c.cmd("EHLO crash.test")
                    c.cmd("MAIL FROM:<c@example.org>")
                    c.cmd("RCPT TO:<r@example.net>")
                    c.cmd("DATA")
                    c.send(body + b".\r\n")
                    code, text, _ = c.reply()
                except OSError:
                    return  # the server is gone
                finally:
                    if c:
                        c.close()
                m = QUEUED.match(text)
                if code == 250 and m:
                    with lock:
                        acknowledged[m.group(1)] = body

        threads = [threading.Thread(target=client, args=(n,)) for n in range(10)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        p.proc.send_signal(signal.SIGKILL)
        p.proc.wait()
        stop.set()
        for t in threads:
            t.join()
        self.assertGreater(len(acknowledged), 20, "too little load before the kill")

        names = set(p.outbox_names())
        # Every acknowledged message is there, whole, with its envelope.
        missing = [q for q in acknowledged if not {q + ".eml", q + ".json"} <= names]
        self.assertEqual(missing, [])
        for qid, body in acknowledged.items():
            with open(os.path.join(p.outbox, qid + ".eml"), "rb") as f:
                self.assertEqual(strip_received(f.read()), body, qid)
        # No visible message lacks its envelope (the envelope is renamed first).
        visible = [n for n in names if n.endswith(".eml") and not n.startswith(".tmp-")]
        without_envelope = [n for n in visible if n[:-4] + ".json" not in names]
        self.assertEqual(without_envelope, [])

        # A restart removes the crash's leftovers and keeps every message.
        p.log_file.close()
        p.start()
        after = set(p.outbox_names())
        self.assertFalse([n for n in after if n.startswith(".tmp-")], after)
        self.assertTrue({q + ".eml" for q in acknowledged} <= after)
        orphans = [n for n in after if n.endswith(".json") and n[:-5] + ".eml" not in after]
        self.assertEqual(orphans, [])
        if any(n.startswith(".tmp-") for n in names):
            self.assertRegex(p.log(), r"event=outbox_cleanup .*removed=\d+")


if __name__ == "__main__":
    unittest.main()
