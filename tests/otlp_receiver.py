#!/usr/bin/env python3
"""A real OTLP/HTTP trace receiver for nudge's trace tests (stdlib only).

Takes `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`, as every
OTLP exporter sends by default, decodes it by the protobuf wire format (the
field numbers of opentelemetry-proto's trace.proto, common.proto and
resource.proto) and appends each span to --log as one JSON line: name, ids in
hex, the parent's id, attributes and the resource's attributes. Prints
"PORT <n>" once listening; runs until its stdin closes.
"""
import argparse
import json
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def fields(data):
    """Yields (field number, wire type, value) of one protobuf message."""
    i = 0
    while i < len(data):
        key, i = varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(data, i)
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 2:
            length, i = varint(data, i)
            value, i = data[i:i + length], i + length
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire} of field {number}")
        yield number, wire, value


def varint(data, i):
    result = shift = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, i


def any_value(data):
    for number, _, value in fields(data):
        if number == 1:
            return value.decode()
        if number == 2:
            return bool(value)
        if number == 3:
            return value - (1 << 64) if value >= 1 << 63 else value
        if number == 4:
            return struct.unpack("<d", value)[0]
        return repr(value)
    return None


def attributes(entries):
    out = {}
    for entry in entries:
        key, value = None, None
        for number, _, v in fields(entry):
            if number == 1:
                key = v.decode()
            elif number == 2:
                value = any_value(v)
        out[key] = value
    return out


def spans(body):
    """The spans of an ExportTraceServiceRequest, with their resource's attributes."""
    for number, _, resource_spans in fields(body):
        if number != 1:
            continue
        resource, scopes = {}, []
        for n, _, v in fields(resource_spans):
            if n == 1:
                resource = attributes(a for k, _, a in fields(v) if k == 1)
            elif n == 2:
                scopes.append(v)
        for scope in scopes:
            for n, _, span in fields(scope):
                if n != 2:
                    continue
                record = {"resource": resource, "parent_span_id": ""}
                attrs = []
                for k, _, v in fields(span):
                    if k == 1:
                        record["trace_id"] = v.hex()
                    elif k == 2:
                        record["span_id"] = v.hex()
                    elif k == 4:
                        record["parent_span_id"] = v.hex()
                    elif k == 5:
                        record["name"] = v.decode()
                    elif k == 9:
                        attrs.append(v)
                record["attributes"] = attributes(attrs)
                yield record


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(404)
                self.end_headers()
                return
            with lock, open(args.log, "a", encoding="utf-8") as f:
                for record in spans(body):
                    f.write(json.dumps(record) + "\n")
            # An empty ExportTraceServiceResponse: every span accepted.
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
