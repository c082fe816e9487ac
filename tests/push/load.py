"""Push load for tests/push/run.sh.

    load.py push URL CLIENTS PUSHES ACKED_FILE [--retry-unacked]
        CLIENTS threads each POST PUSHES bodies of 1-3 records ({"id": "c<client>-<push>-<k>"})
        to URL; every record of a push answered 200 is appended to ACKED_FILE. A push that
        gets no answer (the server was killed) is remembered in ACKED_FILE + ".pending"; with
        --retry-unacked, those bodies are sent again (the same bytes, from 16 threads).
    load.py check LAKE SOURCE ACKED_FILE [--all SENT]
        every acknowledged record is in the source's bronze exactly once, and no record is
        there twice; with --all, exactly the SENT records are there.
"""

import glob
import gzip
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

TOKEN = os.environ.get("MEDALLION_PUSH_TOKEN", "")


def post(url, body):
    u = urllib.parse.urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        c.request("POST", u.path, body, {"Authorization": f"Bearer {TOKEN}"})
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        c.close()


def push(url, clients, pushes, acked_file, retry):
    lock = threading.Lock()
    pending_file = acked_file + ".pending"
    todo = {}
    if retry and os.path.exists(pending_file):
        for line in open(pending_file):
            todo[line.strip()] = True
        os.remove(pending_file)
    acked, unacked, statuses = [], [], {}

    def work(bodies):
        for body in bodies:
            try:
                status, answer = post(url, body)
            except (OSError, http.client.HTTPException):
                with lock:
                    unacked.append(body)
                continue
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    acked.extend(json.loads(line)["id"] for line in body.decode().splitlines())
                else:
                    unacked.append(body)

    if retry:
        bodies = [b.encode().decode("unicode_escape").encode() for b in todo]
        jobs = [bodies[i::16] for i in range(16)]
    else:
        jobs = []
        for c in range(clients):
            bodies = []
            for p in range(pushes):
                n = 1 + (c + p) % 3
                bodies.append("".join(json.dumps({"id": f"c{c}-{p}-{k}", "v": k}) + "\n" for k in range(n)).encode())
            jobs.append(bodies)
    threads = [threading.Thread(target=work, args=(j,)) for j in jobs]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.time() - start
    with open(acked_file, "a") as f:
        f.writelines(i + "\n" for i in acked)
    with open(pending_file, "a") as f:
        f.writelines(b.decode().encode("unicode_escape").decode() + "\n" for b in unacked)
    print(f"{sum(len(j) for j in jobs)} pushes in {took:.1f}s: {len(acked)} records acknowledged, "
          f"{len(unacked)} pushes unanswered; statuses {statuses}")


def check(lake, source, acked_file, sent=None):
    landed = {}
    for batch in glob.glob(f"{lake}/bronze/{source}/*/*.ndjson.gz"):
        for line in gzip.open(batch, "rt"):
            i = json.loads(line)["id"]
            landed[i] = landed.get(i, 0) + 1
    twice = [i for i, n in landed.items() if n > 1]
    assert not twice, f"{len(twice)} records landed twice, e.g. {twice[:3]}"
    acked = set(line.strip() for line in open(acked_file))
    lost = acked - set(landed)
    assert not lost, f"{len(lost)} acknowledged records are not in bronze, e.g. {sorted(lost)[:3]}"
    if sent is not None:
        assert set(landed) == sent, (len(landed), len(sent))
    print(f"bronze/{source}: {len(landed)} records, each once; all {len(acked)} acknowledged ones there")


if __name__ == "__main__":
    if sys.argv[1] == "push":
        push(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], "--retry-unacked" in sys.argv)
    else:
        sent = None
        if "--all" in sys.argv:
            clients, pushes = map(int, sys.argv[sys.argv.index("--all") + 1].split("x"))
            sent = {f"c{c}-{p}-{k}" for c in range(clients) for p in range(pushes) for k in range(1 + (c + p) % 3)}
        check(sys.argv[2], sys.argv[3], sys.argv[4], sent)
