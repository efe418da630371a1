#!/usr/bin/env python3
"""A real SMTP server for nudge's end-to-end tests (aiosmtpd on 127.0.0.1).

Prints "PORT <n>" once listening, then appends one JSON line per accepted
message to --log: time, envelope, Message-ID, To, decoded Subject, text and HTML
bodies, the List-Unsubscribe headers, and the raw message as received (base64,
for checks of its bytes such as DKIM).

It offers PIPELINING (RFC 2920), as real servers do, unless --no-pipelining;
each logged message says whether its client pipelined ("pipelined": the
commands after MAIL were already waiting when MAIL was answered).

With --faults FILE the server misbehaves as scripted: FILE holds a JSON object
mapping a stage ("greeting", "ehlo", "auth", "mail", "rcpt", "data") to a list
of actions, one consumed per command at that stage: an SMTP reply such as
"451 4.3.0 try later" (the command is refused with it; at the greeting, the
reply is sent instead of 220 and the connection closed), "hang" (no reply,
ever), "hang-after-accept" (data only: the message is stored, then no reply) or
"ok". A stage mapped to one string instead of a list answers every command with
it until the file changes: a server that refuses everything. A stage
"rcpt:<domain>" scripts the recipients of that domain only (a provider that
throttles, e.g. "421 4.7.28 rate limited"); it is asked before "rcpt", and
recipients of other domains never consume it. The file is read
and rewritten at each command, so a test can script faults while the server runs.

It offers AUTH PLAIN and LOGIN (without TLS: loopback only) and accepts any
credentials unless the "auth" stage says otherwise.
"""
import argparse
import asyncio
import base64
import email
import email.policy
import json
import logging
import os
import socket
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult


class Recorder:
    def __init__(self, log_path, faults_path, pipelining):
        self.log_path = log_path
        self.faults_path = faults_path
        self.pipelining = pipelining

    def next_fault(self, stage):
        if not self.faults_path or not os.path.exists(self.faults_path):
            return None
        with open(self.faults_path, encoding="utf-8") as f:
            faults = json.load(f)
        actions = faults.get(stage) or []
        if isinstance(actions, str):
            return None if actions == "ok" else actions
        if not actions:
            return None
        action = actions.pop(0)
        faults[stage] = actions
        tmp = self.faults_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(faults, f)
        os.replace(tmp, self.faults_path)
        return None if action == "ok" else action

    async def fault(self, stage):
        """The reply to send instead of the normal one, if any; hangs for "hang"."""
        action = self.next_fault(stage)
        if action == "hang":
            await asyncio.sleep(3600)
        return action

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        refusal = self.next_fault("auth")
        if refusal:
            return AuthResult(success=False, handled=False, message=refusal)
        return AuthResult(success=True)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        refusal = await self.fault("ehlo")
        if refusal:
            return [refusal]
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        # What the client sent after MAIL without waiting for its reply.
        envelope.pipelined = bool(server._reader._buffer)
        refusal = await self.fault("mail")
        if refusal:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        domain = address.rsplit("@", 1)[-1].lower()
        refusal = await self.fault("rcpt:" + domain) or await self.fault("rcpt")
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        action = self.next_fault("data")
        if action == "hang":
            await asyncio.sleep(3600)
        if action and action != "hang-after-accept":
            return action
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain", "html"))
        html = msg.get_body(preferencelist=("html",))
        record = {
            "time": time.time(),
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "pipelined": getattr(envelope, "pipelined", False),
            "message_id": msg.get("Message-ID", ""),
            "to": str(msg.get("To", "")),
            "subject": str(msg.get("Subject", "")),
            "text": body.get_content() if body is not None else "",
            "html": html.get_content() if html is not None else "",
            "list_unsubscribe": str(msg.get("List-Unsubscribe", "")),
            "list_unsubscribe_post": str(msg.get("List-Unsubscribe-Post", "")),
            "raw": base64.b64encode(envelope.original_content).decode("ascii"),
        }
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        if action == "hang-after-accept":
            await asyncio.sleep(3600)
        return "250 OK"


class FaultySMTP(SMTP):
    """aiosmtpd's server, with the greeting scriptable too."""

    async def _handle_client(self):
        refusal = await self.event_handler.fault("greeting")
        if refusal:
            await self.push(refusal)
            self.transport.close()
            return
        await super()._handle_client()


class FaultyController(Controller):
    def factory(self):
        return FaultySMTP(self.handler, **self.SMTP_kwargs)


def main():
    # aiosmtpd warns of its own legacy field at each login it accepts.
    logging.getLogger("mail.log").addFilter(lambda record: "login_data" not in record.getMessage())
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--faults")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--no-pipelining", action="store_true", help="do not offer PIPELINING")
    args = parser.parse_args()
    port = args.port
    if port == 0:
        # aiosmtpd's Controller checks readiness by connecting to its port, so it
        # cannot take port 0: ask the kernel for a free port first.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    recorder = Recorder(args.log, args.faults, not args.no_pipelining)
    controller = FaultyController(
        recorder,
        hostname="127.0.0.1",
        port=port,
        authenticator=recorder.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    print(f"PORT {port}", flush=True)
    try:
        # Runs until the test kills it or its stdin closes (the test process died).
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
