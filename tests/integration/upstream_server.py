"""A real smarthost for postern's upstream tests: aiosmtpd on loopback, run in its own process
by upstreams.AiosmtpdUpstream (run it with Debian's /usr/bin/python3, which has aiosmtpd).

    /usr/bin/python3 upstream_server.py CONFIG.json

CONFIG.json keys (AiosmtpdUpstream writes them):
  host, port             where to listen; port 0 picks a free one
  tls                    "none" | "starttls" | "implicit"
  cert, key              the server certificate (PEM) for starttls and implicit
  client_ca              optional: ask for a client certificate and verify it against this CA
  require_tls            starttls only: refuse MAIL/AUTH/... before STARTTLS (530)
  users                  {name: password}: AUTH PLAIN and LOGIN check against it; {} = no AUTH
  auth_required          refuse MAIL before AUTH (530)
  rcpt_replies           {local-part prefix: reply}: RCPT of a matching recipient gets the reply
  mail_replies           {local-part prefix: reply}: likewise for MAIL FROM
  hostname               the name in the greeting and the EHLO reply
  ehlo_hide, ehlo_extra  EHLO keywords to leave out / to add (e.g. ["PIPELINING"])
  enhanced_status_codes  advertise ENHANCEDSTATUSCODES (and give RSET/NOOP/QUIT coded replies)
  data_size_limit        SIZE, in bytes (0: no limit, no SIZE keyword)
  timeout                idle seconds before aiosmtpd closes a connection
  spool                  directory: every accepted message as NNNNNN.eml (the DATA bytes as
                         received, dot-unstuffed) and NNNNNN.json (envelope, session facts)
  events                 file: one JSON object per line for every connect, EHLO, STARTTLS,
                         AUTH, MAIL, RCPT, end of data, RSET, QUIT and disconnect

End-of-data behaviour is steered by headers of the message itself:
  X-Test-Reply: 452                    reply "452 4.3.1 ..." (a canned text per code) and do
  X-Test-Reply: 554 5.7.1 Go away      not store it; a full reply is sent as written
  X-Test-Reply: drop                   close the connection without a reply
  X-Test-Delay: 2.5                    wait that many seconds before the reply

Prints "READY <port>" on standard output once the socket listens; stops on SIGTERM/SIGINT.
"""
import asyncio
import itertools
import json
import os
import re
import signal
import ssl
import sys
import time

from aiosmtpd.smtp import SMTP, AuthResult

CANNED = {
    "421": "421 4.3.2 Service shutting down",
    "450": "450 4.2.0 Mailbox busy",
    "451": "451 4.3.0 Error: queue file write error",
    "452": "452 4.3.1 Insufficient system storage",
    "550": "550 5.7.1 Message content rejected",
    "552": "552 5.3.4 Message too big for system",
    "554": "554 5.6.0 Message rejected",
}


class Recorder:
    def __init__(self, path):
        self.file = open(path, "a", buffering=1)

    def event(self, _event, **fields):
        fields = {"t": round(time.time(), 6), "event": _event, **fields}
        self.file.write(json.dumps(fields) + "\n")


def header_section(content):
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[:end + 2]


def header_value(content, name):
    m = re.search(rb"(?im)^" + re.escape(name) + rb":[ \t]*([^\r\n]*)\r?$",
                  header_section(content))
    return m.group(1).decode("utf-8", "replace").strip() if m else None


def prefix_reply(replies, address):
    local = address.rsplit("@", 1)[0].lower()
    for prefix, reply in replies.items():
        if local.startswith(prefix.lower()):
            return reply
    return None


class UpstreamSMTP(SMTP):
    """aiosmtpd's SMTP, recording the connection's life and the raw MAIL/RCPT arguments."""

    def __init__(self, handler, app, **kwargs):
        super().__init__(handler, **kwargs)
        self.app = app
        self.conn_id = None

    def is_tls(self):
        return self.transport is not None and \
            self.transport.get_extra_info("ssl_object") is not None

    def tls_version(self):
        obj = self.transport.get_extra_info("ssl_object") if self.transport else None
        return obj.version() if obj else None

    def peer_cert_subject(self):
        obj = self.transport.get_extra_info("ssl_object") if self.transport else None
        cert = obj.getpeercert() if obj else None
        if not cert:
            return None
        return ",".join(f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn)

    def connection_made(self, transport):
        first = self.transport is None
        super().connection_made(transport)
        if first:
            self.conn_id = next(self.app.conn_ids)
            peer = transport.get_extra_info("peername")
            self.app.rec.event("connect", conn=self.conn_id, peer=list(peer[:2]) if peer else None,
                               tls=self.is_tls())

    def _timeout_cb(self):
        # Like Postfix: a 421 and a closed TCP connection. aiosmtpd alone only closes the TLS
        # layer after STARTTLS and then waits (up to 30 s) for the peer's close_notify, which a
        # client idling in a pool never sends; so the socket under TLS is aborted as well.
        self.app.rec.event("timeout", conn=self.conn_id)
        try:
            self.transport.write(b"421 4.4.2 Error: timeout exceeded\r\n")
        except Exception:
            pass
        super()._timeout_cb()
        if self._original_transport is not None:
            self.loop.call_later(0.1, self._original_transport.abort)

    def connection_lost(self, error):
        self.app.rec.event("disconnect", conn=self.conn_id, error=str(error) if error else None)
        super().connection_lost(error)

    async def smtp_MAIL(self, arg):
        self.app.rec.event("mail", conn=self.conn_id, arg=arg, tls=self.is_tls(),
                           authenticated=bool(self.session.authenticated))
        self._raw_mail = arg
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg):
        self._raw_rcpt = arg
        await super().smtp_RCPT(arg)

    async def smtp_STARTTLS(self, arg):
        self.app.rec.event("starttls", conn=self.conn_id)
        await super().smtp_STARTTLS(arg)


class Handler:
    def __init__(self, app):
        self.app = app
        self.cfg = app.cfg

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        session.extended_smtp = True
        keywords = [r[4:] for r in responses]
        hide = {k.upper() for k in self.cfg.get("ehlo_hide", [])}
        out = [keywords[0]]
        for k in keywords[1:]:
            word = k.split(" ", 1)[0].upper()
            if word == "HELP":
                continue
            if word == "AUTH" and not k[4:].strip():
                continue  # aiosmtpd advertises "AUTH " with no mechanism when all are excluded
            if word in hide:
                continue
            out.append(k)
        if self.cfg.get("enhanced_status_codes", True) and "ENHANCEDSTATUSCODES" not in hide:
            out.append("ENHANCEDSTATUSCODES")
        out += list(self.cfg.get("ehlo_extra", []))
        self.app.rec.event("ehlo", conn=server.conn_id, name=hostname, tls=server.is_tls(),
                           keywords=out[1:])
        return [("250-" if i + 1 < len(out) else "250 ") + k for i, k in enumerate(out)]

    async def handle_HELO(self, server, session, envelope, hostname):
        session.host_name = hostname
        self.app.rec.event("helo", conn=server.conn_id, name=hostname, tls=server.is_tls())
        return "250 " + server.hostname

    def handle_STARTTLS(self, server, session, envelope):
        self.app.rec.event("tls", conn=server.conn_id, version=server.tls_version(),
                           client_cert=server.peer_cert_subject())
        return True

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = prefix_reply(self.cfg.get("mail_replies", {}), address)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.raw_mail = getattr(server, "_raw_mail", None)
        envelope.raw_rcpts = []
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = prefix_reply(self.cfg.get("rcpt_replies", {}), address) or "250 2.1.5 Ok"
        self.app.rec.event("rcpt", conn=server.conn_id, address=address, reply=reply,
                           tls=server.is_tls())
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            envelope.raw_rcpts.append(getattr(server, "_raw_rcpt", None))
        return reply

    async def handle_RSET(self, server, session, envelope):
        self.app.rec.event("rset", conn=server.conn_id)
        return "250 2.0.0 Ok" if self.cfg.get("enhanced_status_codes", True) else "250 OK"

    async def handle_NOOP(self, server, session, envelope, arg):
        self.app.rec.event("noop", conn=server.conn_id)
        return "250 2.0.0 Ok" if self.cfg.get("enhanced_status_codes", True) else "250 OK"

    async def handle_QUIT(self, server, session, envelope):
        self.app.rec.event("quit", conn=server.conn_id)
        return "221 2.0.0 Bye" if self.cfg.get("enhanced_status_codes", True) else "221 Bye"

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content
        delay = header_value(content, b"X-Test-Delay")
        if delay:
            await asyncio.sleep(float(delay))
        wanted = header_value(content, b"X-Test-Reply")
        if wanted and wanted.lower() == "drop":
            self.app.rec.event("data", conn=server.conn_id, reply=None, size=len(content))
            server.transport.abort()
            return "421 4.3.0 dropped"  # written to a closed transport: never sent
        if wanted:
            reply = CANNED.get(wanted, f"{wanted} Test reply") if re.fullmatch(r"\d{3}", wanted) \
                else wanted
            self.app.rec.event("data", conn=server.conn_id, reply=reply, size=len(content))
            return reply
        msg_id = self.app.store(server, session, envelope, content)
        reply = f"250 2.0.0 Ok: queued as {msg_id:06d}"
        self.app.rec.event("data", conn=server.conn_id, reply=reply, size=len(content),
                           id=msg_id)
        return reply


class App:
    def __init__(self, cfg):
        self.cfg = cfg
        self.rec = Recorder(cfg["events"])
        self.conn_ids = itertools.count(1)
        self.msg_ids = itertools.count(1)
        os.makedirs(cfg["spool"], exist_ok=True)
        existing = [int(n[:6]) for n in os.listdir(cfg["spool"]) if n.endswith(".json")]
        if existing:  # a restarted upstream keeps numbering after the messages it already has
            self.msg_ids = itertools.count(max(existing) + 1)

    def store(self, server, session, envelope, content):
        msg_id = next(self.msg_ids)
        base = os.path.join(self.cfg["spool"], f"{msg_id:06d}")
        with open(base + ".eml", "wb") as f:
            f.write(content)
        auth = session.auth_data if session.authenticated else None
        meta = {
            "id": msg_id,
            "conn": server.conn_id,
            "helo": session.host_name,
            "tls": server.is_tls(),
            "tls_version": server.tls_version(),
            "client_cert": server.peer_cert_subject(),
            "auth_user": auth["user"] if auth else None,
            "auth_mechanism": auth["mechanism"] if auth else None,
            "mail_from": envelope.mail_from,
            "mail_line": getattr(envelope, "raw_mail", None),
            "mail_options": envelope.mail_options,
            "smtputf8": envelope.smtp_utf8,
            "rcpt_tos": envelope.rcpt_tos,
            "rcpt_lines": getattr(envelope, "raw_rcpts", []),
            "rcpt_options": envelope.rcpt_options,
            "size": len(content),
            "received_at": time.time(),
        }
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".json.tmp", base + ".json")
        return msg_id

    def authenticator(self, server, session, envelope, mechanism, auth_data):
        user = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        ok = self.cfg.get("users", {}).get(user) == password
        self.rec.event("auth", conn=server.conn_id, mechanism=mechanism, user=user, ok=ok,
                       tls=server.is_tls())
        if ok:
            return AuthResult(success=True, auth_data={"user": user, "mechanism": mechanism})
        return AuthResult(success=False, handled=False)

    def server_context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cfg["cert"], self.cfg["key"])
        if self.cfg.get("client_ca"):
            ctx.load_verify_locations(self.cfg["client_ca"])
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def factory(self):
        cfg = self.cfg
        tls = cfg.get("tls", "none")
        users = cfg.get("users") or {}
        kwargs = dict(
            hostname=cfg.get("hostname", "upstream.test"),
            ident="ESMTP aiosmtpd",
            enable_SMTPUTF8=True,
            decode_data=False,
            data_size_limit=cfg.get("data_size_limit", 2 ** 25) or None,
            timeout=cfg.get("timeout", 300),
            auth_required=bool(cfg.get("auth_required", False)),
            authenticator=self.authenticator,
        )
        if not users:
            kwargs["auth_exclude_mechanism"] = ["PLAIN", "LOGIN"]
        if tls == "starttls":
            kwargs["tls_context"] = self.server_context()
            kwargs["require_starttls"] = bool(cfg.get("require_tls", True))
            kwargs["auth_require_tls"] = True
        else:
            # Implicit TLS: aiosmtpd does not know the socket is encrypted, so with
            # auth_require_tls it would never offer AUTH. Plain: AUTH in the clear on purpose.
            kwargs["auth_require_tls"] = False
        return UpstreamSMTP(Handler(self), self, **kwargs)


async def main(cfg):
    app = App(cfg)
    loop = asyncio.get_running_loop()
    ssl_ctx = app.server_context() if cfg.get("tls") == "implicit" else None
    server = await loop.create_server(app.factory, host=cfg.get("host", "127.0.0.1"),
                                      port=cfg.get("port", 0), ssl=ssl_ctx, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    print(f"READY {port}", flush=True)
    await stop
    server.close()


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        config = json.load(f)
    asyncio.run(main(config))
