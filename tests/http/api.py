"""A JSON API for tests/http/run.sh: orders served three ways, with faults.

    python3 api.py DATA_FILE PORT_FILE

DATA_FILE holds {"orders": [...], "delay": seconds per request}; it is read on every request, so
the test changes what the API serves between runs. Every order has `id` and `updated_at`
(ISO-8601 text); "changed since" is inclusive (`updated_at >= since`), as most APIs are.

  /cursor?since=&after=&limit=   {"data": [...], "meta": {"next": "<token>" | null}}
  /pages?since=&page=&per_page=  {"result": {"items": [...]}}, pages from 1, empty past the end
  /link?since=&page=             [...] with `Link: <…page=N>; rel="next"` while more remain

Requests need `Authorization: Bearer $API_TOKEN` (401 otherwise). Every 7th request gets 429
with `Retry-After: 1`, every 11th a 500: a client must retry both. The port is written to
PORT_FILE once listening. Requests are logged to stderr.
"""

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

DATA, PORT_FILE = sys.argv[1], sys.argv[2]
TOKEN = os.environ["API_TOKEN"]
count = 0


def matching(query):
    with open(DATA) as f:
        data = json.load(f)
    since = query.get("since", [""])[0]
    rows = [o for o in data["orders"] if o["updated_at"] >= since]
    rows.sort(key=lambda o: (o["updated_at"], o["id"]))
    return rows, data.get("delay", 0)


class Api(BaseHTTPRequestHandler):
    def reply(self, status, body, headers=()):
        raw = json.dumps(body, indent=1).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        global count
        count += 1
        url = urlparse(self.path)
        q = parse_qs(url.query)
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.reply(401, {"error": "unauthorized"})
        if count % 7 == 0:
            return self.reply(429, {"error": "slow down"}, [("Retry-After", "1")])
        if count % 11 == 0:
            return self.reply(500, {"error": "oops"})
        rows, delay = matching(q)
        time.sleep(delay)
        if url.path == "/cursor":
            limit = int(q.get("limit", ["10"])[0])
            after = q.get("after", [None])[0]
            if after:
                at, i = after.split("|")
                rows = [o for o in rows if (o["updated_at"], o["id"]) > (at, int(i))]
            page = rows[:limit]
            token = f"{page[-1]['updated_at']}|{page[-1]['id']}" if len(rows) > limit else None
            return self.reply(200, {"data": page, "meta": {"next": token, "served_at": time.time()}})
        if url.path == "/pages":
            n, size = int(q["page"][0]), int(q.get("per_page", ["10"])[0])
            return self.reply(200, {"result": {"items": rows[(n - 1) * size : n * size]}})
        if url.path == "/link":
            n, size = int(q.get("page", ["1"])[0]), 10
            headers = []
            if len(rows) > n * size:
                nxt = dict((k, v[0]) for k, v in q.items())
                nxt["page"] = str(n + 1)
                headers.append(("Link", f'<{url.path}?{urlencode(nxt)}>; rel="next"'))
            return self.reply(200, rows[(n - 1) * size : n * size], headers)
        return self.reply(404, {"error": "no such endpoint"})

    def log_message(self, fmt, *args):
        sys.stderr.write("api: " + (fmt % args) + "\n")


server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.replace(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
