"""Helpers the Python test scripts share: named checks that count passes and failures, and
local ports for the servers they start."""
import json
import shutil
import socket
import subprocess
import time


class Checks:
    """`check(name, ok, detail)`: prints `ok`/`FAIL` with the name (and the detail), counts both;
    `summary(label)` prints the counts and then every failure again, last, where a CI log's tail
    shows them even when the middle of a long log is cut."""

    def __init__(self):
        self.passed = self.failed = 0
        self.failures = []

    def __call__(self, name, ok, detail=""):
        self.passed += bool(ok)
        self.failed += not ok
        line = f"{'ok  ' if ok else 'FAIL'} {name}{': ' + str(detail) if detail else ''}"
        if not ok:
            self.failures.append(line)
        print(line, flush=True)

    def summary(self, label):
        print(f"{label}{self.passed} passed, {self.failed} failed", flush=True)
        for line in self.failures:
            print(line[:2000], flush=True)


def stacks(pid):
    """Every thread's backtrace of process `pid` (gdb, if installed), its last 400 lines."""
    if not shutil.which("gdb"):
        return "(gdb is not installed)"
    bt = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt"],
                        capture_output=True, text=True, timeout=120)
    return "\n".join(bt.stdout.splitlines()[-400:])


def finish(process, timeout, name):
    """Waits for `process` (started with text pipes) up to `timeout` s, as `subprocess.run` does,
    except that a process still running then is not just killed: its threads' stacks are printed,
    and its output so far kept, so a hang says where it waits. Returns a `CompletedProcess` (a
    negative return code once killed)."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{name}: still running after {timeout} s; its stacks:\n{stacks(process.pid)}", flush=True)
        process.kill()
        out, err = process.communicate()
        err = (err or "") + f"\n(killed after {timeout} s)"
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run(cmd, env, timeout, name):
    """`cmd` run to its end, its output captured as text, as `subprocess.run` does, but a hang
    past `timeout` s is reported by [`finish`] (stacks printed, output kept, a failed return code)
    instead of an exception that ends the script."""
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return finish(process, timeout, name)


def free_port():
    """A TCP port on 127.0.0.1 nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    """Returns once something accepts connections on 127.0.0.1:`port`; raises after `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def moto_user(endpoint):
    """On a moto server started with INITIAL_NO_AUTH_ACTION_COUNT=4: an IAM user allowed every S3
    action (3 calls; the 4th is the caller's bucket). Returns its (access key id, secret)."""
    import boto3

    boot = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="boot", aws_secret_access_key="boot")
    iam = boto3.client("iam", **boot)
    iam.create_user(UserName="medallion")
    key = iam.create_access_key(UserName="medallion")["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="medallion", PolicyName="lake", PolicyDocument=json.dumps(policy))
    return key["AccessKeyId"], key["SecretAccessKey"]
