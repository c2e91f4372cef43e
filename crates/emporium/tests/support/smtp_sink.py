"""A real SMTP server for Emporium's notification tests.

The tests start it, point the mailer at it and read back what it received.
Each accepted message is parsed by Python's `email` package -- an
implementation independent of the one that wrote it -- and stored as one JSON
file in DIR, so the tests check what a real receiving side makes of our mail.

Usage: python3 smtp_sink.py --port PORT --dir DIR [--auth USER:PASSWORD]
                             [--tls-cert CERT.pem --tls-key KEY.pem]

  --auth     advertise AUTH PLAIN/LOGIN and require it before MAIL
             (535 for wrong credentials)
  --tls-*    offer STARTTLS with this certificate and require it before
             AUTH and MAIL
  RCPT TO    local part starting with "tempfail" -> 451, with "reject" -> 550

Prints "ready" on stdout once listening, then serves until killed.
Needs only aiosmtpd (1.4.x).
"""

import argparse
import email
import email.policy
import hmac
import json
import logging
import os
import re
import secrets
import signal
import ssl
import sys
import threading
import traceback
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.lock = threading.Lock()
        # Continue after files already in DIR so names keep sorting by arrival.
        counters = [
            int(m.group(1))
            for m in (re.match(r"(\d+)-", n) for n in os.listdir(directory))
            if m
        ]
        self.counter = max(counters, default=0)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.rsplit("@", 1)[0].lower()
        if local.startswith("tempfail"):
            return "451 4.3.0 try again later"
        if local.startswith("reject"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        try:
            record = describe(envelope, session)
            name = self.store(record)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            return "554 5.3.0 sink could not store the message"
        return f"250 OK queued as {name}"

    def store(self, record):
        with self.lock:
            self.counter += 1
            name = f"{self.counter:06d}-{secrets.token_hex(4)}"
        data = json.dumps(record, ensure_ascii=False, indent=2)
        tmp = os.path.join(self.directory, name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8", errors="replace"))
        os.rename(tmp, os.path.join(self.directory, name + ".json"))
        return name


def describe(envelope, session):
    msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)

    def header(name):
        value = msg.get(name)
        return None if value is None else str(value)

    def body(subtype):
        part = msg.get_body(preferencelist=(subtype,))
        return None if part is None else part.get_content()

    headers = {}
    for name, value in msg.items():
        headers[name.lower()] = str(value)  # a repeated header: the last one wins

    auth_login = None
    if session.authenticated and isinstance(session.auth_data, LoginPassword):
        auth_login = session.auth_data.login.decode("utf-8", errors="replace")

    return {
        "mail_from": envelope.mail_from,
        "rcpt_tos": list(envelope.rcpt_tos),
        "subject": header("subject"),
        "from": header("from"),
        "to": header("to"),
        "message_id": header("message-id"),
        "headers": headers,
        "text": body("plain"),
        "html": body("html"),
        "multipart_type": msg.get_content_type() if msg.is_multipart() else None,
        "auth_login": auth_login,
        "tls": session.ssl is not None,
    }


def authenticator_for(user, password):
    user, password = user.encode("utf-8"), password.encode("utf-8")

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            mechanism in ("PLAIN", "LOGIN")
            and isinstance(auth_data, LoginPassword)
            and hmac.compare_digest(auth_data.login, user)
            and hmac.compare_digest(auth_data.password, password)
        )
        # handled=False: on failure aiosmtpd answers 535.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return authenticate


def main():
    parser = argparse.ArgumentParser(description="SMTP sink for the notification tests")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--auth", metavar="USER:PASSWORD")
    parser.add_argument("--tls-cert", metavar="CERT.pem")
    parser.add_argument("--tls-key", metavar="KEY.pem")
    args = parser.parse_args()
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")

    os.makedirs(args.dir, exist_ok=True)
    options = {}
    if args.auth is not None:
        user, sep, password = args.auth.partition(":")
        if not sep:
            parser.error("--auth takes USER:PASSWORD")
        # Plain-text AUTH on loopback is the point here; silence aiosmtpd's warning.
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        options = dict(
            authenticator=authenticator_for(user, password),
            auth_required=True,
            auth_require_tls=False,
        )
    # Without --auth, AUTH stays tied to TLS: not advertised.
    if args.tls_cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        options.update(tls_context=context, require_starttls=True)
        options["auth_require_tls"] = True

    controller = Controller(
        Sink(args.dir),
        hostname="127.0.0.1",
        port=args.port,
        server_hostname="smtp-sink.test",
        ready_timeout=30,
        enable_SMTPUTF8=True,
        **options,
    )
    try:
        controller.start()
    except Exception as error:
        print(f"smtp_sink: cannot listen on 127.0.0.1:{args.port}: {error}", file=sys.stderr)
        sys.exit(1)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print("ready", flush=True)

    # Serve until killed; also go away if the test process that started us dies.
    parent = os.getppid()
    while not stop.wait(1.0):
        if os.getppid() != parent:
            break
    controller.stop()


if __name__ == "__main__":
    main()
