"""Ingestion benchmark (`make bench-ingest`): events/s through the HTTP batch endpoint,
single-event latency at 32 concurrent clients, and the same events written straight into
the same tables with COPY + the same dedup, as a baseline measured in the same run.

    python bench/ingest.py [--workers 2] [--threads 16] [--clients 4] [--batches 400]
                           [--with-aggregation]

Prints one JSON object. Server, database and clients share this machine's cores, so the
absolute numbers are lower bounds; the ratio to the baseline is the figure to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database

BATCH = 500
BASELINE_ROUNDS = 3
BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)


def events(prefix: str, count: int) -> list[dict]:
    return [
        {
            "customer_id": f"cust_{n % 1000}",
            "metric_key": "api_calls",
            "value": n % 97 + 1,
            "timestamp": (BASE + timedelta(milliseconds=n)).isoformat(),
            "idempotency_key": f"{prefix}-{n}",
            "properties": {"region": "eu-west-1", "route": f"/v1/r{n % 13}"},
        }
        for n in range(count)
    ]


def _connection(port: int) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=60)


class KeepAliveClient:
    """A lean HTTP/1.1 keep-alive client: each request's bytes are prepared before the
    timed window and the response is read by Content-Length, so the load generator, which
    shares the cores with the server under test, spends as little CPU as wrk would
    (http.client cost ~0.23 ms of CPU per request here, 15% of the machine under load)."""

    def __init__(self, port: int, secret: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = (
            f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {secret}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        self.buffer = b""

    def prepare(self, path: str, body: bytes) -> bytes:
        return (
            f"POST {path} HTTP/1.1\r\n".encode()
            + self.head
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    def send(self, request: bytes) -> tuple[int, bytes]:
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in lines[1:]
            if line[:15].lower() == b"content-length:"
        )
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, body

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk


def batch_client(
    port: int, secret: str, bodies: list[bytes], start: float, results: multiprocessing.Queue
) -> None:
    client = KeepAliveClient(port, secret)
    requests = [client.prepare("/v1/events/batch", body) for body in bodies]
    while time.time() < start:
        time.sleep(0.001)
    accepted = 0
    for request in requests:
        status, body = client.send(request)
        payload = json.loads(body)
        assert status == 207, payload
        accepted += payload["accepted"]
    results.put((accepted, time.time()))


def single_client(
    port: int, secret: str, bodies: list[bytes], threads: int, results: multiprocessing.Queue
) -> None:
    latencies: list[float] = []
    lock = threading.Lock()
    per_thread = len(bodies) // threads

    def run(chunk: list[bytes]) -> None:
        client = KeepAliveClient(port, secret)
        requests = [client.prepare("/v1/events", body) for body in chunk]
        mine = []
        for request in requests:
            started = time.perf_counter()
            status, body = client.send(request)
            mine.append(time.perf_counter() - started)
            assert status == 202, body
        with lock:
            latencies.extend(mine)

    workers = [
        threading.Thread(target=run, args=(bodies[i * per_thread : (i + 1) * per_thread],))
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(latencies)


def single_load(port: int, secret: str, bodies: list[bytes]) -> list[float]:
    """The single-event load: 32 keep-alive clients (4 processes x 8 threads) posting
    `bodies` to /v1/events; every request's latency in seconds, sorted."""
    per = len(bodies) // 4
    queue: multiprocessing.Queue = multiprocessing.Queue()
    clients = [
        multiprocessing.Process(
            target=single_client, args=(port, secret, bodies[i * per : (i + 1) * per], 8, queue)
        )
        for i in range(4)
    ]
    for client in clients:
        client.start()
    latencies = sorted(x for _ in clients for x in queue.get(timeout=600))
    for client in clients:
        client.join()
    return latencies


def server_rss(pid: int) -> dict[str, int]:
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
        return {f"{p.pid}": p.memory_info().rss for p in processes}
    except psutil.NoSuchProcess:
        return {}


def cpu_seconds(server_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the server's processes, by PostgreSQL's
    and by this script's finished children (the load generators, once joined)."""
    totals = {"server": 0.0, "postgres": 0.0}
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(server_pid)
        for process in [root, *root.children(recursive=True)]:
            totals["server"] += sum(process.cpu_times()[:2])
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "postgres":
            with contextlib.suppress(psutil.NoSuchProcess):
                totals["postgres"] += sum(process.cpu_times()[:2])
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    totals["clients"] = children.ru_utime + children.ru_stime
    return totals


def cpu_ms_per(before: dict[str, float], after: dict[str, float], units: int) -> dict[str, float]:
    """Where the CPU of a phase went, per request (ms): what bounds it on shared cores."""
    return {name: round((after[name] - before[name]) / units * 1000, 3) for name in before}


def copy_baseline(
    url: str, bodies_events: list[list[dict]], connections: int
) -> tuple[float, dict[str, float]]:
    """The same events, same tables, same dedup (event_keys ON CONFLICT), via COPY. Like
    the server, each connection is open and has its temp table before the clock starts.
    Returns the seconds and the CPU per batch (ms) of PostgreSQL and of this loader, read
    while the connections are still open (a closed backend's CPU time is gone with it)."""
    ready = threading.Barrier(connections + 1)
    finished = threading.Barrier(connections + 1)
    release = threading.Event()

    def load(chunks: list[list[dict]]) -> None:
        with psycopg.connect(url) as connection:
            connection.execute(
                "CREATE TEMP TABLE incoming (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            connection.commit()
            ready.wait()
            for chunk in chunks:
                with connection.transaction():
                    with connection.cursor().copy(
                        "COPY incoming (id, customer_id, metric_key, value, timestamp, properties, idempotency_key, content_sha256, digest, region, ingest_job_id) FROM STDIN"
                    ) as copy:
                        for event in chunk:
                            copy.write_row(
                                (
                                    uuid.uuid4().hex,
                                    event["customer_id"],
                                    event["metric_key"],
                                    event["value"],
                                    event["timestamp"],
                                    json.dumps(event["properties"]),
                                    event["idempotency_key"],
                                    "0" * 64,
                                    0,  # digest: a constant, like the content hash above
                                    "bench",
                                    0,
                                )
                            )
                    connection.execute(
                        "WITH new AS (INSERT INTO event_keys (idempotency_key, content_sha256, event_id, event_timestamp) "
                        "SELECT idempotency_key, content_sha256, id, timestamp FROM incoming ORDER BY 1 ON CONFLICT DO NOTHING RETURNING idempotency_key) "
                        "INSERT INTO events SELECT i.* FROM incoming i JOIN new USING (idempotency_key)"
                    )
            finished.wait()
            release.wait(60)

    failures: list[BaseException] = []

    def guarded(chunks: list[list[dict]]) -> None:
        try:
            load(chunks)
        except BaseException as error:  # a baseline that failed must not print a rate
            failures.append(error)
            ready.abort()
            finished.abort()

    groups = [bodies_events[i::connections] for i in range(connections)]
    threads = [threading.Thread(target=guarded, args=(group,)) for group in groups]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        ready.wait()
    postgres, loader = cpu_seconds(os.getpid())["postgres"], time.process_time()
    started = time.perf_counter()
    with contextlib.suppress(threading.BrokenBarrierError):
        finished.wait()
    seconds = time.perf_counter() - started
    cpu = {
        "postgres": cpu_seconds(os.getpid())["postgres"] - postgres,
        "loader": time.process_time() - loader,
    }
    release.set()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError("the COPY baseline failed") from failures[0]
    return seconds, {name: round(used / len(bodies_events) * 1000, 3) for name, used in cpu.items()}


def machine_speed_ms() -> float:
    """How fast this machine runs plain Python right now: the median of three timings of
    a fixed interpreter loop (ms; lower is faster). The machine's speed drifts by ±30%
    within an hour; printed with the figures so runs of different sittings can be put
    side by side (it is not used in any figure)."""
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for number in range(1_000_000):
            total += number
        timings.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(timings), 1)


def settle(server_pid: int, *, idle_cpu_seconds: float = 0.02, window: float = 0.5) -> None:
    """Wait (at most 30 s) until the server's processes use less than `idle_cpu_seconds`
    of CPU in `window`: what warming up started has finished before the clock starts."""
    previous = cpu_seconds(server_pid)["server"]
    for _ in range(int(30 / window)):
        time.sleep(window)
        current = cpu_seconds(server_pid)["server"]
        if current - previous < idle_cpu_seconds:
            return
        previous = current


def warm_up(port: int, secret: str, server_pid: int, connections: int = 32) -> None:
    """Steady state is what the figures describe: before the clock, every worker has
    served batches and single events (its database pools, staging tables, partitions and
    the bus's first connection exist). Warm-up events use keys of their own and are not
    counted."""
    prefix = f"warm-{uuid.uuid4().hex[:8]}"

    def one(number: int) -> None:
        client = KeepAliveClient(port, secret)
        for round_ in range(2):
            batch = json.dumps({"events": events(f"{prefix}-{number}-{round_}", BATCH)})
            assert client.send(client.prepare("/v1/events/batch", batch.encode()))[0] == 207
        for event in events(f"{prefix}-single-{number}", 4):
            assert client.send(client.prepare("/v1/events", json.dumps(event).encode()))[0] == 202
        client.sock.close()

    threads = [threading.Thread(target=one, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    settle(server_pid)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--singles", type=int, default=6400)
    parser.add_argument(
        "--with-aggregation",
        action="store_true",
        help="let the broker deliver events.ingested, so folding shares the cores during the "
        "run (default: the ingest function alone, as its own pods run it in a cluster)",
    )
    args = parser.parse_args()

    url = fresh_database("abaxus_bench")
    os.environ["DATABASE_URL"] = url
    secret = "abx_bench_" + uuid.uuid4().hex
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "ABAXUS_BOOTSTRAP_KEY": secret,
        "PORT": "18080",
        "WORKERS": str(args.workers),
        "THREADS": str(args.threads),
        "ABAXUS_DEV_TICKS": "false",
        "ABAXUS_DEV_DELIVERIES": "true" if args.with_aggregation else "false",
        "ABAXUS_LOG_LEVEL": "WARNING",
        "ABAXUS_DB_POOL_SIZE": str(args.threads + 2),
    }
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("INSERT INTO metrics (key) VALUES ('api_calls')")
        connection.execute(
            "INSERT INTO metric_versions (metric_key, version, name, unit, aggregation, effective_from) VALUES ('api_calls', 1, 'API calls', 'call', 'sum', '2020-01-01Z')"
        )
    server = subprocess.Popen(
        [sys.executable, "-m", "functions.cli", "dev"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                connection = _connection(18080)
                connection.request("GET", "/readyz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        warm_up(18080, secret, server.pid)
        speed_before = machine_speed_ms()
        # Pre-serialize every request body so the clients spend the timed window sending.
        per_client = args.batches // args.clients
        batch_events = [
            events(f"b{c}-{b}", BATCH) for c in range(args.clients) for b in range(per_client)
        ]
        bodies = [json.dumps({"events": chunk}).encode() for chunk in batch_events]
        rss_peaks: dict[str, int] = {}
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.is_set():
                for pid, rss in server_rss(server.pid).items():
                    rss_peaks[pid] = max(rss_peaks.get(pid, 0), rss)
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        results: multiprocessing.Queue = multiprocessing.Queue()
        start = time.time() + 1.0
        batch_cpu = cpu_seconds(server.pid)
        clients = [
            multiprocessing.Process(
                target=batch_client,
                args=(18080, secret, bodies[c * per_client : (c + 1) * per_client], start, results),
            )
            for c in range(args.clients)
        ]
        for client in clients:
            client.start()
        finished = [results.get(timeout=600) for _ in clients]
        for client in clients:
            client.join()
        batch_seconds = max(end for _, end in finished) - start
        accepted = sum(n for n, _ in finished)
        batch_cpu_ms = cpu_ms_per(batch_cpu, cpu_seconds(server.pid), len(bodies))

        single_bodies = [json.dumps(event).encode() for event in events("single", args.singles)]
        single_started = time.perf_counter()
        single_cpu = cpu_seconds(server.pid)
        latencies = single_load(18080, secret, single_bodies)
        single_seconds = time.perf_counter() - single_started
        single_cpu_ms = cpu_ms_per(single_cpu, cpu_seconds(server.pid), len(latencies))
        stop_sampling.set()
        sampler.join()
    finally:
        server.terminate()
        server.wait(timeout=30)

    # The baseline is short (~3 s) and as noisy as the machine: three rounds (new keys
    # each), the median one is the baseline.
    rounds = []
    for round_ in range(BASELINE_ROUNDS):
        baseline_events = [
            events(f"copy{round_}-{c}-{b}", BATCH)
            for c in range(args.clients)
            for b in range(per_client)
        ]
        seconds, cpu_ms = copy_baseline(url, baseline_events, args.clients)
        rounds.append((len(baseline_events) * BATCH / seconds, seconds, cpu_ms))
    baseline_rate, baseline_seconds, baseline_cpu_ms = sorted(rounds, key=lambda r: r[0])[
        len(rounds) // 2
    ]
    http_rate = accepted / batch_seconds
    speed_after = machine_speed_ms()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000, 2)

    print(
        json.dumps(
            {
                "workers": args.workers,
                "threads": args.threads,
                "client_processes": args.clients,
                "aggregation_during_run": args.with_aggregation,
                "machine_python_loop_ms_before_after": [speed_before, speed_after],
                "batch": {
                    "events": accepted,
                    "seconds": round(batch_seconds, 2),
                    "events_per_second": round(http_rate),
                    "cpu_ms_per_batch": batch_cpu_ms,
                },
                "copy_baseline": {
                    "events": len(baseline_events) * BATCH,
                    "seconds": round(baseline_seconds, 2),
                    "events_per_second": round(baseline_rate),
                    "rounds_events_per_second": [round(rate) for rate, _, _ in rounds],
                    "cpu_ms_per_batch": baseline_cpu_ms,
                },
                "ratio_http_to_copy": round(http_rate / baseline_rate, 3),
                "single": {
                    "requests": len(latencies),
                    "concurrency": 32,
                    "requests_per_second": round(len(latencies) / single_seconds),
                    "p50_ms": pct(50),
                    "p95_ms": pct(95),
                    "p99_ms": pct(99),
                    "mean_ms": round(statistics.mean(latencies) * 1000, 2),
                    "cpu_ms_per_request": single_cpu_ms,
                },
                "server_peak_rss_mib": {
                    pid: round(rss / 2**20, 1) for pid, rss in sorted(rss_peaks.items())
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
