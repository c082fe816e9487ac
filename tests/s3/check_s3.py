"""The orders pipeline on a real S3-compatible server (moto's server mode, with authentication on).

argv: MEDALLION_BIN REPO_ROOT GEN_ORDERS
Checks, each printed as `ok`/`FAIL`:
1. the server implements conditional PUT: a second `PUT If-None-Match: *` gets 412, and of 12
   racing creators of one key exactly one wins (what makes two Delta writers unable to both commit
   one version);
2. end to end: the orders example over bronze batches in `s3://lake/e2e` (credentials from
   AWS_* variables, endpoint from `[storage]` with `${VAR}`), results equal to the generator's
   manifest and to a local run on the same data; a second run writes nothing; 13 daily runs, the
   ledger summed up after 10 and read with the intents listed after it;
3. interop: Python `deltalake` and `polars` read the S3 tables with the same endpoint options;
   `optimize` (Z-order, checkpoint) and `vacuum` keep the contents, time travel still works;
4. a wrong secret, a missing bucket and an unreachable endpoint: exit 2, one line, nothing written;
5. four processes `run --date D --lock-wait 5m` at once on one lake all succeed and equal a
   sequential run;
6. faults through a proxy: every 4th request answered 503 and some slow: the run completes with the
   same tables; the server gone mid-run: the run fails cleanly, and a rerun once it is back equals a
   clean run;
7. what a scan costs in requests: a one-column scan of a silver table with deletion vectors (the
   daily runs' lake) reads each data file in at most two ranged GETs (its metadata with the footer
   hint, then the column unless that first read brought it), not three (the footer's length
   first), and so does delta-rs's reader of gold;
8. what a run costs in reads of the Delta logs: a run on the daily runs' lake reads each commit and
   checkpoint once, however many times it loads the table (a load read its checkpoint in ~11
   ranged GETs, its commits since twice).
"""
import http.client
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

import boto3
import botocore
import polars as pl
from deltalake import DeltaTable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from delta_arrow import read  # noqa: E402  (tests/delta_arrow.py)
from harness import Checks, free_port, moto_user, run, wait_port  # noqa: E402  (tests/harness.py)

medallion, repo, gen = sys.argv[1:4]
work = Path(tempfile.mkdtemp(prefix="medallion-s3-"))
check = Checks()


# The server: moto with authentication on after the 4 set-up calls (user, key, policy, bucket).
moto_port = free_port()
moto_bin = Path(sys.executable).parent / "moto_server"
moto = subprocess.Popen([str(moto_bin), "-H", "127.0.0.1", "-p", str(moto_port)],
                        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"},
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
endpoint = f"http://127.0.0.1:{moto_port}"
try:
    wait_port(moto_port)
    key_id, secret = moto_user(endpoint)
    creds = {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **creds,
                      config=botocore.config.Config(max_pool_connections=32, retries={"max_attempts": 0}))
    s3.create_bucket(Bucket="lake")

    # 1. Conditional PUT.
    s3.put_object(Bucket="lake", Key="proof/k", Body=b"first", IfNoneMatch="*")
    try:
        s3.put_object(Bucket="lake", Key="proof/k", Body=b"second", IfNoneMatch="*")
        status = 200
    except botocore.exceptions.ClientError as e:
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
    body = s3.get_object(Bucket="lake", Key="proof/k")["Body"].read()
    check("conditional PUT: a second If-None-Match: * gets 412 and the first object stays", status == 412 and body == b"first", f"{status}, {body!r}")
    results = []

    def racer(i):
        try:
            s3.put_object(Bucket="lake", Key="proof/race", Body=str(i).encode(), IfNoneMatch="*")
            results.append(i)
        except botocore.exceptions.ClientError:
            pass

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(12)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    check("conditional PUT: of 12 racing creators exactly one wins", len(results) == 1, results)

    # The project: the example, endpoint from [storage] with ${VAR}; credentials from AWS_* variables.
    project = work / "project"
    shutil.copytree(Path(repo) / "examples" / "orders", project, ignore=shutil.ignore_patterns("lake"))
    text = (project / "medallion.toml").read_text()
    storage = '[storage]\nendpoint = "${MEDALLION_TEST_S3_ENDPOINT}"\nregion = "us-east-1"\nallow_http = true\n\n'
    (project / "medallion.toml").write_text(text.replace("[sources.orders]", storage + "[sources.orders]", 1))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base_env.update({"AWS_ACCESS_KEY_ID": creds["aws_access_key_id"], "AWS_SECRET_ACCESS_KEY": creds["aws_secret_access_key"],
                     "MEDALLION_TEST_S3_ENDPOINT": endpoint})

    def med(*args, lake, env=None, timeout=300):
        return run([medallion, *args, "--project", str(project), "--lake", lake], {**base_env, **(env or {})}, timeout,
                   " ".join(args))

    data = work / "data"
    subprocess.run([sys.executable, gen, "--rows", "40000", "--batches", "4", "--seed", "11", "--out", str(data)], check=True, stdout=subprocess.DEVNULL)
    expected = json.loads((data / "manifest.json").read_text())["expected"]

    def upload(prefix):
        for f in sorted((data / "bronze").rglob("*.ndjson.gz")):
            s3.upload_file(str(f), "lake", f"{prefix}/{f.relative_to(data)}")

    def keys(prefix):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket="lake", Prefix=prefix + "/")
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []))

    def fingerprint(lake, env=None):
        sql = ("SELECT count(*) AS n, count(DISTINCT order_id) AS k, CAST(sum(amount) AS VARCHAR) AS s, "
               "(SELECT count(*) FROM quarantine.orders) AS q FROM silver.orders")
        r = med("sql", sql, "--format", "json", lake=lake, env=env)
        g = med("show", "gold.daily_revenue", "--limit", "1000000", "--format", "json", lake=lake, env=env)
        if r.returncode or g.returncode:
            return ("error", r.stderr.strip(), g.stderr.strip())
        return (json.loads(r.stdout.splitlines()[0])["row"], sorted(g.stdout.splitlines()))

    # 2. End to end.
    upload("e2e")
    first = med("run", "--format", "json", lake="s3://lake/e2e")
    summary = next((json.loads(l) for l in first.stdout.splitlines() if '"type":"summary"' in l.replace(" ", "")), {})
    totals = summary.get("totals", {})
    check("s3 run: exit 0", first.returncode == 0, first.stderr.strip()[-500:])
    check("s3 run: accounting matches the manifest",
          (totals.get("read"), totals.get("rejected")) == (expected["valid_records"] + expected["invalid_records"], expected["invalid_records"]), totals)
    again = med("run", "--format", "json", lake="s3://lake/e2e")
    again_totals = next((json.loads(l) for l in again.stdout.splitlines() if '"type":"summary"' in l.replace(" ", "")), {}).get("totals", {})
    check("s3 second run: nothing read, nothing written", again.returncode == 0 and again_totals.get("read") == 0, again_totals)
    local = work / "local"
    shutil.copytree(data, local)
    local_run = med("run", lake=str(local))
    clean = fingerprint(str(local))
    on_s3 = fingerprint("s3://lake/e2e")
    check("s3 tables equal a local run on the same data", local_run.returncode == 0 and on_s3 == clean, (on_s3[0], clean[0]))
    check("silver rows match the manifest", on_s3[0].get("n") == expected["silver_rows"] and on_s3[0].get("k") == expected["silver_rows"], on_s3[0])

    # Daily runs: every 10 committed promotions a run sums up the ledger's intents; later runs read
    # the summary and only the intents listed after it (S3 `start-after`): with the intents it
    # covers gone, the next run still promotes only its new batch.
    daily = work / "daily"
    subprocess.run([sys.executable, gen, "--rows", "13000", "--batches", "13", "--seed", "12", "--out", str(daily)],
                   check=True, stdout=subprocess.DEVNULL)
    daily_files = sorted((daily / "bronze").rglob("*.ndjson.gz"))

    def daily_run():
        r = med("run", "--format", "json", lake="s3://lake/daily")
        batches = [p.get("batches") for l in r.stdout.splitlines() if '"summary"' in l
                   for p in json.loads(l).get("silver", []) if p.get("table") == "orders"]
        return r.returncode, batches

    runs = []
    for f in daily_files[:12]:
        s3.upload_file(str(f), "lake", f"daily/{f.relative_to(daily)}")
        runs.append(daily_run())
    ledger = "daily/_medallion/ledger"
    try:
        summed = json.loads(s3.get_object(Bucket="lake", Key=f"{ledger}/summary/silver/orders.json")["Body"].read())
    except botocore.exceptions.ClientError as e:
        summed = {"error": str(e)}
    check("12 daily runs on s3: one batch each, the ledger summed up through intent 10",
          runs == [(0, [1])] * 12 and (summed.get("through"), len(summed.get("done", []))) == (10, 10), (runs, summed.get("through")))
    for n in range(1, 11):
        s3.delete_object(Bucket="lake", Key=f"{ledger}/silver/orders/{n:010}.json")
    s3.upload_file(str(daily_files[12]), "lake", f"daily/{daily_files[12].relative_to(daily)}")
    last = daily_run()
    daily_local = work / "daily-local"
    shutil.copytree(daily, daily_local)
    daily_clean = med("run", lake=str(daily_local))
    check("... run 13 reads the summary and the intents after it: its batch alone, the tables of one local run",
          last == (0, [1]) and daily_clean.returncode == 0 and fingerprint("s3://lake/daily") == fingerprint(str(daily_local)), last)

    # 3. Interop: deltalake and polars read the S3 tables with the same endpoint options.
    options = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
               "AWS_ACCESS_KEY_ID": creds["aws_access_key_id"], "AWS_SECRET_ACCESS_KEY": creds["aws_secret_access_key"]}
    silver = read(DeltaTable("s3://lake/e2e/silver/orders", storage_options=options))
    total = sum((Decimal(str(v)) for v in silver.column("amount").to_pylist()), Decimal(0))
    check("deltalake reads s3 silver/orders", (silver.num_rows, str(total)) == (on_s3[0]["n"], on_s3[0]["s"]), (silver.num_rows, str(total)))
    gold = pl.read_delta("s3://lake/e2e/gold/daily_revenue", storage_options=options)
    check("polars reads s3 gold/daily_revenue", gold.height == len(on_s3[1]), (gold.height, len(on_s3[1])))

    # Maintenance on S3: optimize (with a checkpoint) and vacuum keep the contents; time travel works.
    v0 = med("show", "silver.orders", "--as-of", "0", "--limit", "1000000", "--format", "json", lake="s3://lake/e2e")
    opt = med("optimize", "orders", "--zorder", "order_date", "--format", "json", lake="s3://lake/e2e")
    vac = med("vacuum", "--retain", "7d", "--format", "json", lake="s3://lake/e2e")
    optimized = [json.loads(l) for l in opt.stdout.splitlines()]
    silver_opt = next((m for m in optimized if m.get("table") == "silver/orders"), {})
    check("optimize and vacuum on s3 succeed", opt.returncode == 0 and vac.returncode == 0, (opt.stderr.strip()[-300:], vac.stderr.strip()[-300:]))
    check("optimize on s3: contents identical", fingerprint("s3://lake/e2e") == clean, silver_opt)
    check("optimize on s3 wrote a checkpoint", any(k.endswith(".checkpoint.parquet") for k in keys("e2e/silver/orders/_delta_log")))
    v0_after = med("show", "silver.orders", "--as-of", "0", "--limit", "1000000", "--format", "json", lake="s3://lake/e2e")
    check("time travel within the retention after maintenance", v0.returncode == 0 and sorted(v0.stdout.splitlines()) == sorted(v0_after.stdout.splitlines()) and v0.stdout, len(v0.stdout.splitlines()))

    # A table never created (a first write killed before its commit left a file): vacuum lists
    # the table's prefix on S3 too and removes the file once past the retention.
    orphan = "e2e/quarantine/dim_customers/part-00000-killed.snappy.parquet"
    s3.put_object(Bucket="lake", Key=orphan, Body=b"PAR1")
    swept = med("vacuum", "quarantine/dim_customers", "--retain", "0s", "--force", "--format", "json", lake="s3://lake/e2e")
    removed = [json.loads(l).get("removed") for l in swept.stdout.splitlines() if "quarantine/dim_customers" in l]
    check("vacuum on s3 sweeps the files of a table never created",
          swept.returncode == 0 and removed == [1] and not keys("e2e/quarantine/dim_customers"),
          (removed, swept.stderr.strip()[-300:]))

    # Rebuild on S3 (issue 15), in slices: killed before its silver commit, finished by a plain
    # run, then again uninterrupted; each gives the tables of the clean run (same contract).
    slices = ["--slice-size", "256KiB"]
    killed = med("rebuild", *slices, lake="s3://lake/e2e", env={"MEDALLION_FAULT_AT": "silver/orders:merge:abort"})
    check("s3 rebuild killed before its silver commit dies", killed.returncode < 0, (killed.returncode, killed.stderr.strip()[-300:]))
    resumed = med("run", lake="s3://lake/e2e")
    check("a plain run finishes the killed s3 rebuild", resumed.returncode == 0 and "rebuilt from bronze" in resumed.stderr, resumed.stderr.strip()[-400:])
    check("... with the tables of a clean run", fingerprint("s3://lake/e2e") == clean)
    rebuilt = med("rebuild", "orders", *slices, "--format", "json", lake="s3://lake/e2e")
    promotions = [p for l in rebuilt.stdout.splitlines() if '"summary"' in l for p in json.loads(l).get("silver", [])]
    sliced = [p.get("slices", 0) for p in promotions if p.get("table") == "orders"]
    check("s3 rebuild in slices succeeds", rebuilt.returncode == 0 and sliced and sliced[0] > 1, (sliced, rebuilt.stderr.strip()[-300:]))
    check("... with the tables of a clean run", fingerprint("s3://lake/e2e") == clean)
    v0_rebuilt = med("show", "silver.orders", "--as-of", "0", "--limit", "1000000", "--format", "json", lake="s3://lake/e2e")
    check("time travel to the first version after rebuilds", sorted(v0_rebuilt.stdout.splitlines()) == sorted(v0.stdout.splitlines()))

    # A first load in slices on S3: the example's expectations of silver.orders need not read its
    # rows, so its winners stream into the new table and are judged from the writer's counts before
    # the dead letter and silver commit. Killed once they passed (the intent recorded, the dead
    # letter's commit still held), a plain run finishes it; both give the clean run's tables.
    for name, fault in [("sliced", None), ("sliced-killed", "silver/orders:intent:abort")]:
        upload(name)
        if fault:
            killed = med("run", *slices, lake=f"s3://lake/{name}", env={"MEDALLION_FAULT_AT": fault})
            written = keys(name)
            check(f"{name}: killed once its expectations passed (its intent recorded), before any commit",
                  killed.returncode < 0
                  and any(k.startswith(f"{name}/_medallion/ledger/silver/orders/") for k in written)
                  and not any("quarantine/orders/_delta_log/" in k or "silver/orders/_delta_log/" in k for k in written),
                  (killed.returncode, [k for k in written if "/orders/" in k and "/bronze/" not in k]))
        loaded = med("run", *slices, "--format", "json", lake=f"s3://lake/{name}")
        promotions = [p for l in loaded.stdout.splitlines() if '"summary"' in l for p in json.loads(l).get("silver", [])]
        sliced = [p.get("slices", 0) for p in promotions if p.get("table") == "orders"]
        check(f"{name}: a first load in slices on s3 succeeds", loaded.returncode == 0 and sliced and sliced[0] > 1,
              (sliced, loaded.stderr.strip()[-300:]))
        check(f"{name}: ... with the tables of a clean run", fingerprint(f"s3://lake/{name}") == clean)

    # A large input streams to S3 in multipart parts (issue 22): ~40 MB of barely compressible
    # records, landed with `ingest`, read back whole.
    big = work / "big.ndjson"
    with big.open("w") as f:
        for i in range(150_000):
            f.write('{"order_id": %d, "region": "%s"}\n' % (10_000_000 + i, os.urandom(128).hex()))
    landed = med("ingest", "orders", str(big), "--format", "json", lake="s3://lake/big")
    outcome = next((json.loads(l) for l in landed.stdout.splitlines() if '"ingested"' in l), {})
    check("a 40 MB input lands on s3 in parts", landed.returncode == 0 and outcome.get("records") == 150_000, (landed.stderr.strip()[-300:], outcome))
    batch = s3.head_object(Bucket="lake", Key="big/" + outcome.get("path", "missing")) if outcome.get("path") else {}
    check("... as one object larger than one part", batch.get("ContentLength", 0) > 16 << 20, batch.get("ContentLength"))

    # 4. Bad credentials, a missing bucket, an unreachable endpoint: exit 2, one line, no writes.
    upload("bad")
    before = keys("bad")
    cases = [
        ("a wrong secret", "s3://lake/bad", {"AWS_SECRET_ACCESS_KEY": "wrong"}, "access denied"),
        ("a missing bucket", "s3://no-such-bucket/lake", {}, "the bucket does not exist"),
        ("an unreachable endpoint", "s3://lake/bad", {"MEDALLION_TEST_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}"}, "cannot reach http://127.0.0.1"),
    ]
    for name, lake, env, needle in cases:
        r = med("run", lake=lake, env=env, timeout=120)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        check(f"{name}: exit 2 with one clear line", r.returncode == 2 and len(lines) == 1 and needle in lines[0], (r.returncode, lines))
    check("nothing was written by the refused runs", keys("bad") == before, len(keys("bad")) - len(before))

    # 5. Four processes, one date each, at once.
    upload("conc")
    upload("seq")
    dates = sorted(p.name for p in (data / "bronze" / "orders").iterdir())
    procs = [subprocess.Popen([medallion, "-q", "run", "--date", d, "--lock-wait", "5m", "--project", str(project), "--lake", "s3://lake/conc"],
                              env=base_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for d in dates]
    outcomes = [(p.wait(timeout=600), p.stderr.read().strip()) for p in procs]
    check(f"{len(procs)} concurrent `run --date` processes all succeed", all(rc == 0 for rc, _ in outcomes), outcomes)
    med("run", lake="s3://lake/seq")
    check("concurrent date runs equal a sequential run", fingerprint("s3://lake/conc") == fingerprint("s3://lake/seq"))

    # 6. Faults through a proxy in front of the server.
    class Proxy:
        def __init__(self):
            self.port = free_port()
            self.fail_every = 0
            self.slow_every = 0
            self.down_after = None
            self.count = 0
            self.seen = None  # a list to record (method, path) of each request in
            self.lock = threading.Lock()
            self.server = None

        def start(self):
            proxy = self

            class Handler(http.server.BaseHTTPRequestHandler):
                protocol_version = "HTTP/1.1"

                def log_message(self, *a):
                    pass

                def forward(self):
                    with proxy.lock:
                        proxy.count += 1
                        n = proxy.count
                        if proxy.seen is not None:
                            proxy.seen.append((self.command, self.path))
                    length = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(length) if length else None
                    if proxy.down_after is not None and n > proxy.down_after:
                        threading.Thread(target=proxy.stop, daemon=True).start()
                        self.close_connection = True
                        return
                    if proxy.fail_every and n % proxy.fail_every == 0:
                        payload = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                        self.send_response(503)
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                    if proxy.slow_every and n % proxy.slow_every == 0:
                        time.sleep(0.3)
                    conn = http.client.HTTPConnection("127.0.0.1", moto_port, timeout=60)
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in ("connection", "transfer-encoding"):
                            conn.putheader(k, v)
                    conn.endheaders(body)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                            self.send_header(k, v)
                    # A HEAD has no body: its length is the object's, as the server said.
                    length = resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                    self.send_header("Content-Length", length)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    conn.close()

                do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

            self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
            threading.Thread(target=self.server.serve_forever, daemon=True).start()

        def stop(self):
            server, self.server = self.server, None
            if server:
                server.shutdown()
                server.server_close()

    proxy = Proxy()
    proxy.start()
    via = {"MEDALLION_TEST_S3_ENDPOINT": f"http://127.0.0.1:{proxy.port}"}
    upload("flaky")
    proxy.fail_every, proxy.slow_every = 4, 7
    flaky = med("run", lake="s3://lake/flaky", env=via)
    requests_made = proxy.count
    proxy.fail_every = proxy.slow_every = 0
    check("every 4th request answered 503, some slow: the run completes", flaky.returncode == 0, flaky.stderr.strip()[-400:])
    check("... with the same tables as a clean run", fingerprint("s3://lake/flaky") == clean)
    print(f"     ({requests_made} requests through the proxy, {requests_made // 4} answered 503)", flush=True)

    upload("stop")
    proxy.count = 0
    proxy.down_after = max(20, requests_made // 3)
    t0 = time.time()
    stopped = med("run", "--retries", "0", lake="s3://lake/stop", env=via, timeout=300)
    # A dependency may panic in a writer task when its upload is cut off (object_store's BufWriter
    # abort after a failed upload): reported in one warning line, never from medallion's own code.
    own_panic = [l for l in stopped.stderr.splitlines() if "panicked" in l and "object_store" not in l]
    check("the server gone mid-run: the run fails cleanly", stopped.returncode in (1, 2) and not own_panic,
          (stopped.returncode, [l for l in stopped.stderr.splitlines() if "panicked" in l or l.startswith("error")][:3], f"{time.time() - t0:.1f}s"))
    proxy.down_after = None
    proxy.stop()
    proxy.start()
    rerun = med("run", lake="s3://lake/stop", env=via)
    check("a rerun once the server is back succeeds", rerun.returncode == 0, rerun.stderr.strip()[-400:])
    check("... and equals a clean run (no duplicates, nothing lost)", fingerprint("s3://lake/stop") == clean)

    # 7. Requests per file scanned by medallion's reader of tables with deletion vectors (the daily
    # runs replaced rows): one ranged GET for the metadata (footer and page index), one for the
    # column; reading the footer's length first made it three. These files are smaller than the
    # footer hint, so the first read brings the column too, kept with the file's end.
    def each_file_once(what, sql, table):
        """Checks that `sql` on the daily lake reads each data file of `table` in one GET."""
        proxy.seen = []
        scan = med("sql", sql, lake="s3://lake/daily", env=via)
        gets = [path for method, path in proxy.seen if method == "GET" and f"/{table}/part-" in path]
        proxy.seen = None
        check(what, scan.returncode == 0 and gets and len(gets) == len(set(gets)),
              (scan.returncode, f"{len(gets)} GETs of {len(set(gets))} files", scan.stderr.strip()[-300:]))

    each_file_once("a one-column scan of silver with deletion vectors reads each data file in one request",
                   "SELECT sum(amount) FROM silver.orders", "silver/orders")
    # delta-rs's reader (tables without deletion vectors) reads a footer's last 8 bytes, then the
    # metadata, then the column: the first read is widened to the footer hint's length.
    each_file_once("... and one of gold (delta-rs's reader) too", "SELECT sum(revenue) FROM gold.daily_revenue",
                   "gold/daily_revenue")

    # 8. GETs of the Delta logs' versioned files (commits, checkpoints) in a run that has nothing
    # new to do but loads every table: each object once.
    proxy.seen = []
    noop = med("run", lake="s3://lake/daily", env=via)
    seen, proxy.seen = proxy.seen, None
    log_gets = [path for method, path in seen if method == "GET" and re.search(r"/_delta_log/\d{20}\.", path)]
    repeated = sorted({p for p in log_gets if log_gets.count(p) > 1})
    check("a run reads each Delta log's commits and checkpoints once",
          noop.returncode == 0 and log_gets and not repeated,
          (noop.returncode, f"{len(log_gets)} GETs of {len(set(log_gets))} log objects", repeated[:3], noop.stderr.strip()[-300:]))
    print(f"     ({len(seen)} requests in the run, {len(log_gets)} of them GETs of log objects)", flush=True)
    proxy.stop()
finally:
    moto.terminate()
    moto.wait(timeout=10)
    shutil.rmtree(work, ignore_errors=True)

check.summary("")
sys.exit(1 if check.failed else 0)
