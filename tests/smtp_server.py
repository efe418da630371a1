#!/usr/bin/env python3
"""A real SMTP server for nudge's end-to-end tests (aiosmtpd on 127.0.0.1).

Prints "PORT <n>" once listening, then appends one JSON line per accepted
message to --log: time, envelope, Message-ID, To, decoded Subject and text body.
"""
import argparse
import asyncio
import email
import email.policy
import json
import socket
import sys
import time

from aiosmtpd.controller import Controller


class Recorder:
    def __init__(self, log_path):
        self.log_path = log_path

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain", "html"))
        record = {
            "time": time.time(),
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "message_id": msg.get("Message-ID", ""),
            "to": str(msg.get("To", "")),
            "subject": str(msg.get("Subject", "")),
            "text": body.get_content() if body is not None else "",
        }
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        return "250 OK"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    # aiosmtpd's Controller checks readiness by connecting to its port, so it
    # cannot take port 0: ask the kernel for a free port first.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Recorder(args.log), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"PORT {port}", flush=True)
    try:
        # Runs until the test kills it or its stdin closes (the test process died).
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
