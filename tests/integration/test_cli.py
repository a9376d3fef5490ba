"""The command line: version, help, unknown commands, check-config on good and broken files,
and serve failing at start-up (port in use, outbox that cannot be created)."""
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import unittest

from harness import BINARY, SOURCE, Postern

ISSUE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<rest>.*)$")


def run(*args, cwd=None, timeout=20):
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, stdin=subprocess.DEVNULL)


def project_version():
    with open(os.path.join(SOURCE, "CMakeLists.txt")) as f:
        m = re.search(r"project\(postern VERSION (\d+\.\d+\.\d+)", f.read())
    return m.group(1) if m else None


class CliTest(unittest.TestCase):

    def tmpdir(self):
        d = tempfile.mkdtemp(prefix="postern-cli-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def write(self, directory, name, text):
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    # --- version and help -----------------------------------------------------------------

    def test_version(self):
        out = run("version")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"^postern \d+\.\d+\.\d+\n$")
        version = project_version()
        if version:
            self.assertEqual(out.stdout, f"postern {version}\n")

    def test_passwd_prints_a_yescrypt_hash(self):
        """`postern passwd` reads one line from a non-terminal stdin and prints its yescrypt
        hash with a fresh salt; the hash verifies with the system's crypt(3)."""
        hashes = []
        for _ in range(2):
            out = subprocess.run([BINARY, "passwd"], input="s3cret pass:word\n",
                                 capture_output=True, text=True, timeout=20)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertRegex(out.stdout, r"^\$y\$[./0-9A-Za-z$]+\n$")
            hashes.append(out.stdout.strip())
        self.assertNotEqual(hashes[0], hashes[1], "the same salt twice")
        import ctypes
        import ctypes.util
        libcrypt = ctypes.CDLL(ctypes.util.find_library("crypt"))
        libcrypt.crypt.restype = ctypes.c_char_p
        for h in hashes:
            self.assertEqual(libcrypt.crypt(b"s3cret pass:word", h.encode()), h.encode())
            self.assertNotEqual(libcrypt.crypt(b"wrong", h.encode()), h.encode())
        empty = subprocess.run([BINARY, "passwd"], input="", capture_output=True, text=True,
                               timeout=20)
        self.assertEqual(empty.returncode, 1)
        self.assertIn("no password given", empty.stderr)
        extra = run("passwd", "alice")
        self.assertEqual(extra.returncode, 2)

    def test_help(self):
        for args in (["--help"], ["-h"], ["help"]):
            with self.subTest(args=args):
                out = run(*args)
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertTrue(out.stdout.startswith("usage: postern <command>"), out.stdout)
                for command in ("serve", "check-config", "version"):
                    self.assertIn(command, out.stdout)

    def test_command_help(self):
        for command in ("serve", "check-config", "version"):
            with self.subTest(command=command):
                out = run(command, "--help")
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertTrue(out.stdout.startswith(f"usage: postern {command}"), out.stdout)
        self.assertIn("--config FILE", run("serve", "--help").stdout)
        self.assertIn("--config FILE", run("check-config", "--help").stdout)

    def test_no_command(self):
        out = run()
        self.assertEqual(out.returncode, 2)
        self.assertIn("usage:", out.stdout + out.stderr)

    def test_unknown_command(self):
        out = run("frobnicate")
        self.assertEqual(out.returncode, 2)
        self.assertIn("unknown command 'frobnicate'", out.stderr)
        self.assertEqual(out.stdout, "")

    def test_unexpected_argument(self):
        out = run("check-config", "--bogus")
        self.assertEqual(out.returncode, 2)
        self.assertIn("unexpected argument '--bogus'", out.stderr)

    # --- check-config ---------------------------------------------------------------------

    def test_check_config_repo_file(self):
        out = run("check-config", "--config", "config/postern.toml", cwd=SOURCE)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        lines = out.stdout.splitlines()
        self.assertEqual(len(lines), 1, out.stdout)
        self.assertTrue(lines[0].startswith("config/postern.toml: ok ("), lines[0])
        self.assertTrue(lines[0].endswith(")"), lines[0])

    def test_check_config_default_path(self):
        # Without --config, config/postern.toml of the working directory is read.
        out = run("check-config", cwd=SOURCE)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertTrue(out.stdout.startswith("config/postern.toml: ok ("), out.stdout)

    def test_check_config_summary_counts(self):
        d = self.tmpdir()
        path = self.write(d, "two.toml", "\n".join([
            "[server]", 'hostname = "postern.test"', "threads = 3",
            "[[listener]]", 'name = "a"', 'address = "127.0.0.1:2525"',
            "[[listener]]", 'name = "b"', 'address = "127.0.0.1:2526"', 'route = "other"',
            "[route.default]", f"outbox = {json.dumps(os.path.join(d, 'o1'))}",
            "[route.other]", f"outbox = {json.dumps(os.path.join(d, 'o2'))}", ""]))
        out = run("check-config", "--config", path)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, f"{path}: ok (2 listeners, 2 routes, 3 threads)\n")
        # check-config creates nothing.
        self.assertEqual(sorted(os.listdir(d)), ["two.toml"])

    def issues(self, out, path):
        """{line: (col, rest)} of the FILE:LINE:COL: lines of stderr about path."""
        found = {}
        for line in out.stderr.splitlines():
            m = ISSUE.match(line)
            if m and m.group("file") == path:
                found[int(m.group("line"))] = (int(m.group("col")), m.group("rest"))
        return found

    def test_check_config_broken_file(self):
        d = self.tmpdir()
        lines = [
            "[server]",                                          # 1
            'hostname = "postern.test"',                         # 2
            "",                                                  # 3
            "[[listener]]",                                      # 4
            'name = "a"',                                        # 5
            'address = "127.0.0.1:2525"',                        # 6
            "max_recipient = 100",                               # 7
            'trusted_networks = ["127.0.0.0/8", "10.0.0.1/8"]',  # 8
            'route = "nowhere"',                                 # 9
            "",                                                  # 10
            "[route.default]",                                   # 11
            f"outbox = {json.dumps(os.path.join(d, 'outbox'))}",  # 12
        ]
        path = self.write(d, "bad.toml", "\n".join(lines) + "\n")
        out = run("check-config", "--config", path)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertEqual(out.stdout, "")
        found = self.issues(out, path)
        self.assertEqual(sorted(found), [7, 8, 9], out.stderr)

        col, rest = found[7]
        self.assertEqual(col, 1)
        self.assertEqual(rest, 'listener[0].max_recipient: unknown key '
                               '(did you mean "max_recipients"?)')
        col, rest = found[8]
        self.assertEqual(col, lines[7].index('"10.0.0.1/8"') + 1)
        self.assertTrue(rest.startswith('listener[0].trusted_networks: "10.0.0.1/8" '), rest)
        col, rest = found[9]
        self.assertEqual(col, lines[8].index('"nowhere"') + 1)
        self.assertTrue(rest.startswith('listener[0].route: unknown route "nowhere"'), rest)
        self.assertTrue(out.stderr.endswith(f"{path}: configuration has errors\n"), out.stderr)
        self.assertFalse(os.path.exists(os.path.join(d, "outbox")))

    def test_check_config_toml_syntax_error(self):
        d = self.tmpdir()
        text = "\n".join([
            "[server]",
            'hostname = "postern.test"',
            "",
            "[[listener]]",
            'address = "127.0.0.1:2525"',
            'name = "unterminated',
            "[route.default]",
            'outbox = "x"',
        ]) + "\n"
        path = self.write(d, "syntax.toml", text)
        out = run("check-config", "--config", path)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        found = self.issues(out, path)
        self.assertEqual(list(found), [6], out.stderr)
        col, rest = found[6]
        self.assertGreaterEqual(col, 1)
        self.assertTrue(rest, out.stderr)

    def test_check_config_unknown_section_and_typos(self):
        d = self.tmpdir()
        text = "\n".join([
            "[server]",
            'hostnme = "postern.test"',
            "[log]",
            'level = "verbose"',
            "[[listener]]",
            'address = "127.0.0.1:2525"',
            'max_message_size = "1KiB"',
            "[route.default]",
            'outbox = "x"',
            "[quota]",
            'max_messages = 100',
        ]) + "\n"
        path = self.write(d, "typos.toml", text)
        out = run("check-config", "--config", path)
        self.assertEqual(out.returncode, 1)
        found = self.issues(out, path)
        self.assertEqual(sorted(found), [2, 4, 7, 10], out.stderr)
        self.assertIn('(did you mean "hostname"?)', found[2][1])
        self.assertIn('"verbose" is not one of debug | info | warn | error', found[4][1])
        self.assertTrue(found[7][1].startswith("listener[0].max_message_size: must be at least"),
                        found[7][1])
        self.assertIn("not supported by this version", found[10][1])

    def test_check_config_missing_file(self):
        d = self.tmpdir()
        path = os.path.join(d, "absent.toml")
        out = run("check-config", "--config", path)
        self.assertEqual(out.returncode, 1)
        self.assertIn("cannot open", out.stderr)

    # --- serve start-up failures ----------------------------------------------------------

    def serve_until_exit(self, p):
        try:
            out = subprocess.run([BINARY, "serve", "--config", p.config_path],
                                 capture_output=True, text=True, timeout=15,
                                 stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            self.fail("postern serve kept running instead of failing at start-up")
        return out

    def test_serve_port_in_use(self):
        p = Postern()
        self.addCleanup(p.cleanup)
        blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", p.port))
        blocker.listen(1)
        out = self.serve_until_exit(p)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        log = out.stdout + out.stderr
        self.assertRegex(log, r"(?m)^.*event=startup_failed.*cannot listen.*$")
        self.assertIn(f"127.0.0.1:{p.port}", log)
        self.assertNotIn("event=started", log)

    def test_serve_port_in_use_by_another_postern(self):
        # postern's acceptors use SO_REUSEPORT; a second postern (same user) could join them
        # and take half the connections unless its plain probe bind notices the port in use.
        first = Postern().start()
        self.addCleanup(first.cleanup)
        second = Postern(listener={"address": f"127.0.0.1:{first.port}"})
        self.addCleanup(second.cleanup)
        self.assertNotEqual(second.outbox, first.outbox)
        out = self.serve_until_exit(second)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        log = out.stdout + out.stderr
        self.assertRegex(log, r"(?m)^.*event=startup_failed.*cannot listen.*$")
        self.assertIn(f"127.0.0.1:{first.port}", log)
        self.assertNotIn("event=listening", log)
        # The first one goes on serving the port.
        self.assertIsNone(first.proc.poll())
        c = first.connect(timeout=5)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_serve_outbox_cannot_be_created(self):
        p = Postern()
        self.addCleanup(p.cleanup)
        plain_file = os.path.join(p.dir, "not-a-directory")
        with open(plain_file, "w") as f:
            f.write("x")
        blocked = os.path.join(plain_file, "outbox")
        with open(p.config_path) as f:
            config = f.read()
        self.assertIn(json.dumps(p.outbox), config)
        with open(p.config_path, "w") as f:
            f.write(config.replace(json.dumps(p.outbox), json.dumps(blocked)))
        out = self.serve_until_exit(p)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        log = out.stdout + out.stderr
        self.assertIn("event=startup_failed", log)
        self.assertIn("not-a-directory", log)
        self.assertNotIn("event=listening", log)
        # Nothing listens on the port.
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", p.port), timeout=2).close()

    def test_serve_outbox_in_use_by_another_postern(self):
        first = Postern().start()
        self.addCleanup(first.cleanup)
        second = Postern()
        self.addCleanup(second.cleanup)
        with open(second.config_path) as f:
            config = f.read()
        with open(second.config_path, "w") as f:
            f.write(config.replace(json.dumps(second.outbox), json.dumps(first.outbox)))
        out = self.serve_until_exit(second)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertRegex(out.stdout + out.stderr,
                         r"event=startup_failed .*in use by another writer")
        self.assertIsNone(first.proc.poll())  # the first one goes on

    def test_serve_with_broken_config(self):
        d = self.tmpdir()
        path = self.write(d, "bad.toml", "[[listener]]\naddress = \"127.0.0.1:0\"\n")
        out = run("serve", "--config", path)
        self.assertEqual(out.returncode, 1)
        self.assertIn(f"{path}: configuration has errors", out.stderr)


if __name__ == "__main__":
    unittest.main()
