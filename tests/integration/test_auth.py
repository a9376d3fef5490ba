"""SMTP AUTH (issue 5, the AUTH part): RFC 4954 with PLAIN (RFC 4616) and LOGIN, offered only
inside TLS (or with allow_plaintext_auth), a users file of crypt(3) hashes (yescrypt,
sha512-crypt, bcrypt from mkpasswd), the replies to every malformed or refused exchange, the
lockout of a client address after repeated failures, [user.NAME] allowed_senders and route,
relay = "authenticated" | "trusted_or_authenticated", the MAIL AUTH= parameter, ESMTPA/ESMTPSA
in the Received header, SIGHUP re-reading the users file, and the open-relay matrix on each
relay mode. Clients: raw sockets, swaks, Python's smtplib and Node.js nodemailer (from npm).

Every test of a running postern ends by checking that the server is still up and that no
password (nor any base64 credential blob sent by the test) is in its log."""
import base64
import json
import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
import unittest

from harness import BINARY, QUEUED, SHARED, Postern, wait_for
from upstreams import client_context, log_events, make_pki

PKI = None
TMP = None          # module temporary directory (PKI, users files, npm install)

# name -> (mkpasswd method, password); HASHES is filled by setUpModule.
PASSWORDS = {
    "alice": ("yescrypt", "Alice-pw-7yq!Qm"),
    "bob": ("sha512crypt", "Bob-pw-Q3x#Lr"),
    "carol": ("bcrypt", "Carol-pw-Zk9%Tw"),
    "dave": ("yescrypt", "Dave-pw-R5m&Hp"),
    "erin": ("yescrypt", "Erin-pw-W2c*Jd"),
    "frank": ("yescrypt", "Frank-pw-N8v^Gs"),  # only in the reload test's file, added later
}
HASHES = {}
WRONG = "Wrong-pw-Xx4@Fz"

# Strings that must never appear in postern's log: the passwords, and every base64 blob that
# the tests send with a password inside.
SECRETS = {pw for _, pw in PASSWORDS.values()} | {WRONG}

# [user.NAME] tables shared by the test classes; carol (and frank) have none: any sender.
USER_TOML = """
[user.alice]
allowed_senders = ["@example.com"]
[user.bob]
allowed_senders = ["@.example.com"]
[user.dave]
allowed_senders = ["dave@example.net", "<>"]
[user.erin]
route = "special"
"""

OK_AUTH = (235, "2.7.0 Authentication successful")
FAILED = (535, "5.7.8 Authentication credentials invalid")
CANCELLED = (501, "5.0.0 Authentication cancelled")
BAD_RESPONSE = (501, "5.5.2 Cannot decode the AUTH response")
SYNTAX = (501, "5.5.4 Syntax: AUTH mechanism [initial-response]")
UNKNOWN_MECH = (504, "5.5.4 Unrecognized authentication type (PLAIN, LOGIN)")
ALREADY = (503, "5.5.1 Error: already authenticated")
NEEDS_TLS = (538, "5.7.11 Encryption required for requested authentication mechanism")
LOCKED = (421, "4.7.0 Too many failed authentications from your address; try later")
TOO_LONG = (500, "5.5.6 AUTH response too long")
AUTH_REQUIRED = (530, "5.7.0 Authentication required")
RELAY_DENIED = (554, "5.7.1 Relay access denied")
NOT_IMPLEMENTED = (502, "5.5.1 Command not implemented")
USERNAME_PROMPT = (334, "VXNlcm5hbWU6")  # "Username:"
PASSWORD_PROMPT = (334, "UGFzc3dvcmQ6")  # "Password:"

SWAKS_QUEUED = re.compile(r"<[-~]  250 2\.0\.0 Ok: queued as (\S+)")
RECEIVED_WITH = re.compile(rb"\tby postern\.test \(postern\) with (?P<protocol>[A-Z0-9]+) id ")

TSV = os.path.join(SHARED, "testdata", "smtp", "open-relay-address-forms.tsv")


def mkpasswd(method, password):
    out = subprocess.run(["mkpasswd", "-m", method, "--stdin"], input=password + "\n",
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"mkpasswd -m {method} failed: {out.stderr}")
    return out.stdout.strip()


def setUpModule():
    global PKI, TMP
    TMP = tempfile.mkdtemp(prefix="postern-auth-")
    PKI = make_pki(os.path.join(TMP, "pki"))
    for name, (method, password) in PASSWORDS.items():
        HASHES[name] = mkpasswd(method, password)


def tearDownModule():
    shutil.rmtree(TMP, ignore_errors=True)


def users_text(names=("alice", "bob", "carol", "dave", "erin")):
    """A users file with comments and blank lines between the entries."""
    lines = ["# postern test users (name:hash)", ""]
    for name in names:
        lines += [f"# {name}: {PASSWORDS[name][0]}", f"{name}:{HASHES[name]}", ""]
    return "\n".join(lines)


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def plain_blob(user, password, authzid=""):
    """The base64 PLAIN response authzid NUL user NUL password (remembered as a secret)."""
    blob = b64(f"{authzid}\0{user}\0{password}")
    if password:
        SECRETS.add(blob)
    return blob


def secret_b64(password):
    blob = b64(password)
    SECRETS.add(blob)
    return blob


def toml_str(value):
    return json.dumps(value)


def auth_toml(users_file, **keys):
    """An [auth] table (failure_delay "0s" unless given) and the [user.NAME] tables."""
    keys.setdefault("failure_delay", "0s")
    lines = ["[auth]", f"users_file = {toml_str(users_file)}"]
    lines += [f"{k} = {toml_str(v) if isinstance(v, str) else v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n" + USER_TOML


def load_forms():
    forms = []
    with open(TSV, encoding="ascii") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, arg, _ = line.rstrip("\n").split("\t", 2)
            sender = "<>" if "(MAIL FROM:<>)" in arg else "<probe@example.org>"
            arg = arg.split(" (")[0].replace("RELAY", "postern.test").replace("[IP]",
                                                                              "[127.0.0.1]")
            forms.append((name, sender, arg))
    return forms


class AuthCase(unittest.TestCase):
    """One postern per class: TLS "starttls" (certificate of the test PKI) or "none", the
    listener keys of LISTENER over relay = "authenticated" and trusted_networks = [], [auth]
    with AUTH (keys) over failure_delay "0s", the users file of USERS, and two outbox routes:
    default (postern.outbox) and special (cls.special)."""
    TLS = "starttls"
    LISTENER = {}
    AUTH = {}
    USERS = ("alice", "bob", "carol", "dave", "erin")
    WITH_AUTH = True

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="postern-auth-class-", dir=TMP)
        cls.special = os.path.join(cls.dir, "special")
        cls.users_path = os.path.join(cls.dir, "users")
        with open(cls.users_path, "w") as f:
            f.write(users_text(cls.USERS))
        listener = {"relay": "authenticated", "trusted_networks": [], "max_errors": 1000,
                    "max_connections_per_ip": 200}
        if cls.TLS != "none":
            listener.update({"tls": cls.TLS, "certificate": PKI.localhost.cert,
                             "private_key": PKI.localhost.key, "tls_handshake_timeout": "5s"})
        listener.update(cls.LISTENER)
        extra = f"[route.special]\noutbox = {toml_str(cls.special)}\n"
        if cls.WITH_AUTH:
            extra += auth_toml(cls.users_path, **cls.AUTH)
        cls.postern = Postern(listener=listener, extra_toml=extra).start()

    @classmethod
    def tearDownClass(cls):
        cls.postern.cleanup()

    def tearDown(self):
        self.assertIsNone(self.postern.proc.poll(), "postern exited:\n" + self.postern.log())
        c = self.postern.connect(source="127.0.0.99")
        try:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("QUIT")[0], 221)
        finally:
            c.close()
        log = self.postern.log()
        for secret in SECRETS:
            self.assertNotIn(secret, log, "a password or credential blob is in postern's log")

    # -- clients

    def plain(self, ehlo="client.test", source=None):
        """A plaintext client, greeted (and EHLO sent when ehlo)."""
        c = self.postern.connect(source=source)
        self.addCleanup(c.close)
        code, text, _ = c.reply()
        self.assertEqual(code, 220, text)
        if ehlo:
            code, text, _ = c.cmd("EHLO " + ehlo)
            self.assertEqual(code, 250, text)
        return c

    def starttls(self, c):
        code, text, _ = c.cmd("STARTTLS")
        self.assertEqual((code, text), (220, "2.0.0 Ready to start TLS"))
        self.assertEqual(c.buf, b"")
        c.sock = client_context(PKI.ca_file).wrap_socket(c.sock, server_hostname="localhost")
        return c

    def client(self, ehlo="client.test", source=None):
        """A client ready for AUTH: TLS up (when the class has TLS) and EHLO sent."""
        if self.TLS == "none":
            return self.plain(ehlo, source)
        c = self.starttls(self.plain(source=source))
        if ehlo:
            code, text, _ = c.cmd("EHLO " + ehlo)
            self.assertEqual(code, 250, text)
        return c

    def reply2(self, c, line):
        code, text, _ = c.cmd(line)
        return code, text

    def login(self, c, user, password=None):
        """AUTH PLAIN with an initial response; returns (code, text)."""
        if password is None:
            password = PASSWORDS[user][1]
        return self.reply2(c, "AUTH PLAIN " + plain_blob(user, password))

    def authed(self, user, source=None):
        c = self.client(source=source)
        self.assertEqual(self.login(c, user), OK_AUTH)
        return c

    def alive(self, c):
        """The session goes on: NOOP answered."""
        self.assertEqual(self.reply2(c, "NOOP"), (250, "2.0.0 Ok"))

    def ehlo_keywords(self, c, ehlo="client.test"):
        code, _, lines = c.cmd("EHLO " + ehlo)
        self.assertEqual(code, 250)
        return [line[4:] for line in lines[1:]]

    def send(self, c, mail_from, rcpt="someone@example.net", subject="auth test", params=""):
        """One transaction; returns the queue id."""
        code, text = self.reply2(c, f"MAIL FROM:<{mail_from}>" + (" " + params if params else ""))
        self.assertEqual(code, 250, text)
        code, text = self.reply2(c, f"RCPT TO:<{rcpt}>")
        self.assertEqual(code, 250, text)
        self.assertEqual(self.reply2(c, "DATA")[0], 354)
        code, text = self.reply2(c, f"Subject: {subject}\r\n\r\nhello\r\n.")
        self.assertEqual(code, 250, text)
        m = QUEUED.match(text)
        self.assertIsNotNone(m, text)
        return m.group(1)

    def received_protocol(self, eml):
        m = RECEIVED_WITH.search(eml.split(b"\r\n\r\n", 1)[0])
        self.assertIsNotNone(m, eml[:300])
        return m.group("protocol").decode()

    def stored(self, qid, directory=None):
        """(eml, envelope) of qid in the default outbox or in `directory`."""
        directory = directory or self.postern.outbox
        with open(os.path.join(directory, qid + ".eml"), "rb") as f:
            eml = f.read()
        with open(os.path.join(directory, qid + ".json")) as f:
            env = json.load(f)
        return eml, env

    # -- the log

    def events(self, event, **fields):
        return [e for e in log_events(self.postern.log(), event)
                if all(e.get(k) == v for k, v in fields.items())]

    def wait_events(self, event, count=1, **fields):
        wait_for(lambda: len(self.events(event, **fields)) >= count, 5)
        found = self.events(event, **fields)
        self.assertGreaterEqual(len(found), count,
                                f"want {count} event={event} {fields}:\n"
                                + self.postern.log()[-4000:])
        return found


# --- check-config ----------------------------------------------------------------------------

class AuthConfigTest(unittest.TestCase):
    """check-config on [auth], [user.NAME] and the listener's relay/allow_plaintext_auth."""

    def setUp(self):
        self.d = tempfile.mkdtemp(prefix="postern-auth-cfg-", dir=TMP)
        self.addCleanup(shutil.rmtree, self.d, True)

    def write(self, name, text):
        path = os.path.join(self.d, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def config(self, listener_lines=(), tail="", users=None):
        """A config file: one listener (+ listener_lines), route default, then tail. users:
        the users file's text (written as "users")."""
        if users is not None:
            self.write("users", users)
        lines = ["[server]", 'hostname = "postern.test"',
                 "[[listener]]", 'name = "a"', 'address = "127.0.0.1:2525"',
                 *listener_lines,
                 "[route.default]", f"outbox = {toml_str(os.path.join(self.d, 'outbox'))}",
                 tail]
        return self.write("postern.toml", "\n".join(lines) + "\n")

    def check(self, path):
        return subprocess.run([BINARY, "check-config", "--config", path], capture_output=True,
                              text=True, timeout=20, stdin=subprocess.DEVNULL)

    def assert_error(self, path, *needles):
        out = self.check(path)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertIn("configuration has errors", out.stderr)
        for needle in needles:
            self.assertIn(needle, out.stderr)
        return out

    def users_auth(self):
        return f"[auth]\nusers_file = {toml_str(os.path.join(self.d, 'users'))}\n"

    def test_relay_by_authentication_needs_auth(self):
        for mode in ("authenticated", "trusted_or_authenticated"):
            with self.subTest(relay=mode):
                path = self.config([f'relay = "{mode}"'])
                out = self.assert_error(
                    path, "listener[0].relay: relay by authentication needs [auth] with users_file")
                self.assertIn(f"{path}:6:", out.stderr)
        out = self.check(self.config(['relay = "trusted"']))
        self.assertEqual(out.returncode, 0, out.stderr)

    def test_good_auth_config(self):
        path = self.config(['relay = "trusted_or_authenticated"', "allow_plaintext_auth = true"],
                           self.users_auth() + 'max_failures = 3\nfailure_window = "1m"\n'
                           'lockout = "2m"\nfailure_delay = "2s"\n'
                           '[user.alice]\nallowed_senders = ["a@example.com", "@example.org", '
                           '"@.example.net", "<>"]\nroute = "default"\nquota_class = "bulk"\n',
                           users=users_text(("alice", "bob", "carol")))
        out = self.check(path)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("ok (1 listener", out.stdout)
        # allow_plaintext_auth is a warning, not an error.
        self.assertIn("warning: listener[0].allow_plaintext_auth: passwords may cross the "
                      "network in clear", out.stderr)

    def test_users_file_errors_name_the_line(self):
        good = f"alice:{HASHES['alice']}"
        cases = [
            # (file text, the words after "line N: ")
            (f"# users\n\n{good}\nbroken line here\n", "line 4: expected name:hash"),
            ("alice:plaintext-password\n",
             'line 1: the hash of "alice" is not a strong crypt(3) hash'),
            # md5-crypt and NT hashes are too weak to accept.
            ("alice:$1$saltsalt$qjXMvbEw8oaL.CzflDugX/\n",
             'line 1: the hash of "alice" is not a strong crypt(3) hash'),
            ("alice:$3$$8846f7eaee8fb117ad06bdd830b7586c\n",
             'line 1: the hash of "alice" is not a strong crypt(3) hash'),
            (f"{good}\n{good}\n", 'line 2: "alice" is listed twice'),
            (f"# a\n:{HASHES['bob']}\n", "line 2: the user name is empty or has blanks"),
            (f"al ice:{HASHES['bob']}\n", "line 1: the user name is empty or has blanks"),
        ]
        for text, words in cases:
            with self.subTest(words=words):
                path = self.config(['relay = "authenticated"'], self.users_auth(), users=text)
                self.assert_error(path, "auth.users_file: ", words)

    def test_missing_users_file_and_key(self):
        path = self.config(['relay = "authenticated"'], self.users_auth())  # no file written
        self.assert_error(path, "cannot read the users file")
        path = self.config([], "[auth]\nmax_failures = 3\n")
        self.assert_error(path, "auth.users_file: missing")

    def test_user_tables(self):
        # [user.NAME] without [auth].
        path = self.config([], '[user.alice]\nallowed_senders = ["@example.com"]\n')
        self.assert_error(path, "[user.NAME] tables need [auth] with users_file")
        users = users_text(("alice",))
        for entry, words in (('"@bad..domain"', '"@bad..domain" is not "@domain"'),
                             ('"not an address"', "is not an address")):
            with self.subTest(entry=entry):
                path = self.config([], self.users_auth() +
                                   f"[user.alice]\nallowed_senders = [{entry}]\n", users=users)
                self.assert_error(path, "user.alice.allowed_senders", words)
        path = self.config([], self.users_auth() + '[user.alice]\nroute = "nowhere"\n',
                           users=users)
        self.assert_error(path, 'user.alice.route: unknown route "nowhere"')
        path = self.config([], self.users_auth() + '[user.alice]\nbogus = 1\n', users=users)
        out = self.check(path)
        self.assertNotEqual(out.returncode, 0, out.stderr)
        self.assertIn("bogus", out.stderr)
        # A table for a user not in the file: a warning.
        path = self.config([], self.users_auth() + '[user.ghost]\nallowed_senders = ["<>"]\n',
                           users=users)
        out = self.check(path)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn('"ghost" is not in the users file', out.stderr)

    def test_serve_refuses_a_broken_users_file(self):
        path = self.config(['relay = "authenticated"'], self.users_auth(),
                           users="alice:plaintext\n")
        out = subprocess.run([BINARY, "serve", "--config", path], capture_output=True,
                             text=True, timeout=20, stdin=subprocess.DEVNULL)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("line 1:", out.stdout + out.stderr)


# --- STARTTLS listener, relay = "authenticated" -----------------------------------------------

class StarttlsAuthTest(AuthCase):
    TLS = "starttls"
    AUTH = {"max_failures": 1000}

    def test_auth_advertised_only_inside_tls_and_before_login(self):
        c = self.plain(ehlo=None)
        keywords = self.ehlo_keywords(c)
        self.assertIn("STARTTLS", keywords)
        self.assertFalse([k for k in keywords if k.startswith("AUTH")], keywords)
        self.starttls(c)
        keywords = self.ehlo_keywords(c)
        self.assertIn("AUTH PLAIN LOGIN", keywords)
        self.assertNotIn("STARTTLS", keywords)
        self.assertEqual(self.login(c, "alice"), OK_AUTH)
        keywords = self.ehlo_keywords(c)
        self.assertFalse([k for k in keywords if k.startswith("AUTH")], keywords)
        # EHLO again keeps the login.
        self.assertEqual(self.reply2(c, "MAIL FROM:<a@example.com>"), (250, "2.1.0 Ok"))

    def test_before_tls_auth_538_and_mail_530(self):
        c = self.plain()
        self.assertEqual(self.login(c, "alice"), NEEDS_TLS)
        self.assertEqual(self.reply2(c, "AUTH LOGIN"), NEEDS_TLS)
        self.assertEqual(self.reply2(c, "AUTH PLAIN"), NEEDS_TLS)
        self.assertEqual(self.reply2(c, "MAIL FROM:<a@example.com>"), AUTH_REQUIRED)
        self.alive(c)

    def test_auth_before_ehlo_is_refused(self):
        c = self.client(ehlo=None)  # TLS up, no EHLO inside it
        code, text = self.login(c, "alice")
        self.assertEqual(code, 503, text)
        self.assertEqual(self.reply2(c, "HELO client.test")[0], 250)
        code, text = self.login(c, "alice")
        self.assertEqual(code, 503, text)  # HELO is not EHLO: no AUTH extension
        self.assertEqual(self.reply2(c, "EHLO client.test")[0], 250)
        self.assertEqual(self.login(c, "alice"), OK_AUTH)

    def test_mail_without_auth_inside_tls_is_530(self):
        c = self.client()
        self.assertEqual(self.reply2(c, "MAIL FROM:<a@example.com>"), AUTH_REQUIRED)
        self.assertEqual(self.reply2(c, "RCPT TO:<x@example.net>")[0], 503)
        self.alive(c)

    def test_plain_initial_response_delivers_with_esmtpsa(self):
        c = self.client()
        conn_port = str(c.sock.getsockname()[1])
        self.assertEqual(self.login(c, "alice"), OK_AUTH)
        ev = self.wait_events("auth", user="alice", mechanism="PLAIN")[-1]
        self.assertEqual(ev["client"], "127.0.0.1")
        qid = self.send(c, "a@example.com", subject="esmtpsa")
        eml, env = self.stored(qid)
        self.assertEqual(self.received_protocol(eml), "ESMTPSA")
        self.assertIn(b"\t(using TLSv1.", eml.split(b"\r\n\r\n")[0])
        self.assertEqual(env["protocol"], "ESMTPSA")
        self.assertEqual(env["mail_from"], "a@example.com")
        self.assertTrue(self.events("connect", port=conn_port))

    def test_plain_without_initial_response(self):
        c = self.client()
        self.assertEqual(self.reply2(c, "AUTH PLAIN"), (334, ""))
        self.assertEqual(self.reply2(c, plain_blob("bob", PASSWORDS["bob"][1])), OK_AUTH)
        self.wait_events("auth", user="bob", mechanism="PLAIN")

    def test_login_with_prompts_and_with_initial_response(self):
        c = self.client()
        self.assertEqual(self.reply2(c, "AUTH LOGIN"), USERNAME_PROMPT)
        self.assertEqual(self.reply2(c, b64("carol")), PASSWORD_PROMPT)
        self.assertEqual(self.reply2(c, secret_b64(PASSWORDS["carol"][1])), OK_AUTH)
        self.wait_events("auth", user="carol", mechanism="LOGIN")
        c = self.client()
        self.assertEqual(self.reply2(c, "AUTH LOGIN " + b64("dave")), PASSWORD_PROMPT)
        self.assertEqual(self.reply2(c, secret_b64(PASSWORDS["dave"][1])), OK_AUTH)
        self.wait_events("auth", user="dave", mechanism="LOGIN")
        # Mechanism names are case-insensitive.
        c = self.client()
        self.assertEqual(self.reply2(c, "auth login"), USERNAME_PROMPT)
        self.assertEqual(self.reply2(c, b64("erin")), PASSWORD_PROMPT)
        self.assertEqual(self.reply2(c, secret_b64(PASSWORDS["erin"][1])), OK_AUTH)

    def test_every_hash_format(self):
        self.assertTrue(HASHES["alice"].startswith("$y$"), HASHES["alice"])
        self.assertTrue(HASHES["bob"].startswith("$6$"), HASHES["bob"])
        self.assertTrue(HASHES["carol"].startswith("$2b$"), HASHES["carol"])
        for user in ("alice", "bob", "carol"):
            with self.subTest(user=user):
                c = self.client()
                self.assertEqual(self.login(c, user, WRONG), FAILED)
                self.assertEqual(self.login(c, user), OK_AUTH)

    def test_failures_535_with_reasons_and_the_session_goes_on(self):
        c = self.client()
        port = str(c.sock.getsockname()[1])
        conn = self.wait_events("connect", port=port)[-1]["conn"]
        self.assertEqual(self.login(c, "alice", WRONG), FAILED)
        self.alive(c)
        self.assertEqual(self.login(c, "nobody-here", WRONG), FAILED)
        self.alive(c)
        # The right password for alice, but asking to act as bob.
        self.assertEqual(self.reply2(c, "AUTH PLAIN " + plain_blob(
            "alice", PASSWORDS["alice"][1], authzid="bob")), FAILED)
        self.alive(c)
        # LOGIN with a wrong password.
        self.assertEqual(self.reply2(c, "AUTH LOGIN " + b64("alice")), PASSWORD_PROMPT)
        self.assertEqual(self.reply2(c, secret_b64(WRONG)), FAILED)
        self.alive(c)
        # An authzid equal to the user is not a proxy request.
        self.assertEqual(self.reply2(c, "AUTH PLAIN " + plain_blob(
            "alice", PASSWORDS["alice"][1], authzid="alice")), OK_AUTH)
        failed = self.wait_events("auth_failed", 4, conn=conn)
        self.assertEqual([(e["user"], e["mechanism"], e["reason"], e["locked_out"])
                          for e in failed],
                         [("alice", "PLAIN", "wrong password", "no"),
                          ("nobody-here", "PLAIN", "unknown user", "no"),
                          ("alice", "PLAIN", "authzid differs from the user", "no"),
                          ("alice", "LOGIN", "wrong password", "no")])
        for e in failed:
            self.assertEqual(e["client"], "127.0.0.1")
        self.wait_events("auth", conn=conn, user="alice")

    def test_cancel_with_star(self):
        c = self.client()
        self.assertEqual(self.reply2(c, "AUTH PLAIN"), (334, ""))
        self.assertEqual(self.reply2(c, "*"), CANCELLED)
        self.alive(c)
        self.assertEqual(self.reply2(c, "AUTH LOGIN"), USERNAME_PROMPT)
        self.assertEqual(self.reply2(c, "*"), CANCELLED)
        self.alive(c)
        self.assertEqual(self.reply2(c, "AUTH LOGIN"), USERNAME_PROMPT)
        self.assertEqual(self.reply2(c, b64("alice")), PASSWORD_PROMPT)
        self.assertEqual(self.reply2(c, "*"), CANCELLED)
        self.alive(c)
        self.assertEqual(self.reply2(c, "AUTH LOGIN " + b64("alice")), PASSWORD_PROMPT)
        self.assertEqual(self.reply2(c, "*"), CANCELLED)
        self.assertEqual(self.login(c, "alice"), OK_AUTH)

    def test_command_syntax(self):
        c = self.client()
        self.assertEqual(self.reply2(c, "AUTH"), SYNTAX)
        self.assertEqual(self.reply2(c, "AUTH PLAIN abc def"), SYNTAX)
        self.assertEqual(self.reply2(c, "AUTH CRAM-MD5"), UNKNOWN_MECH)
        self.assertEqual(self.reply2(c, "AUTH XOAUTH2 " + b64("user=x")), UNKNOWN_MECH)
        self.assertEqual(self.reply2(c, "AUTH PLAINX"), UNKNOWN_MECH)
        self.alive(c)
        self.assertEqual(self.login(c, "alice"), OK_AUTH)

    def test_malformed_plain_responses(self):
        c = self.client()
        long_user = "u" * 256
        cases = [
            # (description, the base64 response or a raw one)
            ("not base64", "!!!!"),
            ("base64 with a bad character", "AGFsaWNl$GFzcw=="),
            ("padding only", "===="),
            ("a lone '=' (empty response)", "="),
            ("no NUL", b64("alicepassword")),
            ("one NUL", b64("alice\0password")),
            ("empty user", b64("\0\0password")),
            ("empty password", b64("\0alice\0")),
            ("CR inside the user", b64("\0user\r\0pw")),
            ("LF inside the user", b64("\0us\ner\0pw")),
            ("CR LF inside the password", b64("\0alice\0pw\r\nMAIL FROM:<x@y.z>")),
            ("NUL inside the password", b64("\0alice\0pw\0more")),
            ("CR inside the authzid", b64("al\rice\0alice\0pw")),
            ("user of 256 octets", b64("\0" + long_user + "\0pw")),
            ("password of 256 octets", b64("\0alice\0" + "p" * 256)),
            ("authzid of 256 octets", b64("a" * 256 + "\0alice\0pw")),
        ]
        for what, response in cases:
            with self.subTest(what=what, initial_response=True):
                self.assertEqual(self.reply2(c, "AUTH PLAIN " + response), BAD_RESPONSE)
                self.alive(c)
            with self.subTest(what=what, initial_response=False):
                self.assertEqual(self.reply2(c, "AUTH PLAIN"), (334, ""))
                self.assertEqual(self.reply2(c, response), BAD_RESPONSE)
                self.alive(c)
        # 255 octets is within RFC 4616's limit: decoded, then an unknown user.
        self.assertEqual(self.reply2(c, "AUTH PLAIN"), (334, ""))
        self.assertEqual(self.reply2(c, b64("\0" + "u" * 255 + "\0pw")), FAILED)
        self.alive(c)
        # Malformed responses are not failed logins.
        self.assertEqual(len(self.events("auth_failed", user="u" * 64)), 1)
        self.assertEqual(self.login(c, "alice"), OK_AUTH)

    def test_malformed_login_responses(self):
        c = self.client()
        for what, user_response in (("bad base64", "!!!!"), ("empty", ""), ("'='", "="),
                                    ("CR inside", b64("ali\rce")), ("LF inside", b64("al\nice")),
                                    ("NUL inside", b64("al\0ice")), ("256 octets", b64("u" * 256))):
            with self.subTest(what=what, step="user name prompt"):
                self.assertEqual(self.reply2(c, "AUTH LOGIN"), USERNAME_PROMPT)
                self.assertEqual(self.reply2(c, user_response), BAD_RESPONSE)
                self.alive(c)
            if user_response:
                with self.subTest(what=what, step="initial response"):
                    self.assertEqual(self.reply2(c, "AUTH LOGIN " + user_response), BAD_RESPONSE)
                    self.alive(c)
            with self.subTest(what=what, step="password prompt"):
                self.assertEqual(self.reply2(c, "AUTH LOGIN " + b64("alice")), PASSWORD_PROMPT)
                self.assertEqual(self.reply2(c, user_response), BAD_RESPONSE)
                self.alive(c)
        self.assertEqual(self.reply2(c, "AUTH LOGIN " + b64("alice")), PASSWORD_PROMPT)
        self.assertEqual(self.reply2(c, secret_b64(PASSWORDS["alice"][1])), OK_AUTH)

    def test_overlong_and_badly_framed_responses(self):
        c = self.client()
        # RFC 4954 4: up to 12288 octets; 13000 octets of base64 -> 500 5.5.6.
        self.assertEqual(self.reply2(c, "AUTH PLAIN"), (334, ""))
        self.assertEqual(self.reply2(c, "QUFB" * 3250), TOO_LONG)
        self.alive(c)
        self.assertEqual(self.reply2(c, "AUTH LOGIN"), USERNAME_PROMPT)
        self.assertEqual(self.reply2(c, "A" * 13000), TOO_LONG)
        self.alive(c)
        self.assertEqual(self.reply2(c, "AUTH LOGIN " + b64("alice")), PASSWORD_PROMPT)
        self.assertEqual(self.reply2(c, "A" * 13000), TOO_LONG)
        self.alive(c)
        # Exactly 12288 octets is within the limit: decoded, then too long a value.
        self.assertEqual(self.reply2(c, "AUTH PLAIN"), (334, ""))
        self.assertEqual(self.reply2(c, "QUFB" * 3072), BAD_RESPONSE)
        self.alive(c)
        # The over-long response sent in pieces.
        self.assertEqual(self.reply2(c, "AUTH PLAIN"), (334, ""))
        for _ in range(13):
            c.send("QUFB" * 250)
            time.sleep(0.01)
        self.assertEqual(self.reply2(c, ""), TOO_LONG)
        self.alive(c)
        # A bare CR or bare LF inside the response line.
        self.assertEqual(self.reply2(c, "AUTH PLAIN"), (334, ""))
        c.send("AGFsaWNl\rAHB3\r\n")
        self.assertEqual(c.reply()[:2], BAD_RESPONSE)
        self.alive(c)
        self.assertEqual(self.reply2(c, "AUTH PLAIN"), (334, ""))
        c.send("AGFsaWNlAHB3\n")
        self.assertEqual(c.reply()[:2], BAD_RESPONSE)
        self.alive(c)
        # An AUTH command line over 512 octets (initial response included), and one over the
        # longest line any command may have: 500 5.5.6, and the credentials are not logged
        # (tearDown looks for the blobs).
        for pad in (450, 900):
            blob = plain_blob("alice", PASSWORDS["alice"][1] + "x" * pad)
            self.assertGreater(len("AUTH PLAIN " + blob) + 2, 512 if pad == 450 else 1012)
            code, text = self.reply2(c, "AUTH PLAIN " + blob)
            self.assertEqual((code, text[:5]), (500, "5.5.6"), pad)
            self.alive(c)
        # AUTH command lines with a bare LF, a bare CR or a NUL: refused, not logged either.
        for line in ("AUTH PLAIN {}\n", "auth plain {}\r\r\n", "AUTH PLAIN {}\0\r\n"):
            c.send(line.format(plain_blob("alice", PASSWORDS["alice"][1])))
            code, text, _ = c.reply()
            self.assertEqual(code, 500, repr(line))
            self.alive(c)
        self.assertEqual(self.login(c, "alice"), OK_AUTH)

    def test_client_gone_at_a_prompt(self):
        for prompt_line, expected in (("AUTH PLAIN", (334, "")), ("AUTH LOGIN", USERNAME_PROMPT)):
            c = self.client()
            self.assertEqual(self.reply2(c, prompt_line), expected)
            c.close()
        c = self.client()
        self.assertEqual(self.reply2(c, "AUTH LOGIN " + b64("alice")), PASSWORD_PROMPT)
        c.send("QUFB")  # half a response, then gone
        c.close()
        c = self.client()
        self.assertEqual(self.login(c, "alice"), OK_AUTH)

    def test_auth_twice_is_503(self):
        c = self.authed("alice")
        self.assertEqual(self.login(c, "alice"), ALREADY)
        self.assertEqual(self.login(c, "bob"), ALREADY)
        self.assertEqual(self.reply2(c, "AUTH LOGIN"), ALREADY)
        self.alive(c)
        self.assertEqual(self.reply2(c, "MAIL FROM:<a@example.com>"), (250, "2.1.0 Ok"))
        self.assertEqual(self.login(c, "alice"), ALREADY)  # inside a transaction too

    def sender_matrix(self, user, cases):
        c = self.authed(user)
        for sender, allowed in cases:
            with self.subTest(user=user, sender=sender):
                code, text = self.reply2(c, f"MAIL FROM:<{sender}>")
                if allowed is True:
                    self.assertEqual((code, text), (250, "2.1.0 Ok"))
                    self.assertEqual(self.reply2(c, "RSET")[0], 250)
                elif allowed is False:
                    self.assertEqual((code, text), (
                        553, f"5.7.1 Sender address <{sender}> is not owned by user {user}"))
                else:  # refused one way or another (syntax or ownership), never 250
                    self.assertIn(code, (501, 553), text)
                self.alive(c)

    def test_sender_restriction_domain(self):
        self.sender_matrix("alice", [
            ("a@example.com", True), ("A@EXAMPLE.COM", True), ("alice@Example.Com", True),
            ("a@example.org", False), ("a@sub.example.com", False), ("", False),
            ("a@notexample.com", False), ("a@example.com.evil.test", False),
            ('"a@example.com"@evil.test', False),
            ("@example.com:a@evil.test", None), ("a@example.com@evil.test", None),
            ("a%example.com@evil.test", False),
        ])

    def test_sender_restriction_subdomains(self):
        self.sender_matrix("bob", [
            ("a@sub.example.com", True), ("a@deep.sub.example.com", True),
            ("a@SUB.EXAMPLE.COM", True), ("a@example.com", False),
            ("a@notexample.com", False), ("a@sub.example.com.evil.test", False),
            ("a@sub-example.com", False), ("", False),
        ])

    def test_sender_restriction_address_and_null(self):
        self.sender_matrix("dave", [
            ("dave@example.net", True), ("", True), ("other@example.net", False),
            ("dave@sub.example.net", False), ("dave@example.org", False),
        ])

    def test_user_without_table_may_use_any_sender(self):
        self.sender_matrix("carol", [
            ("carol@anywhere.test", True), ("", True), ("a@example.com", True),
            ("x@sub.example.org", True),
        ])

    def test_restricted_sender_whole_message(self):
        c = self.authed("alice")
        code, text = self.reply2(c, "MAIL FROM:<boss@example.org>")
        self.assertEqual(code, 553, text)
        self.assertIn("<boss@example.org>", text)
        self.assertEqual(self.reply2(c, "RCPT TO:<x@example.net>")[0], 503)
        self.assertEqual(self.reply2(c, "DATA")[0], 503)
        qid = self.send(c, "Alice@Example.COM", subject="owned sender")
        self.assertEqual(self.stored(qid)[1]["mail_from"], "Alice@Example.COM")
        self.assertFalse([e for e in log_events(self.postern.log(), "queued")
                          if e.get("from") == "boss@example.org"])

    def test_mail_auth_parameter(self):
        c = self.authed("alice")
        for param, ok in (("AUTH=<>", True), ("AUTH=alice", True),
                          ("AUTH=a+40example.com", True), ("AUTH=", False), ("AUTH", False),
                          ("AUTH=bad+zz", False), ("AUTH=a+4", False), ("AUTH=\u00e9", False)):
            with self.subTest(param=param):
                code, text = self.reply2(c, f"MAIL FROM:<a@example.com> {param}")
                if ok:
                    self.assertEqual((code, text), (250, "2.1.0 Ok"))
                    self.assertEqual(self.reply2(c, "RSET")[0], 250)
                else:
                    self.assertEqual((code, text[:5]), (501, "5.5.4"), text)
                self.alive(c)
        qid = self.send(c, "a@example.com", params="AUTH=<>", subject="auth param")
        self.assertIn(qid, {n[:-4] for n in os.listdir(self.postern.outbox)})

    def test_user_route(self):
        c = self.authed("erin")
        qid = self.send(c, "erin@anywhere.test", subject="erin's route")
        self.assertTrue(os.path.exists(os.path.join(self.special, qid + ".eml")))
        self.assertFalse(os.path.exists(os.path.join(self.postern.outbox, qid + ".eml")))
        eml, env = self.stored(qid, self.special)
        self.assertEqual(env["route"], "special")
        self.assertEqual(self.received_protocol(eml), "ESMTPSA")
        c = self.authed("carol")
        qid = self.send(c, "carol@anywhere.test", subject="carol's route")
        self.assertEqual(self.stored(qid)[1]["route"], "default")
        self.assertFalse(os.path.exists(os.path.join(self.special, qid + ".eml")))

    # -- clients

    def swaks(self, *args):
        return subprocess.run(["swaks", "--server", f"127.0.0.1:{self.postern.port}",
                               "--ehlo", "swaks.test", "--to", "someone@example.net", *args],
                              capture_output=True, text=True, timeout=30)

    def test_swaks(self):
        for mech, user, sender in (("PLAIN", "alice", "a@example.com"),
                                   ("LOGIN", "bob", "b@sub.example.com")):
            with self.subTest(mechanism=mech):
                out = self.swaks("--from", sender, "--tls", "--auth", mech, "--auth-user", user,
                                 "--auth-password", PASSWORDS[user][1],
                                 "--header", f"Subject: swaks {mech}")
                self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
                self.assertIn("235 2.7.0 Authentication successful", out.stdout)
                m = SWAKS_QUEUED.search(out.stdout)
                self.assertIsNotNone(m, out.stdout)
                eml, env = self.stored(m.group(1))
                self.assertEqual(self.received_protocol(eml), "ESMTPSA")
                self.assertEqual(env["mail_from"], sender)
                self.assertIn(f"Subject: swaks {mech}".encode(), eml)
                self.wait_events("auth", user=user, mechanism=mech)
        with self.subTest(case="wrong password"):
            out = self.swaks("--from", "a@example.com", "--tls", "--auth", "PLAIN",
                             "--auth-user", "alice", "--auth-password", WRONG)
            self.assertNotEqual(out.returncode, 0, out.stdout)
            self.assertIn("535 5.7.8 Authentication credentials invalid", out.stdout)
            self.assertNotIn("queued as", out.stdout)
        with self.subTest(case="owned sender refused"):
            out = self.swaks("--from", "a@example.org", "--tls", "--auth", "LOGIN",
                             "--auth-user", "alice", "--auth-password", PASSWORDS["alice"][1])
            self.assertNotEqual(out.returncode, 0, out.stdout)
            self.assertIn("553 5.7.1 Sender address <a@example.org> is not owned by user alice",
                          out.stdout)
        with self.subTest(case="no TLS: AUTH not offered"):
            out = self.swaks("--from", "a@example.com", "--auth", "PLAIN",
                             "--auth-user", "alice", "--auth-password", PASSWORDS["alice"][1])
            self.assertNotEqual(out.returncode, 0, out.stdout)
            self.assertNotIn("235 ", out.stdout)
            self.assertNotIn("queued as", out.stdout)

    def smtplib_client(self):
        s = smtplib.SMTP("127.0.0.1", self.postern.port, local_hostname="smtplib.test",
                         timeout=10)
        self.addCleanup(s.close)
        return s

    def test_smtplib(self):
        s = self.smtplib_client()
        s.ehlo()
        self.assertFalse(s.has_extn("auth"))
        with self.assertRaises(smtplib.SMTPNotSupportedError):
            s.login("alice", PASSWORDS["alice"][1])
        s.starttls(context=client_context(PKI.ca_file))
        s.ehlo()
        self.assertEqual(s.esmtp_features.get("auth", "").split(), ["PLAIN", "LOGIN"])
        with self.assertRaises(smtplib.SMTPAuthenticationError) as caught:
            s.login("alice", WRONG)
        self.assertEqual(caught.exception.smtp_code, 535)
        code, text = s.login("alice", PASSWORDS["alice"][1])
        self.assertEqual((code, text), (235, b"2.7.0 Authentication successful"))
        refused = s.sendmail("a@example.com", ["x@example.net"],
                             b"Subject: smtplib auth\r\n\r\nhello\r\n")
        self.assertEqual(refused, {})
        with self.assertRaises(smtplib.SMTPSenderRefused) as caught:
            s.sendmail("a@example.org", ["x@example.net"], b"Subject: no\r\n\r\nx\r\n")
        self.assertEqual(caught.exception.smtp_code, 553)
        s.quit()
        # LOGIN, both with and without the initial response.
        for initial in (True, False):
            with self.subTest(login_initial_response=initial):
                s = self.smtplib_client()
                s.starttls(context=client_context(PKI.ca_file))
                s.ehlo()
                s.user, s.password = "bob", PASSWORDS["bob"][1]
                code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=initial)
                self.assertEqual(code, 235)
                s.quit()
        found = [qid for qid, (eml, _) in self.postern.messages().items()
                 if b"Subject: smtplib auth" in eml]
        self.assertEqual(len(found), 1)
        self.assertEqual(self.received_protocol(self.stored(found[0])[0]), "ESMTPSA")

    def test_nodemailer(self):
        node, npm = shutil.which("node"), shutil.which("npm")
        if not node or not npm:
            self.skipTest("node or npm is not installed")
        where = os.path.join(TMP, "nodemailer")
        if not os.path.isdir(os.path.join(where, "node_modules", "nodemailer")):
            os.makedirs(where, exist_ok=True)
            try:
                out = subprocess.run([npm, "install", "--prefix", where, "--no-audit",
                                      "--no-fund", "--no-save", "--loglevel=error", "nodemailer"],
                                     capture_output=True, text=True, timeout=120,
                                     stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                self.skipTest("npm install nodemailer took over 120 s")
            if out.returncode != 0:
                self.skipTest("npm install nodemailer failed: " + (out.stderr or out.stdout)[-500:])
        script = os.path.join(where, "send.js")
        with open(script, "w") as f:
            f.write(NODE_SCRIPT)

        def send(user, password, sender, subject, method=None):
            env = dict(os.environ, POSTERN_NODE_TEST=json.dumps({
                "port": self.postern.port, "user": user, "pass": password, "from": sender,
                "subject": subject, "method": method}))
            out = subprocess.run([node, script], capture_output=True, text=True, timeout=60,
                                 env=env, cwd=where, stdin=subprocess.DEVNULL)
            lines = out.stdout.strip().splitlines()
            self.assertTrue(lines, out.stderr)
            return out.returncode, json.loads(lines[-1])

        for method in (None, "LOGIN"):
            with self.subTest(method=method or "default"):
                subject = f"nodemailer {method or 'default'}"
                rc, result = send("alice", PASSWORDS["alice"][1], "a@example.com", subject, method)
                self.assertEqual(rc, 0, result)
                self.assertTrue(result["ok"], result)
                m = QUEUED.match(result["response"][4:])
                self.assertIsNotNone(m, result)
                eml, env = self.stored(m.group(1))
                self.assertEqual(self.received_protocol(eml), "ESMTPSA")
                self.assertEqual(env["mail_from"], "a@example.com")
                self.assertIn(f"Subject: {subject}".encode(), eml)
        rc, result = send("alice", WRONG, "a@example.com", "nodemailer wrong")
        self.assertEqual(rc, 1, result)
        self.assertFalse(result["ok"])
        self.assertEqual(result["code"], "EAUTH", result)
        self.assertEqual(result["responseCode"], 535, result)
        self.assertFalse([1 for eml, _ in self.postern.messages().values()
                          if b"Subject: nodemailer wrong" in eml])


NODE_SCRIPT = r"""
const nodemailer = require("nodemailer");
const cfg = JSON.parse(process.env.POSTERN_NODE_TEST);
const options = {
  host: "127.0.0.1", port: cfg.port, secure: false, requireTLS: true, name: "nodemailer.test",
  tls: {rejectUnauthorized: false}, auth: {user: cfg.user, pass: cfg.pass},
  connectionTimeout: 10000, greetingTimeout: 10000, socketTimeout: 10000,
};
if (cfg.method) options.authMethod = cfg.method;
nodemailer.createTransport(options)
  .sendMail({from: cfg.from, to: "someone@example.net", subject: cfg.subject,
             text: "hello from nodemailer\n"})
  .then((info) => {
    console.log(JSON.stringify({ok: true, response: info.response}));
  })
  .catch((err) => {
    console.log(JSON.stringify({ok: false, code: err.code || null,
                                responseCode: err.responseCode || null,
                                response: err.response || String(err)}));
    process.exitCode = 1;
  });
"""


# --- plaintext AUTH (allow_plaintext_auth) on a STARTTLS listener ----------------------------

class PlaintextAuthTest(AuthCase):
    TLS = "starttls"
    LISTENER = {"allow_plaintext_auth": True}
    AUTH = {"max_failures": 1000}

    def test_warning_at_start(self):
        self.assertIn("warning: listener[0].allow_plaintext_auth: passwords may cross the network"
                      " in clear", self.postern.log())

    def test_plaintext_auth_gives_esmtpa(self):
        c = self.plain()
        self.assertEqual(self.login(c, "alice"), OK_AUTH)
        qid = self.send(c, "a@example.com", subject="plaintext auth")
        eml, env = self.stored(qid)
        self.assertEqual(self.received_protocol(eml), "ESMTPA")
        self.assertNotIn(b"(using ", eml.split(b"\r\n\r\n")[0])
        self.assertEqual(env["protocol"], "ESMTPA")

    def test_ehlo_lists_auth_in_plaintext(self):
        c = self.plain(ehlo=None)
        keywords = self.ehlo_keywords(c)
        self.assertIn("STARTTLS", keywords)
        self.assertIn("AUTH PLAIN LOGIN", keywords)

    def test_starttls_resets_the_login(self):
        c = self.plain()
        self.assertEqual(self.login(c, "alice"), OK_AUTH)
        self.starttls(c)
        keywords = self.ehlo_keywords(c)
        self.assertIn("AUTH PLAIN LOGIN", keywords)
        self.assertEqual(self.reply2(c, "MAIL FROM:<a@example.com>"), AUTH_REQUIRED)
        self.assertEqual(self.login(c, "carol"), OK_AUTH)
        # Now carol, who may send as anyone; not alice, who could not.
        qid = self.send(c, "c@elsewhere.test", subject="after starttls")
        self.assertEqual(self.received_protocol(self.stored(qid)[0]), "ESMTPSA")


# --- no [auth] --------------------------------------------------------------------------------

class NoAuthTest(AuthCase):
    TLS = "starttls"
    WITH_AUTH = False
    LISTENER = {"relay": "trusted", "allow_plaintext_auth": True}

    def test_auth_is_not_implemented(self):
        c = self.plain()
        self.assertFalse([k for k in self.ehlo_keywords(c) if k.startswith("AUTH")])
        self.assertEqual(self.login(c, "alice"), NOT_IMPLEMENTED)
        self.starttls(c)
        self.assertFalse([k for k in self.ehlo_keywords(c) if k.startswith("AUTH")])
        self.assertEqual(self.login(c, "alice"), NOT_IMPLEMENTED)
        self.assertEqual(self.reply2(c, "AUTH LOGIN"), NOT_IMPLEMENTED)
        self.alive(c)


# --- relay = "trusted_or_authenticated" -------------------------------------------------------

class TrustedOrAuthenticatedTest(AuthCase):
    TLS = "none"
    LISTENER = {"relay": "trusted_or_authenticated", "allow_plaintext_auth": True,
                "trusted_networks": ["127.0.0.1/32"]}
    AUTH = {"max_failures": 1000}

    def test_untrusted_without_auth_is_denied(self):
        c = self.plain(source="127.0.0.2")
        self.assertEqual(self.reply2(c, "MAIL FROM:<a@example.com>"), (250, "2.1.0 Ok"))
        self.assertEqual(self.reply2(c, "RCPT TO:<x@example.net>"), RELAY_DENIED)
        self.assertEqual(self.reply2(c, "DATA")[0], 503)
        self.assertEqual(self.reply2(c, "RSET")[0], 250)
        self.assertEqual(self.login(c, "alice", WRONG), FAILED)
        self.assertEqual(self.reply2(c, "MAIL FROM:<a@example.com>"), (250, "2.1.0 Ok"))
        self.assertEqual(self.reply2(c, "RCPT TO:<x@example.net>"), RELAY_DENIED)

    def test_untrusted_with_auth_is_relayed(self):
        c = self.plain(source="127.0.0.2")
        self.assertEqual(self.login(c, "carol"), OK_AUTH)
        qid = self.send(c, "c@anywhere.test", subject="untrusted authenticated")
        eml, env = self.stored(qid)
        self.assertEqual(self.received_protocol(eml), "ESMTPA")
        self.assertEqual(env["client_ip"], "127.0.0.2")

    def test_trusted_without_auth_is_relayed(self):
        c = self.plain(source="127.0.0.1")
        qid = self.send(c, "anyone@anywhere.test", subject="trusted")
        self.assertEqual(self.received_protocol(self.stored(qid)[0]), "ESMTP")

    def test_auth_inside_a_transaction_is_503(self):
        c = self.plain(source="127.0.0.1")
        self.assertEqual(self.reply2(c, "MAIL FROM:<t@anywhere.test>"), (250, "2.1.0 Ok"))
        code, text = self.login(c, "alice")
        self.assertEqual(code, 503, text)
        self.assertTrue(text.startswith("5.5.1 "), text)
        self.assertEqual(self.reply2(c, "AUTH LOGIN")[0], 503)
        self.assertEqual(self.reply2(c, "RSET")[0], 250)
        self.assertEqual(self.login(c, "alice"), OK_AUTH)

    def test_trusted_client_logged_in_is_still_restricted(self):
        c = self.plain(source="127.0.0.1")
        self.assertEqual(self.login(c, "alice"), OK_AUTH)
        code, text = self.reply2(c, "MAIL FROM:<t@anywhere.test>")
        self.assertEqual((code, text),
                         (553, "5.7.1 Sender address <t@anywhere.test> is not owned by user alice"))
        qid = self.send(c, "a@example.com", subject="trusted alice")
        self.assertEqual(self.received_protocol(self.stored(qid)[0]), "ESMTPA")


class AuthenticatedTrustedClientTest(AuthCase):
    """relay = "authenticated": a client inside trusted_networks still needs AUTH."""
    TLS = "none"
    LISTENER = {"allow_plaintext_auth": True, "trusted_networks": ["127.0.0.0/8"]}

    def test_trusted_client_needs_auth(self):
        c = self.plain(source="127.0.0.1")
        self.assertEqual(self.reply2(c, "MAIL FROM:<a@example.com>"), AUTH_REQUIRED)
        self.assertEqual(self.login(c, "alice"), OK_AUTH)
        qid = self.send(c, "a@example.com", subject="after auth")
        self.assertEqual(self.received_protocol(self.stored(qid)[0]), "ESMTPA")


# --- lockout ----------------------------------------------------------------------------------

class LockoutTest(AuthCase):
    """max_failures 3 within failure_window 3s lock a client address out for 2s. Each test uses
    a client address of its own (127.0.0.x)."""
    TLS = "none"
    LISTENER = {"allow_plaintext_auth": True}
    AUTH = {"max_failures": 3, "failure_window": "3s", "lockout": "2s"}

    def failed_events(self, source):
        return self.events("auth_failed", client=source)

    def test_lockout_refuses_the_right_password_then_expires(self):
        src = "127.0.0.11"
        c1 = self.plain(source=src)
        self.assertEqual(self.login(c1, "alice", WRONG), FAILED)
        self.assertEqual(self.login(c1, "nobody", WRONG), FAILED)
        c2 = self.plain(source=src)  # failures add up across connections
        self.assertEqual(self.login(c2, "alice", WRONG), FAILED)
        locked_at = time.time()
        self.wait_events("auth_failed", 3, client=src)
        self.assertEqual([e["locked_out"] for e in self.failed_events(src)], ["no", "no", "yes"])
        # The right password on the same connection: 421 and the connection is closed.
        self.assertEqual(self.login(c2, "alice"), LOCKED)
        self.assertTrue(c2.closed())
        # A new connection: greeted, but AUTH gets 421 whatever the mechanism.
        c3 = self.plain(source=src)
        self.assertEqual(self.reply2(c3, "AUTH LOGIN"), LOCKED)
        self.assertTrue(c3.closed())
        c4 = self.plain(source=src)
        self.assertEqual(self.login(c4, "alice"), LOCKED)
        self.assertTrue(c4.closed())
        refused = self.wait_events("auth_refused", 3, client=src)
        self.assertTrue(all(e["reason"] == "locked out" for e in refused), refused)
        # The first connection, still open, is locked out too.
        self.assertEqual(self.login(c1, "alice"), LOCKED)
        # Another client address is not locked out.
        c5 = self.plain(source="127.0.0.12")
        self.assertEqual(self.login(c5, "alice"), OK_AUTH)
        # The lockout ends.
        time.sleep(max(0.0, locked_at + 2.3 - time.time()))
        c6 = self.plain(source=src)
        self.assertEqual(self.login(c6, "alice"), OK_AUTH)
        self.send(c6, "a@example.com", subject="after lockout")

    def test_failures_outside_the_window_do_not_add_up(self):
        src = "127.0.0.13"
        c = self.plain(source=src)
        self.assertEqual(self.login(c, "alice", WRONG), FAILED)
        self.assertEqual(self.login(c, "alice", WRONG), FAILED)
        time.sleep(3.2)
        self.assertEqual(self.login(c, "alice", WRONG), FAILED)
        self.wait_events("auth_failed", 3, client=src)
        self.assertEqual([e["locked_out"] for e in self.failed_events(src)], ["no", "no", "no"])
        self.assertEqual(self.login(c, "alice"), OK_AUTH)

    def test_malformed_responses_do_not_lock_out(self):
        src = "127.0.0.14"
        c = self.plain(source=src)
        for _ in range(5):
            self.assertEqual(self.reply2(c, "AUTH PLAIN !!!!"), BAD_RESPONSE)
            self.assertEqual(self.reply2(c, "AUTH PLAIN"), (334, ""))
            self.assertEqual(self.reply2(c, "*"), CANCELLED)
        self.assertEqual(self.login(c, "alice"), OK_AUTH)

    def test_pending_exchange_cannot_outlast_the_lockout(self):
        """AUTH exchanges opened before the lockout and answered after it: the lockout covers
        them too (even the right password is refused), else a client with N connections at a
        prompt gets N guesses instead of max_failures."""
        src = "127.0.0.15"
        prompts = []
        for _ in range(4):
            c = self.plain(source=src)
            self.assertEqual(self.reply2(c, "AUTH PLAIN"), (334, ""))
            prompts.append(c)
        fresh = self.plain(source=src)
        for _ in range(3):
            self.assertEqual(self.login(fresh, "alice", WRONG), FAILED)
        self.wait_events("auth_failed", 3, client=src)
        probe = self.plain(source=src)
        self.assertEqual(self.login(probe, "alice"), LOCKED)  # the address is locked out
        # Wrong guesses answered at the pending prompts, then the right password.
        codes = []
        for c in prompts[:3]:
            codes.append(self.reply2(c, plain_blob("alice", WRONG))[0])
        code, text = self.reply2(prompts[3], plain_blob("alice", PASSWORDS["alice"][1]))
        self.assertNotEqual(code, 235,
                            "the right password answered at a prompt opened before the lockout "
                            "was accepted during the lockout")
        self.assertEqual((code, text), LOCKED)
        self.assertEqual(codes, [421, 421, 421])


class FailureDelayTest(AuthCase):
    TLS = "none"
    LISTENER = {"allow_plaintext_auth": True}
    AUTH = {"failure_delay": "1s", "max_failures": 1000}

    def timed(self, c, user, password):
        start = time.monotonic()
        result = self.login(c, user, password)
        return result, time.monotonic() - start

    def test_failures_are_answered_after_the_delay(self):
        c = self.plain()
        result, took = self.timed(c, "alice", WRONG)
        self.assertEqual(result, FAILED)
        self.assertGreaterEqual(took, 0.95)
        result, took = self.timed(c, "nobody", WRONG)
        self.assertEqual(result, FAILED)
        self.assertGreaterEqual(took, 0.95)
        result, took = self.timed(c, "alice", PASSWORDS["alice"][1])
        self.assertEqual(result, OK_AUTH)
        self.assertLess(took, 0.9)

    def test_the_delay_holds_only_its_session(self):
        slow = self.plain(source="127.0.0.21")
        slow.send("AUTH PLAIN " + plain_blob("alice", WRONG) + "\r\n")
        start = time.monotonic()
        other = self.plain(source="127.0.0.22")
        self.assertEqual(self.login(other, "bob"), OK_AUTH)
        self.assertLess(time.monotonic() - start, 0.9)
        self.assertEqual(slow.reply()[:2], FAILED)
        self.assertGreaterEqual(time.monotonic() - start, 0.9)


# --- SIGHUP re-reads the users file -----------------------------------------------------------

class ReloadTest(AuthCase):
    TLS = "none"
    LISTENER = {"allow_plaintext_auth": True}
    AUTH = {"max_failures": 1000}
    USERS = ("alice",)

    def write_users(self, text):
        tmp = self.users_path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.users_path)

    def hup(self, event, count, **fields):
        self.postern.proc.send_signal(signal.SIGHUP)
        return self.wait_events(event, count, **fields)

    def test_sighup_reloads_the_users_file(self):
        self.assertEqual(len(self.events("users_loaded")), 1)
        self.assertEqual(self.events("users_loaded")[0]["users"], "1")
        # A session logged in before the reloads.
        before = self.plain()
        self.assertEqual(self.login(before, "alice"), OK_AUTH)

        c = self.plain()
        self.assertEqual(self.login(c, "frank"), FAILED)
        self.write_users(users_text(("alice", "frank")))
        ev = self.hup("users_loaded", 2)[-1]
        self.assertEqual((ev["users"], ev["file"]), ("2", self.users_path))
        self.assertEqual(self.login(c, "frank"), OK_AUTH)
        self.send(c, "frank@anywhere.test", subject="frank")

        # A broken file: logged, the previous users stay.
        self.write_users(f"frank:{HASHES['frank']}\nbroken line\n")
        ev = self.hup("users_reload_failed", 1)[-1]
        self.assertIn("line 2: expected name:hash", ev["error"])
        self.assertEqual(len(self.events("users_loaded")), 2)
        for user in ("alice", "frank"):
            c = self.plain()
            self.assertEqual(self.login(c, user), OK_AUTH, user)

        # A user taken out of the file can no longer log in.
        self.write_users(users_text(("alice",)))
        ev = self.hup("users_loaded", 3)[-1]
        self.assertEqual(ev["users"], "1")
        c = self.plain()
        self.assertEqual(self.login(c, "frank"), FAILED)
        self.wait_events("auth_failed", 1, user="frank", reason="unknown user")
        self.assertEqual(self.login(c, "alice"), OK_AUTH)
        # alice's restrictions ([user.alice]) still apply after the reloads.
        self.assertEqual(self.reply2(c, "MAIL FROM:<a@example.org>")[0], 553)

        # The session from before the reloads goes on.
        self.send(before, "a@example.com", subject="before the reloads")


# --- the open-relay matrix on each relay mode --------------------------------------------------

class OpenRelayMatrixTest(unittest.TestCase):
    """Every address form of open-relay-address-forms.tsv, from an untrusted, unauthenticated
    client, on each relay mode: none gets 250, nothing reaches the outbox."""

    def start(self, relay):
        d = tempfile.mkdtemp(prefix="postern-auth-relay-", dir=TMP)
        users = os.path.join(d, "users")
        with open(users, "w") as f:
            f.write(users_text())
        listener = {"relay": relay, "trusted_networks": [], "max_connections_per_ip": 200}
        extra = ""
        if relay != "trusted":
            listener["allow_plaintext_auth"] = True  # AUTH on offer, but not used
            extra = (f"[route.special]\noutbox = {toml_str(os.path.join(d, 'special'))}\n"
                     + auth_toml(users))
        p = Postern(listener=listener, extra_toml=extra).start()
        self.addCleanup(p.cleanup)
        p.special = os.path.join(d, "special")
        return p

    def matrix(self, relay):
        forms = load_forms()
        self.assertGreaterEqual(len(forms), 16)
        p = self.start(relay)
        for name, sender, arg in forms:
            c = p.connect()
            self.addCleanup(c.close)
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO probe.example")[0], 250)
            with self.subTest(relay=relay, form=name):
                mail = c.cmd(f"MAIL FROM:{sender}")[:2]
                rcpt = c.cmd(f"RCPT TO:{arg}")[:2]
                data = c.cmd("DATA")[:2]
                self.assertNotEqual(rcpt[0], 250, f"{name}: RCPT TO:{arg} -> {rcpt}")
                self.assertEqual(data[0], 503, f"{name}: DATA -> {data}")
                if relay == "authenticated":
                    self.assertEqual(mail, AUTH_REQUIRED)
                    self.assertEqual(rcpt[0], 503)
                else:
                    self.assertEqual(mail, (250, "2.1.0 Ok"))
                    self.assertEqual(rcpt, RELAY_DENIED)
            c.close()
        self.assertIsNone(p.proc.poll(), p.log())
        self.assertEqual(p.messages(), {})
        self.assertEqual(p.outbox_names(), [])
        self.assertFalse(log_events(p.log(), "queued"))
        self.assertFalse(os.path.isdir(p.special) and os.listdir(p.special))

    def test_trusted(self):
        self.matrix("trusted")

    def test_authenticated(self):
        self.matrix("authenticated")

    def test_trusted_or_authenticated(self):
        self.matrix("trusted_or_authenticated")


if __name__ == "__main__":
    unittest.main()
