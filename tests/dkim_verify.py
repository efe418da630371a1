#!/usr/bin/env python3
"""Verifies the DKIM signature of a message with dkimpy, an implementation
independent of nudge's, with no DNS: the TXT record is built from the public
key given (RFC 6376 §3.6.1; an Ed25519 record holds the raw 32-byte key, RFC 8463).

Usage: dkim_verify.py MESSAGE PUBLIC_KEY_PEM. Prints a JSON object: "ok", and the
signature's tags "a", "c", "d", "s" and "h" (the signed headers, lower case).
"""
import base64
import json
import sys

import dkim
import nacl  # noqa: F401  dkimpy needs it for Ed25519: fail here, not as a bad signature


def txt_record(pem):
    der = base64.b64decode("".join(line for line in pem.splitlines() if not line.startswith("-----")))
    # An Ed25519 SubjectPublicKeyInfo is 44 bytes: a fixed 12-byte prefix, then the key.
    if len(der) == 44 and der[:12] == bytes.fromhex("302a300506032b6570032100"):
        return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(der[12:])
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def main():
    message = open(sys.argv[1], "rb").read()
    record = txt_record(open(sys.argv[2], encoding="ascii").read())
    ok = dkim.verify(message, dnsfunc=lambda name, timeout=5: record)
    tags = {}
    for header, value in dkim.rfc822_parse(message)[0]:
        if header.lower() == b"dkim-signature":
            tags = dkim.util.parse_tag_value(value)
    text = {k.decode(): "".join(v.decode().split()) for k, v in tags.items()}
    print(json.dumps({
        "ok": bool(ok),
        "a": text.get("a", ""),
        "c": text.get("c", ""),
        "d": text.get("d", ""),
        "s": text.get("s", ""),
        "h": text.get("h", "").lower().split(":") if text.get("h") else [],
    }))


if __name__ == "__main__":
    main()
