"""The orders pipeline with its gold models on a Ballista cluster over a real S3-compatible server.

argv: MEDALLION_BIN REPO_ROOT GEN_ORDERS
Processes, all on 127.0.0.1: moto's S3 server (authentication on), `medallion scheduler` (started
with no credential at all), two `medallion executor`s with 1 task slot each (credentials from their
own AWS_* variables, endpoint from the project's `[storage]`), and the driver, `medallion run
--cluster df://…`, whose traffic to the scheduler passes a recording proxy. Checks, each printed
as `ok`/`FAIL`:
1. the run on the cluster succeeds and its tables equal an in-process run of the same data (every
   column of silver, dead letter and gold), with the same number of commits per table; bronze
   files were decoded and validated by the executors (the driver sent bronze scans, not records);
   gold's rows were written by the executors (the driver sent write nodes, not rows), and so were
   silver's latest records (the driver sent the table to write them to); with a
   per-batch rejection gate the executors keep every valid row (no dedup there), same tables;
2. the plans the driver sent carry neither the access key id nor the secret;
3. an executor killed (abort, as kill -9) as it starts a task: the run completes through Ballista's
   task retry on the other executor, or fails cleanly and a rerun completes; either way the tables
   equal the clean run's, with one commit per table per run; and one killed after writing a gold
   model's files but before reporting them: same, and the dead attempt's files, never committed,
   are removed by `vacuum`; and one killed as it starts validating a bronze file: same; and one
   killed after writing silver's latest records but before reporting them: same, and vacuum
   removes the dead attempt's silver files; and one killed once it wrote a gold model's files
   the second time and restarted on its own address and work directory (where the dead one's
   files still are): the run completes through task retry, the same tables; a rebuild
   (`--full-refresh`) on the cluster, whose executors write the new silver table's files, equals
   one in process; and so does a small batch
   touching one day, which the incremental gold model rebuilds as one partition (on the cluster,
   the executors write it and the table's other rows again);
3b. a job its scheduler cancels as stalled (`MEDALLION_FAULT_AT=cluster/scheduler:stall` on a
   scheduler of its own): the run retries the node and gives the same tables;
4. a scheduler that is not there: the run fails with one clear line, nothing committed.
On failure the last lines of the scheduler's log (info: jobs submitted and finished, executors
lost, tasks reset) and the executors' (warn; CLUSTER_LOG sets both) are printed, then every failed
check again, last. CLUSTER_RUN_TIMEOUT=seconds bounds each run (default 600); a faulty run still
going after 600 s has its threads' stacks printed, and its check quotes what the scheduler logged
meanwhile.
"""
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3
import botocore
from deltalake import DeltaTable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from delta_arrow import read  # noqa: E402  (tests/delta_arrow.py)
from harness import Checks, finish, free_port, moto_user, run, wait_port  # noqa: E402  (tests/harness.py)

medallion, repo, gen = sys.argv[1:4]
work = Path(tempfile.mkdtemp(prefix="medallion-cluster-"))
check = Checks()
NOW = "2026-06-01T12:00:00Z"
# The generator's data has orders only (dim_customers stays unpublished; revenue_by_tier reads it empty).
TABLES = ["silver/orders", "quarantine/orders", "gold/daily_revenue", "gold/revenue_by_tier", "gold/sources_json",
          "gold/source_parts"]


class Recorder:
    """A TCP proxy to `target` that keeps every byte the clients sent."""

    def __init__(self, target):
        self.target, self.sent, self.lock = target, bytearray(), threading.Lock()
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self.pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self.pipe, args=(upstream, client, False), daemon=True).start()

    def pipe(self, src, dst, record):
        try:
            while data := src.recv(65536):
                if record:
                    with self.lock:
                        self.sent.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


moto_port = free_port()
moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
                        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"},
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
endpoint = f"http://127.0.0.1:{moto_port}"
processes = []
try:
    wait_port(moto_port)
    key_id, secret = moto_user(endpoint)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key_id,
                      aws_secret_access_key=secret, config=botocore.config.Config(max_pool_connections=32))
    s3.create_bucket(Bucket="lake")

    project = work / "project"
    shutil.copytree(Path(repo) / "examples" / "orders", project, ignore=shutil.ignore_patterns("lake"))
    text = (project / "medallion.toml").read_text()
    storage = '[storage]\nendpoint = "${MEDALLION_TEST_S3_ENDPOINT}"\nregion = "us-east-1"\nallow_http = true\n\n'
    # A model calling medallion's own SQL functions (JSON), which the scheduler and the executors
    # must know to plan and run it.
    (project / "gold" / "sources_json.sql").write_text(
        "SELECT source, json_extract_string(concat('{\"s\": \"', source, '\"}'), '$.s') AS read_back, "
        "json_array_length(concat('[', CAST(count(*) AS VARCHAR), ']')) AS one FROM {{ ref('orders') }} GROUP BY source")
    text += '\n[gold.sources_json]\nexpectations = [{ name = "read_back", expect = "read_back = source AND one = 1", action = "fail" }]\n'
    # A wildcard path's list, made rows by `unnest` across the executors' partitions.
    (project / "gold" / "source_parts.sql").write_text(
        "SELECT part, count(*) AS n FROM (SELECT unnest(json_extract_string(concat('[\"', source, '\", \"', currency, "
        "'\"]'), '$[*]')) AS part FROM {{ ref('orders') }}) GROUP BY part")
    text += '\n[gold.source_parts]\nexpectations = [{ name = "counted", expect = "n > 0 AND part IS NOT NULL", action = "fail" }]\n'
    (project / "medallion.toml").write_text(text.replace("[sources.orders]", storage + "[sources.orders]", 1))
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MEDALLION_"))}
    lake_env = {**clean_env, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret,
                "MEDALLION_TEST_S3_ENDPOINT": endpoint}

    def med(*args, lake, env=None, timeout=int(os.environ.get("CLUSTER_RUN_TIMEOUT", "600")), proj=project):
        return run([medallion, *args, "--project", str(proj), "--lake", lake],
                   {**lake_env, "MEDALLION_NOW": NOW, **(env or {})}, timeout, " ".join(args))

    data = work / "data"
    subprocess.run([sys.executable, gen, "--rows", "200000", "--batches", "5", "--seed", "18", "--out", str(data)],
                   check=True, stdout=subprocess.DEVNULL)

    batches = sorted((data / "bronze").rglob("*.ndjson.gz"), key=lambda f: (f.parent.name, f.name))

    def upload(prefix, part=None):
        """The first 3 bronze batches (part 0), the others (part 1), or all."""
        chosen = batches if part is None else (batches[:3] if part == 0 else batches[3:])
        for f in chosen:
            s3.upload_file(str(f), "lake", f"{prefix}/{f.relative_to(data)}")

    def runs(prefix, *args, proj=project):
        """The first batches, a run, the others, a run (so silver's second version has deletion
        vectors for gold to read): both runs, or the first alone when it failed."""
        done = []
        for part in (0, 1):
            upload(prefix, part)
            done.append(med("run", *args, lake=f"s3://lake/{prefix}", proj=proj))
            if done[-1].returncode != 0:
                break
        return done

    def two_runs(prefix, *args, proj=project):
        """`runs`: the failed run, or the second."""
        return runs(prefix, *args, proj=proj)[-1]

    options = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
               "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}

    def tables(prefix):
        """Every table's rows (all columns, sorted) and its number of commits."""
        out = {}
        for t in TABLES:
            try:
                dt = DeltaTable(f"s3://lake/{prefix}/{t}", storage_options=options)
            except Exception as e:  # a table never created
                out[t] = ("missing", type(e).__name__)
                continue
            # A run's id has a random part (its clock is pinned), and so do the dead-letter row ids
            # made from it: the rest of every row is compared.
            rows = [{k: v for k, v in r.items() if k != "_id" and "run_id" not in k} for r in read(dt).to_pylist()]
            out[t] = (sorted(json.dumps(r, sort_keys=True, default=str) for r in rows), len(dt.history()))
        return out

    def differences(a, b):
        found = [t for t in TABLES if a.get(t) != b.get(t)]
        for t in found:
            if isinstance(a[t][0], list) and isinstance(b[t][0], list):
                only = sorted(set(a[t][0]) ^ set(b[t][0]))[:2]
                print(f"     {t}: e.g. {only}", flush=True)
        return found

    # The cluster: a scheduler without credentials, two executors with 1 slot each.
    sched_port = free_port()
    scheduler = subprocess.Popen([medallion, "scheduler", "--bind", f"127.0.0.1:{sched_port}", "--executor-timeout", "10s"],
                                 env={**clean_env, "MEDALLION_LOG": os.environ.get("CLUSTER_LOG", "info")}, stdout=subprocess.DEVNULL, stderr=open(work / "scheduler.log", "w"))
    processes.append(scheduler)
    wait_port(sched_port)

    def executor(name, env=None, address=None, scheduler_port=sched_port):
        """An executor with 1 slot; `address` = (flight port, gRPC port, work directory) to start it
        where another ran (as a service manager restarts one), else free ports and its own."""
        flight, grpc, work_dir = address or (free_port(), free_port(), None)
        if work_dir:
            Path(work_dir).mkdir(exist_ok=True)
        p = subprocess.Popen([medallion, "executor", "--scheduler", f"127.0.0.1:{scheduler_port}",
                              "--bind", f"127.0.0.1:{flight}", "--grpc-port", str(grpc), "--slots", "1",
                              *(["--work-dir", str(work_dir)] if work_dir else []), "--project", str(project)],
                             env={**lake_env, "MEDALLION_LOG": os.environ.get("CLUSTER_LOG", "warn"), **(env or {})}, stdout=subprocess.DEVNULL,
                             stderr=open(work / f"executor-{name}.log", "w"))
        processes.append(p)
        wait_port(flight)
        return p

    a, b = executor("a"), executor("b")
    time.sleep(2)  # both registered (an idle executor asks for tasks every 50 ms)
    proxy = Recorder(sched_port)
    cluster = f"df://127.0.0.1:{proxy.port}"

    # 1. The same data in process and on the cluster.
    inproc_run = two_runs("inproc")
    check("in-process runs: exit 0", inproc_run.returncode == 0, inproc_run.stderr.strip()[-500:])
    clean = tables("inproc")
    check("in-process runs published every table", all(v[0] != "missing" for v in clean.values()),
          {t: v[0] for t, v in clean.items() if v[0] == "missing"})
    log = s3.list_objects_v2(Bucket="lake", Prefix="inproc/silver/orders/_delta_log/")["Contents"]
    vectors = [o for o in log if b"deletionVector\":{" in s3.get_object(Bucket="lake", Key=o["Key"])["Body"].read()]
    check("the second run left silver with deletion vectors (gold reads them)", vectors, len(vectors))
    started = time.time()
    on_cluster = two_runs("cluster", "--cluster", cluster)
    check("runs on the cluster: exit 0", on_cluster.returncode == 0, on_cluster.stderr.strip()[-800:])
    print(f"     (cluster runs {time.time() - started:.1f}s)", flush=True)
    got = tables("cluster")
    check("cluster tables equal the in-process run's (all columns, commits per table)", not differences(got, clean),
          {t: (len(got[t][0]), got[t][1], len(clean[t][0]), clean[t][1]) for t in differences(got, clean)})
    gold_rows = sum(len(clean[t][0]) for t in TABLES if t.startswith("gold/"))
    check("gold has rows to compare", gold_rows > 0, gold_rows)

    # 1b. A per-batch rejection gate could hold a batch back after validation, so the executors
    # must not deduplicate across batches: every valid row comes back, the driver dedups, and the
    # tables are the same (no batch is over the bound).
    gated = work / "gated"
    shutil.copytree(project, gated)
    text = (gated / "medallion.toml").read_text()
    (gated / "medallion.toml").write_text(text.replace('primary_key = ["order_id"]\n',
                                                       'primary_key = ["order_id"]\nmax_rejected_fraction = 0.5\n', 1))
    before = len(proxy.sent)
    on_gated = two_runs("gated", "--cluster", cluster, proj=gated)
    check("a table with a per-batch gate, on the cluster: exit 0", on_gated.returncode == 0, on_gated.stderr.strip()[-500:])
    gated_sent = bytes(proxy.sent[before:])
    got = tables("gated")
    check("... validated there, not deduplicated there, the same tables",
          b"medallion\x01b" in gated_sent and b'"dedup"' not in gated_sent and not differences(got, clean),
          differences(got, clean))

    # 2. No credential in what the driver sent.
    sent = bytes(proxy.sent)
    check("the driver sent its plans through the recorded connection", len(sent) > 1000 and b"ShippedScan" not in sent
          and b"medallion\x01T" in sent, len(sent))
    check("gold's rows were written by the executors (the driver sent write nodes)", b"medallion\x01W" in sent)
    check("silver's bronze files were decoded and validated by the executors (the driver sent bronze scans)",
          b"medallion\x01b" in sent and b'"contract":' in sent)
    check("... and deduplicated there, after a shuffle on the key (orders; customers keeps history)",
          b'"dedup":{"keys":["order_id"],"order_by":"_ingested_at"}' in sent)
    check("... and the latest records written there as silver's files (the driver sent the table, not rows)",
          b'"write":"s3://lake/cluster/silver/orders' in sent)
    check("the plans carry neither the access key id nor the secret",
          key_id.encode() not in sent and secret.encode() not in sent)

    def faulty_run(name, fault, prefix, address=None):
        """A run on `prefix`'s first batches while the only executor, `name`, dies at `fault`
        (abort, as kill -9); another executor joins once it died, within the scheduler's grace
        period for a cluster without executors (at the same `address`, when given: restarted).
        Checks the faulty one died and the run completed (through task retry, or a clean failure
        and a rerun; with `address`, through task retry only); returns the new executor."""
        killed = executor(name, env={"MEDALLION_FAULT_AT": fault}, address=address)
        logged = (work / "scheduler.log").stat().st_size
        time.sleep(2)
        upload(prefix, 0)
        running = subprocess.Popen([medallion, "run", "--cluster", cluster, "--project", str(project), "--lake", f"s3://lake/{prefix}"],
                                   env={**lake_env, "MEDALLION_NOW": NOW}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            killed.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pass
        check(f"{name}: the faulty executor died ({fault})", killed.returncode is not None and killed.returncode < 0,
              killed.returncode)
        survivor = executor(f"{name}-survivor", address=address)
        # A hung run (seen in CI, 2026-12-04 and 12-06): its threads' stacks say where it waits.
        running = finish(running, 600, f"{name}: the run")
        err = running.stderr
        if address:
            check(f"{name}: the run completed through task retry on the restarted executor", running.returncode == 0,
                  err.strip()[-800:])
        elif running.returncode != 0:
            lines = [l for l in err.splitlines() if l.startswith("error")]
            with open(work / "scheduler.log", "rb") as log:
                log.seek(logged)
                meanwhile = [l[:200] for l in log.read().decode(errors="replace").splitlines() if l[:4].isdigit()]
            check(f"{name}: the run whose executor died fails cleanly (one error per failed node)",
                  running.returncode == 1 and lines, (err.strip()[-500:], meanwhile[-12:]))
            rerun = med("run", "--cluster", cluster, lake=f"s3://lake/{prefix}")
            check(f"{name}: ... and a rerun completes", rerun.returncode == 0, rerun.stderr.strip()[-500:])
        else:
            check(f"{name}: the run completed through task retry on the other executor", True)
        upload(prefix, 1)
        second = med("run", "--cluster", cluster, lake=f"s3://lake/{prefix}")
        check(f"{name}: the next run on the remaining executor: exit 0", second.returncode == 0, second.stderr.strip()[-500:])
        after = tables(prefix)
        check(f"{name}: tables equal the clean run's, one commit per table per run", not differences(after, clean),
              {t: (len(after[t][0]), after[t][1], len(clean[t][0]), clean[t][1]) for t in differences(after, clean)})
        return survivor

    def stop(executors):
        for p in executors:
            p.terminate()
            p.wait(timeout=30)
        time.sleep(12)  # the scheduler drops them (executor timeout 10s)

    # 3. An executor killed as it starts a task.
    stop([a, b])
    survivor = faulty_run("killed", "cluster/scan:execute:abort", "killed")

    # 3b. An executor killed once it wrote a gold model's files, before it reported them: the
    # retried task writes them again; only the files reported by the attempt that completed are
    # committed, the dead attempt's are left unpublished (never read) until vacuum removes them.
    stop([survivor])
    survivor = faulty_run("killed-writing", "cluster/write:written:abort", "written")

    # 3c. An executor killed as it starts validating a bronze file: the file is validated again
    # on the other executor; silver, its dead letter and the accounting are as in process.
    stop([survivor])
    survivor = faulty_run("killed-validating", "cluster/validate:execute:abort", "validating")

    # 3d. An executor killed once it wrote silver's latest records, before it reported the files:
    # the retried task writes them again; the driver commits only the files it was told of.
    stop([survivor])
    survivor = faulty_run("killed-winners", "cluster/winners:written:abort", "winners")

    # 3e. An executor killed once it wrote a gold model's files the second time, and restarted on
    # its own address and work directory, as a service manager restarts one (the dead one's shuffle
    # files are still there): the run completes through task retry, with the clean run's tables.
    stop([survivor])
    survivor = faulty_run("restarted", "cluster/write:written:abort2", "restarted",
                          address=(free_port(), free_port(), work / "restarted-work"))

    def unpublished(prefix, layer="gold/"):
        """Parquet files under the tables of `layer` that no commit of their log adds."""
        out = []
        for t in (t for t in TABLES if t.startswith(layer)):
            root = f"{prefix}/{t}/"
            added = set()
            for o in s3.list_objects_v2(Bucket="lake", Prefix=f"{root}_delta_log/").get("Contents", []):
                if o["Key"].endswith(".json"):
                    for line in s3.get_object(Bucket="lake", Key=o["Key"])["Body"].read().splitlines():
                        action = json.loads(line)
                        if "add" in action:
                            added.add(action["add"]["path"])
            for o in s3.list_objects_v2(Bucket="lake", Prefix=root).get("Contents", []):
                rel = o["Key"][len(root):]
                if rel.endswith(".parquet") and not rel.startswith(("_delta_log", "_change_data")) and rel not in added:
                    out.append(o["Key"])
        return out

    orphans = unpublished("written")
    check("the dead attempt's files are in the lake, never committed", orphans, len(orphans))
    vacuumed = med("vacuum", "--retain", "0s", "--force", lake="s3://lake/written")
    check("vacuum removes them, and the tables read the same",
          vacuumed.returncode == 0 and not unpublished("written")
          and all(tables("written")[t][0] == clean[t][0] for t in TABLES),
          (vacuumed.stderr.strip()[-300:], unpublished("written")))

    orphans = unpublished("winners", "silver/")
    check("silver: the dead attempt's files are in the lake, never committed", orphans, len(orphans))
    vacuumed = med("vacuum", "--retain", "0s", "--force", lake="s3://lake/winners")
    check("vacuum removes them, and the tables read the same",
          vacuumed.returncode == 0 and not unpublished("winners", "silver/")
          and all(tables("winners")[t][0] == clean[t][0] for t in TABLES),
          (vacuumed.stderr.strip()[-300:], unpublished("winners", "silver/")))

    # 3f. A rebuild from bronze (`--full-refresh`): on the cluster the executors write the new
    # table's files and the driver replaces the table with them; the same tables as in process.
    inproc_rebuild = med("run", "--full-refresh", lake="s3://lake/inproc")
    check("a rebuild in process: exit 0", inproc_rebuild.returncode == 0, inproc_rebuild.stderr.strip()[-500:])
    before = len(proxy.sent)
    cluster_rebuild = med("run", "--full-refresh", "--cluster", cluster, lake="s3://lake/cluster")
    check("a rebuild on the cluster: exit 0", cluster_rebuild.returncode == 0, cluster_rebuild.stderr.strip()[-500:])
    rebuilt, expected = tables("cluster"), tables("inproc")
    check("... written by the executors, the same tables as in process (all columns, commits per table)",
          b'"write":"s3://lake/cluster/silver/orders' in bytes(proxy.sent[before:])
          and not differences(rebuilt, expected),
          {t: (len(rebuilt[t][0]), rebuilt[t][1], len(expected[t][0]), expected[t][1]) for t in differences(rebuilt, expected)})

    # 3g. A small batch touching one day: on the cluster the incremental gold model rebuilds that
    # partition only (the executors write it, and the table's other rows again); the same tables.
    # The same bronze batch in both lakes (as a producer writing the layout would land it).
    def valid(r):
        return (isinstance(r.get("amount"), (int, float)) and r["amount"] > 0 and isinstance(r.get("customer_id"), int)
                and str(r.get("currency", "")).upper() in ("USD", "EUR", "GBP", "JPY", "CAD")
                and isinstance(r.get("order_date"), str) and r["order_date"] >= "2000-01-01")
    with gzip.open(batches[-1], "rt") as f:
        first = next(r for r in map(json.loads, f) if valid(r))
    batch_id = "00000000-0000-4000-8000-000000000f1f"
    first.update({"_batch_id": batch_id, "_ingested_at": "2030-01-01T00:00:00+00:00"})
    changed = [{**first, "amount": round(first["amount"] + 1, 2)},
               {**first, "order_id": 900000001}, {**first, "order_id": 900000002}]
    extra = work / f"{batch_id}.ndjson.gz"
    with gzip.open(extra, "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in changed))
    outputs = {}
    for prefix, args in (("inproc", ()), ("cluster", ("--cluster", cluster))):
        s3.upload_file(str(extra), "lake", f"{prefix}/bronze/orders/{batches[-1].parent.name}/{extra.name}")
        outputs[prefix] = med("run", *args, lake=f"s3://lake/{prefix}")
    check("a batch touching one day, in process and on the cluster: exit 0",
          all(o.returncode == 0 for o in outputs.values()), {p: o.stderr.strip()[-300:] for p, o in outputs.items()})
    # In process daily_revenue is kept from silver's change feed (one update: preimage and
    # postimage, two inserts); on the cluster it rebuilds the touched partition.
    check("... the incremental model kept from 4 changes in process, one partition rebuilt on the cluster",
          "kept from changes (4 changes)" in outputs["inproc"].stdout
          and "incremental (1 partition)" in outputs["cluster"].stdout,
          {p: o.stdout.strip()[-600:] for p, o in outputs.items()})
    after, expected = tables("cluster"), tables("inproc")
    check("... the same tables (all columns, commits per table)", not differences(after, expected),
          {t: (len(after[t][0]), after[t][1], len(expected[t][0]), expected[t][1]) for t in differences(after, expected)})

    # 3b. A job its scheduler cancels as stalled (as after an executor was lost): the driver's
    # node gets "Job … failed: Cancelled", its retries run it again in the same run, and the
    # tables are those of the clean runs. A scheduler of its own, taking the first job it sees
    # running for stalled (MEDALLION_FAULT_AT), with one executor.
    stall_port = free_port()
    stall_log = work / "scheduler-stall.log"
    processes.append(subprocess.Popen(
        [medallion, "scheduler", "--bind", f"127.0.0.1:{stall_port}", "--executor-timeout", "10s"],
        env={**clean_env, "MEDALLION_LOG": "info", "MEDALLION_FAULT_AT": "cluster/scheduler:stall"},
        stdout=subprocess.DEVNULL, stderr=open(stall_log, "w")))
    wait_port(stall_port)
    executor("stall", scheduler_port=stall_port)
    time.sleep(2)
    stalled = runs("stalled", "--cluster", f"df://127.0.0.1:{stall_port}")
    said = "".join(r.stderr for r in stalled)
    cancelled = [l for l in stall_log.read_text(errors="replace").splitlines() if "Cancelling job" in l]
    check("a job its scheduler cancelled as stalled is retried within the run: exit 0, one job cancelled",
          [r.returncode for r in stalled] == [0, 0] and len(cancelled) == 1 and "failed: Cancelled" in said
          and "retrying" in said, ([r.returncode for r in stalled], cancelled, said.strip()[-600:]))
    got = tables("stalled")
    check("... the same tables as the clean runs", not differences(got, clean),
          {t: (len(got[t][0]), got[t][1], len(clean[t][0]), clean[t][1]) for t in differences(got, clean)})

    # 4. No scheduler there.
    upload("nowhere")
    nowhere = med("run", "--cluster", f"df://127.0.0.1:{free_port()}", lake="s3://lake/nowhere", timeout=300)
    errors = [l for l in nowhere.stderr.splitlines() if l.startswith("error")]
    check("no scheduler: silver fails with one clear line naming it (gold, downstream, is skipped)",
          nowhere.returncode == 1 and len(errors) == 1 and "silver/orders" in errors[0]
          and "the scheduler at df://127.0.0.1" in errors[0] and "cannot connect" in errors[0], errors)
    check("... and nothing was committed",
          all(tables("nowhere")[t][0] == "missing" for t in TABLES))
finally:
    for p in processes:
        p.kill()
    moto.terminate()
    if check.failed or sys.exc_info()[0] is not None:
        # Log lines only (a plan Ballista prints spans many lines without a timestamp).
        for log in sorted(work.glob("*.log")):
            lines = [l for l in log.read_text(errors="replace").splitlines() if l[:4].isdigit()]
            print(f"--- {log.name} (last lines)\n" + "\n".join(l[:300] for l in lines[-25:]), flush=True)
    shutil.rmtree(work, ignore_errors=True)

check.summary("cluster: ")
sys.exit(1 if check.failed else 0)
