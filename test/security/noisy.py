"""The programs of the noisy-neighbour suite and its latency figures.

alice's attacks are small Python programs she uploads to ``~/private`` and runs
in her SSH session (in her chroot, under her limits).  Each is bounded: it holds
its peak for ``HOLD`` seconds, then undoes itself (children killed, files
removed), and the suite runs it under ``timeout -s KILL``.  The clients (bob's
latency probe, alice's flood of her own PHP page) run on this machine in the
test host's network namespace: they reach the host over HTTPS as a browser on
another machine would.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass, field

from testhost import Host

#: How long each attack holds its peak (seconds); the probe runs inside it.
HOLD = 16
#: Warm-up before the probe (the attack in full swing), probe time, its request cap.
WARMUP = 2.0
PROBE_SECONDS = 8.0
PROBE_MAX = 2000
#: Caps of the attacks, whatever alice's limits are (the machine is shared).
FORK_CAP = 400
HOG_CAP_MB = 1024
FILL_CAP_MB = 1024
FLOOD_CONCURRENCY = 48

#: A burner per CPU, twice over, at the niceness of her session; prints its nice.
BURN_PY = r"""
import os, sys, time
hold = float(sys.argv[1])
workers = 2 * (os.cpu_count() or 1)
print("nice", os.nice(0), "workers", workers, flush=True)
pids = []
for _ in range(workers):
    pid = os.fork()
    if pid == 0:
        end = time.monotonic() + hold
        while time.monotonic() < end:
            pass
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
print("burned", flush=True)
"""

#: Allocates (and touches) 32 MiB at a time up to the cap; holds what it got.
HOG_PY = r"""
import sys, time
cap, hold = int(sys.argv[1]), float(sys.argv[2])
chunks, got, result = [], 0, ""
try:
    while got < cap:
        chunks.append(b"\x01" * (32 << 20))
        got += 32
    result = "allocated"
except MemoryError:
    result = "refused: MemoryError"
print(f"hog {got} MiB {result}", flush=True)
time.sleep(hold)
"""

#: Forks children that sleep until refused or at the cap; holds them, kills them.
FORK_PY = r"""
import os, signal, sys, time
cap, hold = int(sys.argv[1]), float(sys.argv[2])
children, error = [], "none"
try:
    while len(children) < cap:
        pid = os.fork()
        if pid == 0:
            time.sleep(hold + 5)
            os._exit(0)
        children.append(pid)
except OSError as exc:
    error = exc.strerror
print(f"forked {len(children)} refused: {error}", flush=True)
time.sleep(hold)
for pid in children:
    os.kill(pid, signal.SIGKILL)
for pid in children:
    os.waitpid(pid, 0)
"""

#: Writes 1 MiB at a time into ~/tmp up to the cap (or a refusal); holds; removes it.
FILL_PY = r"""
import os, sys, time
cap, hold = int(sys.argv[1]), float(sys.argv[2])
path = os.path.expanduser("~/tmp/noisy-fill")
got, error, block = 0, "none", b"\x02" * (1 << 20)
try:
    with open(path, "wb") as out:
        while got < cap:
            out.write(block)
            got += 1
        out.flush()
        os.fsync(out.fileno())
except OSError as exc:
    error = exc.strerror
print(f"filled {got} MiB refused: {error}", flush=True)
time.sleep(hold)
os.unlink(path)
"""

#: alice's slow page (her flood's target: a wait and some CPU) and bob's page (the probe's).
ALICE_SLOW_PHP = (
    "<?php usleep(100000); $t = 0; for ($i = 0; $i < 2000000; $i++) { $t += $i; }"
    ' echo "alice-slow $t";\n'
)
BOB_MARK = "bob-page-ok"
BOB_PHP = f'<?php $t = 0; for ($i = 0; $i < 1000000; $i++) {{ $t += $i; }} echo "{BOB_MARK} $t";\n'

#: The HTTPS client: ``probe`` (sequential requests, one connection each) or
#: ``flood`` (``concurrency`` threads doing the same) for ``seconds``; prints JSON.
CLIENT_PY = r"""
import json, socket, ssl, sys, threading, time
mode, name, path, mark = sys.argv[1:5]
seconds, cap, concurrency = float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
request = f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode()
latencies, errors, lock = [], [], threading.Lock()
deadline = time.monotonic() + seconds

def one():
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", 443), timeout=15) as raw:
            with ctx.wrap_socket(raw, server_hostname=name) as conn:
                conn.sendall(request)
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
        status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "none"
        problem = "" if status == "200" and mark.encode() in data else f"HTTP {status}"
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
    elapsed = time.monotonic() - start
    with lock:
        (errors.append(problem) if problem else latencies.append(elapsed))

def loop():
    while time.monotonic() < deadline:
        with lock:
            if len(latencies) + len(errors) >= cap:
                return
        one()
        if mode == "probe":
            time.sleep(0.01)

threads = [threading.Thread(target=loop) for _ in range(concurrency)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"latencies": latencies, "errors": errors}))
"""


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class Latency:
    """The answers of one run of the client: latencies (s) of the good ones, the errors."""

    latencies: list[float]
    errors: list[str] = field(default_factory=list)

    @property
    def p50(self) -> float:
        """Median latency."""
        return percentile(self.latencies, 0.50)

    @property
    def p99(self) -> float:
        """99th percentile latency."""
        return percentile(self.latencies, 0.99)

    def ratios(self, baseline: Latency) -> tuple[float, float]:
        """p50 and p99 against ``baseline``."""
        return self.p50 / baseline.p50, self.p99 / baseline.p99

    def describe(self) -> str:
        """E.g. ``n=300 p50=12.1ms p99=30.2ms errors=0``."""
        return (
            f"n={len(self.latencies)} p50={self.p50 * 1e3:.1f}ms"
            f" p99={self.p99 * 1e3:.1f}ms errors={len(self.errors)}"
        )


def client(
    host: Host,
    mode: str,
    name: str,
    path: str,
    mark: str,
    seconds: float,
    cap: int = PROBE_MAX,
    concurrency: int = 1,
) -> Latency:
    """Run the HTTPS client from outside the host (see CLIENT_PY)."""
    args = [mode, name, path, mark, str(seconds), str(cap), str(concurrency)]
    out = host.net_run([sys.executable, "-c", CLIENT_PY, *args], timeout=seconds + 60)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    return Latency(data["latencies"], data["errors"])


def probe(host: Host, name: str) -> Latency:
    """bob's page latency: sequential requests for PROBE_SECONDS."""
    return client(host, "probe", name, "/lat.php", BOB_MARK, PROBE_SECONDS)


def flood(host: Host, name: str, seconds: float) -> Latency:
    """alice's flood of her own slow page: FLOOD_CONCURRENCY connections for ``seconds``."""
    return client(
        host, "flood", name, "/slow.php", "alice-slow", seconds, 100000, FLOOD_CONCURRENCY
    )


def oom_kills(since: float, cgroup: str) -> list[str]:
    """This machine's kernel ``oom-kill:`` lines after ``since`` (seconds since boot)
    that name a task in ``cgroup`` (the test host's memory cgroup)."""
    out = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        if "oom-kill:" not in line or cgroup not in line:
            continue
        stamp = line.partition("]")[0].strip("[ ")
        if float(stamp or 0) >= since:
            found.append(line)
    return found


def uptime() -> float:
    """This machine's seconds since boot (dmesg's clock)."""
    with open("/proc/uptime") as handle:
        return float(handle.read().split()[0])
