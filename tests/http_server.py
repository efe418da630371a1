#!/usr/bin/env python3
"""A scripted HTTP server for nudge's plugin delivery tests (stdlib only).

Prints "PORT <n>" once listening. Each request is appended to --log as one JSON
line (method, path, headers, body). Answers come from --answers, a JSON list of
{"status": int, "body": str}, or {"hang": true} for a provider that takes the
request and never answers; the last one repeats once the list runs out.
"""
import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--answers", required=True)
    args = parser.parse_args()
    answers = json.loads(args.answers)
    lock = threading.Lock()
    served = [0]
    never = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length).decode("utf-8", "replace")
            with lock:
                answer = answers[min(served[0], len(answers) - 1)]
                served[0] += 1
                with open(args.log, "a", encoding="utf-8") as f:
                    record = {"method": "POST", "path": self.path, "headers": dict(self.headers), "body": body}
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
            if answer.get("hang"):
                never.wait()
                return
            payload = answer["body"].encode("utf-8")
            self.send_response(answer["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # Runs until the test kills it or its stdin closes (the test process died).
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
