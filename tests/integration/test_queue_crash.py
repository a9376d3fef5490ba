"""The durable queue under crashes (issue 4): a client sends 2,000 messages with distinct
Message-IDs over several concurrent threads, each with its own sessions, and records the
Message-IDs answered 250, while the test SIGKILLs postern three times at random moments spread
over the sending and starts it again on the same configuration and spool. At the end the spool
drains into an aiosmtpd upstream, and every Message-ID that was answered 250 has arrived there
at least once, whole. Duplicates are allowed (a message stored but not yet answered when postern
died is stored again when the client sends it again) and printed.

The client threads retry connection errors and 4xx replies (the same message, same Message-ID,
in a new session) and record a message only once it got 250. The kill points are chosen by
progress (after a random share of the messages was answered), not by time, so that they fall
while the clients send whatever the machine's speed; POSTERN_CRASH_SEED=N repeats a run's
choices. Retry settings are short (retry_min 1s, retry_max 2s, host_down_time 1s) so that the
whole test takes seconds.
"""
import os
import random
import re
import signal
import threading
import time
import unittest

from harness import QUEUED, Postern, SmtpConn, strip_received, wait_for
from upstreams import RelayTestCase, log_events

MESSAGES = 2000
CLIENTS = 8
KILLS = 3
# Kill points as shares of MESSAGES answered 250: one random point in each window.
KILL_WINDOWS = [(0.08, 0.28), (0.38, 0.58), (0.68, 0.88)]
SEND_DEADLINE = 75       # seconds for the sending (kills and restarts included)
DRAIN_DEADLINE = 30      # seconds for the spool to empty afterwards
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

MESSAGE_ID = re.compile(rb"(?im)^Message-ID:[ \t]*<([^>\r\n]+)>[ \t]*\r?$")


class TempFail(Exception):
    """A 4xx reply: the message is sent again in a new session."""


class QueueCrashTest(RelayTestCase):

    def setUp(self):
        super().setUp()
        self.spool = os.path.join(self.tmp, "spool")
        self.queue_dir = os.path.join(self.spool, "queue")
        self.corrupt_dir = os.path.join(self.spool, "corrupt")
        seed = os.environ.get("POSTERN_CRASH_SEED")
        self.seed = int(seed) if seed else random.randrange(1 << 32)
        self.random = random.Random(self.seed)
        self.token = "%08x" % self.random.getrandbits(32)

    # -- the messages

    def message_id(self, i):
        return f"{i}.{self.token}@crash.test"

    def body(self, i):
        lines = "".join(f"message {i} line {n} {'x' * 40}\r\n" for n in range(20))
        return (f"From: app@example.org\r\nTo: r{i}@example.net\r\n"
                f"Subject: crash test {i}\r\nMessage-ID: <{self.message_id(i)}>\r\n\r\n"
                + lines).encode()

    def queue_names(self):
        if not os.path.isdir(self.queue_dir):
            return []
        return sorted(n for n in os.listdir(self.queue_dir) if not n.startswith("."))

    # -- the client

    @staticmethod
    def expect(c, line, want):
        code, text, _ = c.cmd(line) if line is not None else c.reply()
        if code == want:
            return text
        if 400 <= code < 500:
            raise TempFail(f"{line or 'greeting'}: {code} {text}")
        raise AssertionError(f"{line or 'greeting'}: {code} {text}")

    def client(self, port, indices, acked, errors, lock, stop):
        """Sends the messages `indices`, 1 to 5 per session, each until it gets 250."""
        rnd = random.Random(self.seed * 1000 + indices[0])
        todo = list(indices)
        c = None
        left_in_session = 0
        tries = 0
        while todo and not stop.is_set():
            i = todo[0]
            try:
                if c is None:
                    c = SmtpConn(("127.0.0.1", port), timeout=10)
                    self.expect(c, None, 220)
                    self.expect(c, "EHLO client.test", 250)
                    left_in_session = rnd.randint(1, 5)
                self.expect(c, "MAIL FROM:<app@example.org>", 250)
                self.expect(c, f"RCPT TO:<r{i}@example.net>", 250)
                self.expect(c, "DATA", 354)
                c.send(self.body(i).replace(b"\r\n.", b"\r\n..") + b".\r\n")
                text = self.expect(c, None, 250)
                if not QUEUED.match(text):
                    raise AssertionError(f"end of data: 250 {text}")
                with lock:
                    acked[self.message_id(i)] = QUEUED.match(text).group(1)
                todo.pop(0)
                tries = 0
                left_in_session -= 1
                if left_in_session <= 0 or not todo:
                    try:
                        c.cmd("QUIT")
                    except (OSError, ValueError):
                        pass
                    c.close()
                    c = None
            except (OSError, ValueError, TempFail) as e:
                # Connection refused or broken (postern killed or restarting), or a 4xx: the
                # same message again in a new session.
                if c is not None:
                    c.close()
                    c = None
                tries += 1
                if tries > 200:
                    with lock:
                        errors.append(f"message {i}: gave up after {tries} tries: {e!r}")
                    return
                time.sleep(rnd.uniform(0.02, 0.1))
            except AssertionError as e:
                with lock:
                    errors.append(f"message {i}: {e}")
                if c is not None:
                    c.close()
                return
        if c is not None:
            c.close()

    # -- the test

    def test_sigkill_three_times_while_sending(self):
        started = time.monotonic()
        up = self.upstream(tls="none")
        config = self.postern_config(
            {"hosts": [up.address], "tls": "none", "allow_plaintext": True,
             "host_down_time": "1s", "max_connections": 4},
            routes={"default": {"upstream": "smart", "retry_min": "1s", "retry_max": "2s"}},
            listener={"delivery": "queue"})
        p = Postern(server={"spool_dir": self.spool, "threads": 2}, **config)
        self.addCleanup(p.cleanup)
        p.start()

        acked = {}        # Message-ID -> queue id of the 250
        errors = []
        lock = threading.Lock()
        stop = threading.Event()
        shares = [list(range(n, MESSAGES, CLIENTS)) for n in range(CLIENTS)]
        threads = [threading.Thread(target=self.client,
                                    args=(p.port, s, acked, errors, lock, stop), daemon=True)
                   for s in shares]
        kill_points = sorted(int(MESSAGES * self.random.uniform(lo, hi))
                             for lo, hi in KILL_WINDOWS)
        old_logs = []
        kills = []        # (answered 250 when killed, seconds since start)

        def answered():
            with lock:
                return len(acked)

        try:
            for t in threads:
                t.start()
            deadline = time.monotonic() + SEND_DEADLINE
            for point in kill_points:
                while (answered() < point and any(t.is_alive() for t in threads)
                       and time.monotonic() < deadline):
                    time.sleep(0.002)
                if answered() < point:
                    break  # the clients stopped or ran out of time: reported below
                p.stop(signal.SIGKILL)
                kills.append((answered(), time.monotonic() - started))
                old_logs.append(p.log())
                time.sleep(self.random.uniform(0.0, 0.3))
                p.start()  # same configuration, port and spool; truncates the log file
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
        finally:
            stop.set()
            for t in threads:
                t.join(15)
        send_s = time.monotonic() - started

        self.assertEqual(errors, [], f"client errors (seed {self.seed})")
        self.assertFalse(any(t.is_alive() for t in threads), "a client thread hangs")
        self.assertEqual(len(kills), KILLS,
                         f"only {len(kills)} kills at {kill_points}: {answered()} of "
                         f"{MESSAGES} answered within {SEND_DEADLINE}s (seed {self.seed})")
        # The clients retried until every message got its 250.
        self.assertEqual(len(acked), MESSAGES, f"seed {self.seed}")

        # Every restart recovered the spool it found.
        recovered = []
        for log in old_logs[1:] + [p.log()]:
            events = log_events(log, "spool_recovered")
            self.assertTrue(events, "no event=spool_recovered after a restart:\n" + log[:3000])
            recovered.append(int(events[0].get("messages", "0")))
        for log in old_logs:
            for marker in SANITIZER_MARKERS:
                self.assertNotIn(marker, log, "sanitizer report in a killed postern's log")

        # The spool drains.
        drained = wait_for(lambda: not self.queue_names(), DRAIN_DEADLINE, step=0.1)
        self.assertTrue(drained, f"spool not empty after {DRAIN_DEADLINE}s: "
                                 f"{len(self.queue_names())} files left (seed {self.seed})\n"
                                 + p.log()[-3000:])
        elapsed = time.monotonic() - started
        corrupt = sorted(os.listdir(self.corrupt_dir)) if os.path.isdir(self.corrupt_dir) else []
        self.assertEqual(corrupt, [], "a SIGKILL left records that start-up quarantined")

        # Every message answered 250 arrived at least once, whole; nothing else arrived.
        arrivals = {}     # Message-ID -> count
        expected = {self.message_id(i): self.body(i) for i in range(MESSAGES)}
        for m in up.messages():
            found = MESSAGE_ID.search(m["data"].split(b"\r\n\r\n", 1)[0] + b"\r\n")
            self.assertTrue(found, m["data"][:500])
            mid = found.group(1).decode()
            self.assertIn(mid, expected, "a message the client never sent arrived")
            self.assertEqual(strip_received(m["data"]), expected[mid], f"{mid} arrived torn")
            self.assertEqual(m["rcpt_tos"], [f"r{mid.split('.', 1)[0]}@example.net"])
            arrivals[mid] = arrivals.get(mid, 0) + 1
        missing = sorted(set(acked) - set(arrivals), key=lambda s: int(s.split(".")[0]))
        duplicates = sum(n - 1 for n in arrivals.values())
        print(f"\ncrash test (seed {self.seed}): {MESSAGES} messages, {len(acked)} answered "
              f"250, {len(kills)} kills after "
              f"{', '.join(f'{n} ({t:.1f}s)' for n, t in kills)} answers, recovered "
              f"{recovered} messages at the restarts, {sum(arrivals.values())} arrivals, "
              f"{duplicates} duplicates, {len(missing)} missing; sending {send_s:.1f}s, "
              f"drained after {elapsed:.1f}s", flush=True)
        self.assertEqual(missing, [], f"acknowledged but never delivered (seed {self.seed}); "
                                      f"queue ids: {[acked[m] for m in missing[:20]]}")


if __name__ == "__main__":
    unittest.main()
