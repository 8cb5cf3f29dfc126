"""Config-poll benchmark: a real gunicorn server under a load generator.

    .venv/bin/python tests/bench/config_poll.py [--seconds N] [--rounds R] [--concurrency C]
                                                [--database-url URL] [--workers W]

It creates its own database (a fresh SQLite file under var/bench/, or the Postgres database
named by --database-url, dropped and re-created), migrates it, creates environment
"production" with 20 features (each a prompt version and a release, through the real
services) and an SDK key with scope config:read. Then it starts gunicorn (`controlplane.wsgi`,
sync workers, DEBUG off) on 127.0.0.1 and measures, for the same duration and concurrency, in
interleaved rounds:

    bare        GET /bench/bare: a plain Django view returning constant bytes of the same
                length as the config body (same server, same middleware)
    config 200  GET /api/v1/config without If-None-Match
    config 304  GET /api/v1/config with the current ETag in If-None-Match

and prints requests/s, p50, p99 and the ratio to the bare view. The load generator is `wrk`
when it is on PATH, otherwise a Python one (processes with a keep-alive http.client loop).
Unexpected statuses are counted and printed. The config throttle is raised to THROTTLE_CONFIG
(default 1000000/min) so that it never answers 429 during the run. The server is always
killed at the end. Figures only: nothing here asserts on timings.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / "var" / "bench"
HOST = "127.0.0.1"
FEATURES = 20
SETTINGS_MODULE = "tests.bench.bench_settings"
DEFAULT_THROTTLE = "1000000/min"

SYSTEM_PROMPT = (
    "You are a support assistant for {{ product }}. Summarise the customer's ticket in at most "
    "three sentences, name the product area, the customer's sentiment and the next action. "
    "Never invent order numbers; if the ticket lacks one, say so. Answer in {{ language }}."
)


# --------------------------------------------------------------------------- environment


def server_env(args, bare_bytes: int = 4096) -> dict[str, str]:
    """The process environment of the seeding step and of gunicorn (identical settings)."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE=SETTINGS_MODULE,
        PYTHONPATH=str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        DATABASE_URL=args.database_url,
        SECRET_KEY="bench-" + "k" * 50,
        DEBUG="0",
        ALLOWED_HOSTS=HOST,
        THROTTLE_CONFIG=args.throttle,
        LOG_LEVEL="WARNING",
        BENCH_BARE_BYTES=str(bare_bytes),
    )
    env.pop("SECRET_KEY_FILE", None)
    return env


def is_postgres(url: str) -> bool:
    return url.split(":", 1)[0] in ("postgres", "postgresql", "pgsql", "psql")


def postgres_admin_url(url: str) -> tuple[str, str]:
    """(URL of the `postgres` maintenance database, name of the benchmark database)."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name:
        raise SystemExit("--database-url must name a database, e.g. postgres://postgres@127.0.0.1:5432/shipway_bench")
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the benchmark only talks to a database on the loopback interface")
    admin = urlunsplit(("postgresql", parts.netloc, "/postgres", parts.query, ""))
    return admin, name


def database_create(url: str) -> None:
    if is_postgres(url):
        import psycopg
        from psycopg import sql

        admin, name = postgres_admin_url(url)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    else:
        path = Path(urlsplit(url).path)
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)


def database_drop(url: str) -> None:
    if is_postgres(url):
        import psycopg
        from psycopg import sql

        admin, name = postgres_admin_url(url)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --------------------------------------------------------------------------- seeding


def seed_main() -> None:
    """Runs in a child process (`--seed`) with the server's environment: migrate, create the
    data through the real services, print the SDK key and the snapshot's size and ETag."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from apps.core.services import environment_create, sdk_key_create
    from apps.prompts.services import feature_create, prompt_version_create
    from apps.rollouts import selectors
    from apps.rollouts.services import release_create

    call_command("migrate", verbosity=0, interactive=False)
    environment = environment_create(key="production", name="Production")
    for i in range(FEATURES):
        feature = feature_create(key=f"feature-{i:02d}", name=f"Feature {i:02d}",
                                 description="A benchmark feature", runbook_url="https://example.invalid/runbook",
                                 oncall_contact="oncall@example.invalid")
        version = prompt_version_create(
            feature=feature, version="1.0.0", model="gpt-4o-mini",
            messages=[{"role": "system", "content": SYSTEM_PROMPT},
                      {"role": "user", "content": "{{ ticket }}"}],
            params={"temperature": 0.2, "max_tokens": 400}, fallback_models=["gpt-4o"],
            changelog="first version",
        )
        release_create(feature=feature, environment=environment, stable_version=version,
                       review_sample_rate=0.05)
    _, secret = sdk_key_create(environment=environment, name="bench", scopes=["config:read"])
    snapshot = selectors.snapshot_get(environment_id=environment.pk)
    body = snapshot.body.encode("utf-8")
    print(json.dumps({"sdk_key": secret, "etag": snapshot.etag, "bytes": len(body),
                      "features": len(json.loads(body)["features"]), "vendor": connection.vendor}))


def seed(args) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--seed"], env=server_env(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit("seeding failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def server_start(args, bare_bytes: int, log_path: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
    cmd = [gunicorn, "controlplane.wsgi:application", "--bind", f"{HOST}:{port}",
           "--workers", str(args.workers), "--worker-class", "sync", "--timeout", "60",
           "--log-level", "warning", "--error-logfile", str(log_path)]
    proc = subprocess.Popen(cmd, env=server_env(args, bare_bytes), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.returncode}; see {log_path}")
        try:
            if get(port, "/bench/bare")[0] == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer within 60 s; see {log_path}")


def server_stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the master and its workers
        proc.wait(timeout=15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


# --------------------------------------------------------------------------- load


@dataclass
class Result:
    name: str
    expected: int
    requests: int = 0
    seconds: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    socket_errors: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def unexpected(self) -> dict[int, int]:
        return {s: n for s, n in self.statuses.items() if s != self.expected}


WRK_LUA = """
wrk.method = "GET"
wrk.headers = %(headers)s

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end

function done(summary, latency, requests)
  local counts = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do counts[status] = (counts[status] or 0) + n end
  end
  local parts = {}
  for status, n in pairs(counts) do table.insert(parts, string.format('"%%d": %%d', status, n)) end
  local e = summary.errors
  io.write(string.format('BENCH_JSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, '
    .. '"socket_errors": %%d, "statuses": {%%s}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, table.concat(parts, ", ")))
end
"""


def lua_table(headers: dict[str, str]) -> str:
    return "{" + ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()) + "}"


def run_wrk(port: int, path: str, headers: dict, args, result: Result) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", dir=BENCH_DIR, delete=False) as f:
        f.write(WRK_LUA % {"headers": lua_table(headers)})
        script = f.name
    try:
        threads = min(args.wrk_threads, args.concurrency)
        cmd = ["wrk", "-t", str(threads), "-c", str(args.concurrency), "-d", f"{args.seconds}s",
               "--timeout", "10s", "--latency", "-s", script, f"http://{HOST}:{port}{path}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 60)
    finally:
        os.unlink(script)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise SystemExit(f"wrk failed:\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    result.requests = data["requests"]
    result.seconds = data["duration_us"] / 1e6
    result.p50_ms = data["p50_us"] / 1000
    result.p99_ms = data["p99_us"] / 1000
    result.statuses = {int(k): v for k, v in data["statuses"].items()}
    result.socket_errors = data["socket_errors"]


def _client(port: int, path: str, headers: dict, start_at: float, stop_at: float, max_requests: int, queue) -> None:
    """One simulated poller: a keep-alive connection in a closed loop. http.client reconnects
    by itself when the server closes the connection (gunicorn sync workers do)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    while time.monotonic() < start_at:
        time.sleep(0.001)
    while time.monotonic() < stop_at and len(latencies) < max_requests:
        t0 = time.perf_counter()
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            continue
        latencies.append(time.perf_counter() - t0)
        statuses[response.status] = statuses.get(response.status, 0) + 1
    conn.close()
    queue.put((latencies, statuses, errors))


def run_python(port: int, path: str, headers: dict, args, result: Result) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.monotonic() + 1.0 + 0.05 * args.concurrency  # let every process start first
    stop_at = start_at + args.seconds
    procs = [ctx.Process(target=_client, args=(port, path, headers, start_at, stop_at, args.max_requests, queue))
             for _ in range(args.concurrency)]
    for p in procs:
        p.start()
    latencies: list[float] = []
    try:
        for _ in procs:
            lat, statuses, errors = queue.get(timeout=args.seconds + 60)
            latencies += lat
            for status, n in statuses.items():
                result.statuses[status] = result.statuses.get(status, 0) + n
            result.socket_errors += errors
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    result.requests = len(latencies)
    result.seconds = args.seconds
    if latencies:
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        result.p50_ms, result.p99_ms = cuts[49] * 1000, cuts[98] * 1000


def measure(name: str, expected: int, port: int, path: str, headers: dict, args) -> Result:
    result = Result(name=name, expected=expected)
    (run_wrk if args.loader == "wrk" else run_python)(port, path, headers, args, result)
    return result


def combine(rounds: list[Result]) -> Result:
    """One endpoint's rounds as one figure: requests and seconds added up, the median of the
    rounds' p50 and p99, statuses and socket errors added up."""
    total = Result(name=rounds[0].name, expected=rounds[0].expected)
    for r in rounds:
        total.requests += r.requests
        total.seconds += r.seconds
        total.socket_errors += r.socket_errors
        for status, n in r.statuses.items():
            total.statuses[status] = total.statuses.get(status, 0) + n
    total.p50_ms = statistics.median(r.p50_ms for r in rounds)
    total.p99_ms = statistics.median(r.p99_ms for r in rounds)
    return total


# --------------------------------------------------------------------------- report


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {model}; Python {platform.python_version()}"


def report(results: list[Result], args, seeded: dict) -> None:
    bare = results[0].rps
    print()
    print(f"database {seeded['vendor']}, {seeded['features']} features, config body {seeded['bytes']} bytes; "
          f"gunicorn {args.workers} sync workers; loader {args.loader} "
          f"({args.concurrency} connections, {args.rounds} rounds of {args.seconds} s each); "
          f"THROTTLE_CONFIG={args.throttle}")
    print(f"machine: {machine()}")
    print()
    header = f"{'endpoint':<12} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs bare':>8}  unexpected"
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = f"{100 * r.rps / bare:.0f} %" if bare else "-"
        odd = ", ".join(f"{n}x{s}" for s, n in sorted(r.unexpected.items()))
        if r.socket_errors:
            odd = (odd + ", " if odd else "") + f"{r.socket_errors} socket errors"
        print(f"{r.name:<12} {r.requests:>9} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {ratio:>8}  "
              f"{odd or 'none'}")
    if any(429 in r.statuses for r in results):
        print("\n429s: the config throttle is in the way; raise --throttle (THROTTLE_CONFIG).")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "database": seeded["vendor"], "machine": machine(), "workers": args.workers,
            "loader": args.loader, "concurrency": args.concurrency, "seconds": args.seconds,
            "body_bytes": seeded["bytes"],
            "results": [{"name": r.name, "requests": r.requests, "rps": round(r.rps, 1),
                         "p50_ms": round(r.p50_ms, 2), "p99_ms": round(r.p99_ms, 2),
                         "unexpected": r.unexpected, "socket_errors": r.socket_errors} for r in results],
        }, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="duration of each measurement (default 10)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds; each measures every endpoint for --seconds (default 3)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent connections (default 8)")
    parser.add_argument("--database-url", default=None,
                        help="default: a fresh SQLite file under var/bench/; e.g. "
                             "postgres://postgres@127.0.0.1:5432/shipway_bench (dropped and re-created)")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn sync workers (default 3)")
    parser.add_argument("--loader", choices=["auto", "wrk", "python"], default="auto",
                        help="load generator (default: wrk when on PATH, else Python)")
    parser.add_argument("--wrk-threads", type=int, default=1,
                        help="wrk threads (default 1: on a small machine the loader competes with the server)")
    parser.add_argument("--max-requests", type=int, default=1_000_000,
                        help="Python loader: upper bound of requests per connection")
    parser.add_argument("--throttle", default=DEFAULT_THROTTLE,
                        help=f"THROTTLE_CONFIG for the server (default {DEFAULT_THROTTLE}, so it never answers 429)")
    parser.add_argument("--keep-db", action="store_true", help="keep the database afterwards")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--seed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        seed_main()
        return 0

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    if args.database_url is None:
        args.database_url = f"sqlite:///{BENCH_DIR / 'config_poll.sqlite3'}"
    if args.loader == "auto":
        args.loader = "wrk" if shutil.which("wrk") else "python"
    if args.seconds < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--seconds, --concurrency and --rounds must be at least 1")

    database_create(args.database_url)
    server = None
    try:
        print(f"seeding {args.database_url} ...", flush=True)
        seeded = seed(args)
        print(f"starting gunicorn ({args.workers} workers) ...", flush=True)
        server, port = server_start(args, seeded["bytes"], BENCH_DIR / "gunicorn.log")

        auth = {"Authorization": f"Bearer {seeded['sdk_key']}"}
        cond = auth | {"If-None-Match": seeded["etag"]}
        # Sanity: each endpoint answers what it should before it is measured.
        status, headers, body = get(port, "/api/v1/config", auth)
        if status != 200 or headers.get("etag") != seeded["etag"] or len(body) != seeded["bytes"]:
            raise SystemExit(f"config answered {status} {headers.get('etag')} {len(body)} bytes, "
                             f"expected 200 {seeded['etag']} {seeded['bytes']} bytes")
        status, _, body = get(port, "/api/v1/config", cond)
        if status != 304 or body:
            raise SystemExit(f"conditional config answered {status} with {len(body)} bytes, expected 304")
        status, _, body = get(port, "/bench/bare")
        if status != 200 or len(body) != seeded["bytes"]:
            raise SystemExit(f"bare view answered {status} with {len(body)} bytes")
        for _ in range(50 * args.workers):  # warm every worker (imports, URL resolver, connections)
            get(port, "/bench/bare")
            get(port, "/api/v1/config", auth)
            get(port, "/api/v1/config", cond)

        plan = [("bare", 200, "/bench/bare", {}), ("config 200", 200, "/api/v1/config", auth),
                ("config 304", 304, "/api/v1/config", cond)]
        # Rounds interleave the endpoints, so a load change on the machine while the benchmark
        # runs shifts all three figures alike instead of skewing the ratios.
        rounds: dict[str, list[Result]] = {name: [] for name, *_ in plan}
        for round_number in range(1, args.rounds + 1):
            for name, expected, path, headers in plan:
                print(f"round {round_number}/{args.rounds}: measuring {name} for {args.seconds} s ...", flush=True)
                rounds[name].append(measure(name, expected, port, path, headers, args))
        report([combine(rs) for rs in rounds.values()], args, seeded)
    finally:
        if server is not None:
            server_stop(server)
        if not args.keep_db:
            database_drop(args.database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
