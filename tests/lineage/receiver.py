"""A minimal OpenLineage HTTP receiver for the test: records every POST to /api/v1/lineage with its
Authorization header as one JSON line; answers the very first POST with 503 (a transient error the
client must retry) and every later one with 201. Writes the port it listens on to PORT_FILE."""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

out_path, port_path = sys.argv[1], sys.argv[2]
seen = {"posts": 0}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        seen["posts"] += 1
        if seen["posts"] == 1:
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"try again")
            return
        with open(out_path, "a") as f:
            f.write(json.dumps({
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "content_type": self.headers.get("Content-Type"),
                "event": json.loads(body),
            }) + "\n")
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
with open(port_path, "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
