"""Ingest benchmark: sustained events/s through `POST /api/v1/events` on a real gunicorn server,
beside the raw `COPY` rate of the same rows into the same table on the same database.

    .venv/bin/python tests/bench/ingest.py [--seconds N] [--concurrency C] [--workers W]
                                           [--batch B] [--database-url URL]

It needs Postgres (COPY): the database named by --database-url (default
postgres://postgres@127.0.0.1:5432/shipway_bench_ingest) is dropped and re-created, migrated,
and seeded through the real services with environment "production", one feature with three
prompt versions, the default model prices and an SDK key with scope events:write. Then:

    ingest   C client processes, each a keep-alive loop posting batches of B (default 500)
             new events (unique event_ids, a mix of versions, arms, models and outcomes, no
             cost_usd so every event is priced) for N seconds; events/s = accepted / N.
             Each next body comes from a pre-serialized template by one bytes.replace, so
             the load generator takes little CPU from the server on a small machine.
             Every answer is checked: a non-200 or a rejected event is counted and printed.
    copy     the same number of rows, with the same column values the ingest path writes
             (computed cost included), streamed with psycopg's `cursor.copy()` into
             metrics_callevent in one COPY and committed; events/s = rows / elapsed.

and prints both rates and their ratio (target: ingest >= 30 % of COPY). The server runs with
the embedded settings but an in-memory Celery broker (the rollup enqueue after each commit
is real, its messages are dropped), DEBUG off. The server is always stopped and the database
dropped at the end (unless --keep-db). Figures only: nothing here asserts on timings.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.bench.config_poll import (  # noqa: E402 - after the sys.path fix when run as a script
    BENCH_DIR,
    HOST,
    database_create,
    database_drop,
    is_postgres,
    machine,
    server_env,
    server_start,
    server_stop,
)

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/shipway_bench_ingest"
FEATURE = "bench-summarizer"
VERSIONS = ("1.0.0", "1.1.0", "1.2.0")
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-sonnet")
OUTCOMES = ("success",) * 18 + ("error", "timeout")


# --------------------------------------------------------------------------- seeding


def seed_main() -> None:
    """Child process (`--seed`) with the server's environment: migrate and create the data
    through the real services; print the SDK key."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from apps.core.services import environment_create, sdk_key_create
    from apps.metrics.pricing import model_prices_seed_defaults
    from apps.prompts.services import feature_create, prompt_version_create

    call_command("migrate", verbosity=0, interactive=False)
    environment = environment_create(key="production", name="Production")
    feature = feature_create(key=FEATURE, name="Bench summarizer")
    for version in VERSIONS:
        prompt_version_create(feature=feature, version=version, model="gpt-4o-mini",
                              template="Summarise: {{ ticket }}")
    model_prices_seed_defaults()
    _, secret = sdk_key_create(environment=environment, name="bench", scopes=["events:write"])
    print(json.dumps({"sdk_key": secret, "vendor": connection.vendor}))


def seed(env: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--seed"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit("seeding failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- events


def event(client: int, seq: int, i: int, occurred_at: str) -> dict:
    """The n-th event of a client: deterministic, varied like real traffic."""
    n = seq * 1000 + i
    inp = 400 + (n * 37) % 3000
    return {
        "event_id": f"bench-{client}-{seq}-{i}", "feature": FEATURE, "prompt_version": VERSIONS[n % 3],
        "arm": "canary" if n % 20 == 0 else "stable", "model": MODELS[n % 3], "latency_ms": 200 + (n * 53) % 2500,
        "input_tokens": inp, "cached_tokens": (inp // 2) if n % 4 == 0 else 0, "output_tokens": 50 + (n * 11) % 400,
        "cache_hit": n % 10 == 0, "outcome": OUTCOMES[n % 20], "error_type": "",
        "user_key": f"user-{n % 5000:05d}", "request_id": f"req-{client}-{seq}-{i}", "occurred_at": occurred_at,
    }


def batch_body(client: int, seq: int, size: int, occurred_at: str) -> bytes:
    return json.dumps({"events": [event(client, seq, i, occurred_at) for i in range(size)]},
                      separators=(",", ":")).encode()


SEQ_MARK = b"SEQMARK"


def batch_template(client: int, size: int, occurred_at: str) -> bytes:
    """A batch whose event_ids and request_ids hold SEQ_MARK: the load generator makes each next
    batch with one bytes.replace, so on a small machine it takes little CPU from the server."""
    events = [event(client, 0, i, occurred_at) for i in range(size)]
    for i, e in enumerate(events):
        e["event_id"] = f"bench-{client}-SEQMARK-{i}"
        e["request_id"] = f"req-{client}-SEQMARK-{i}"
    return json.dumps({"events": events}, separators=(",", ":")).encode()


def _client(port: int, secret: str, client: int, size: int, occurred_at: str, start_at: float, stop_at: float,
            queue) -> None:
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    accepted = requests = 0
    statuses: dict[int, int] = {}
    rejected = errors = 0
    latencies: list[float] = []
    seq = 0
    template = batch_template(client, size, occurred_at)
    body = template.replace(SEQ_MARK, b"0")
    while time.monotonic() < start_at:
        time.sleep(0.001)
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/api/v1/events", body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            continue
        latencies.append(time.perf_counter() - t0)
        requests += 1
        statuses[response.status] = statuses.get(response.status, 0) + 1
        if response.status == 200:
            counts = json.loads(data)["counts"]
            accepted += counts["accepted"]
            rejected += counts["rejected"]
        seq += 1
        body = template.replace(SEQ_MARK, str(seq).encode())  # the next batch: all new event_ids
    conn.close()
    queue.put({"accepted": accepted, "requests": requests, "statuses": statuses, "rejected": rejected,
               "errors": errors, "latencies": latencies})


def run_ingest(port: int, secret: str, args, occurred_at: str) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.monotonic() + 1.0 + 0.1 * args.concurrency
    stop_at = start_at + args.seconds
    procs = [ctx.Process(target=_client, args=(port, secret, c, args.batch, occurred_at, start_at, stop_at, queue))
             for c in range(args.concurrency)]
    for p in procs:
        p.start()
    total = {"accepted": 0, "requests": 0, "statuses": {}, "rejected": 0, "errors": 0, "latencies": []}
    try:
        for _ in procs:
            part = queue.get(timeout=args.seconds + 120)
            for key in ("accepted", "requests", "rejected", "errors"):
                total[key] += part[key]
            total["latencies"] += part["latencies"]
            for status, n in part["statuses"].items():
                total["statuses"][status] = total["statuses"].get(status, 0) + n
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return total


# --------------------------------------------------------------------------- COPY


def copy_main() -> None:
    """Child process (`--copy ROWS`) with the server's environment: build ROWS rows exactly as
    ingest would store them (through the same validation and pricing, outside the timing),
    then time one COPY of them into metrics_callevent plus the commit."""
    import django

    django.setup()
    from django.db import connection

    from apps.core.models import Environment
    from apps.metrics.ingest import _COLUMNS, _context, _event
    from apps.metrics.models import CallEvent

    rows = int(sys.argv[sys.argv.index("--copy") + 1])
    occurred_at = sys.argv[sys.argv.index("--occurred-at") + 1]
    env_id = Environment.objects.get(key="production").pk
    raw = [event(10_000, seq, i, occurred_at) for seq in range(rows // 500 + 1) for i in range(500)][:rows]
    for r in raw:
        r["event_id"] = "copy-" + r["event_id"]
    ctx = _context(environment_id=env_id, events=raw[:500])
    events = [_event(r, ctx, []) for r in raw]  # rows of _COLUMNS values, exactly what ingest inserts
    assert all(e is not None for e in events)

    def text(value) -> str:
        if value is None:
            return "\\N"
        if isinstance(value, bool):
            return "t" if value else "f"
        if hasattr(value, "isoformat"):
            return value.isoformat()
        return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")

    buffer = io.StringIO()
    for row in events:
        buffer.write("\t".join(text(value) for value in row) + "\n")
    payload = buffer.getvalue()
    columns = ", ".join(f'"{f.column}"' for f in _COLUMNS)
    connection.ensure_connection()
    raw_conn = connection.connection
    before = CallEvent.objects.count()
    t0 = time.perf_counter()
    with raw_conn.cursor() as cursor:
        with cursor.copy(f'COPY "{CallEvent._meta.db_table}" ({columns}) FROM STDIN') as copy:
            step = 1 << 20
            for start in range(0, len(payload), step):
                copy.write(payload[start:start + step])
    raw_conn.commit()
    elapsed = time.perf_counter() - t0
    after = CallEvent.objects.count()
    print(json.dumps({"rows": after - before, "seconds": elapsed}))


def run_copy(env: dict, rows: int, occurred_at: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--copy", str(rows), "--occurred-at", occurred_at], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit("COPY step failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table_count(env: dict) -> int:
    import psycopg

    url = env["DATABASE_URL"].replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM metrics_callevent").fetchone()[0]


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20, help="duration of the ingest run (default 20)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent client processes (default 4)")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn sync workers (default 3)")
    parser.add_argument("--batch", type=int, default=500, help="events per request (default 500)")
    parser.add_argument("--database-url", default=DEFAULT_DB,
                        help=f"Postgres, dropped and re-created (default {DEFAULT_DB})")
    parser.add_argument("--keep-db", action="store_true", help="keep the database afterwards")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--seed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--copy", help=argparse.SUPPRESS)
    parser.add_argument("--occurred-at", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        seed_main()
        return 0
    if args.copy:
        copy_main()
        return 0
    if not is_postgres(args.database_url):
        parser.error("the benchmark compares with COPY: --database-url must be a Postgres URL")
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    args.throttle = "1000000/min"
    env = server_env(args)
    env["CELERY_BROKER_URL"] = "memory://"  # the enqueue is real; nothing consumes it
    occurred_at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 60))

    database_create(args.database_url)
    server = None
    try:
        print(f"seeding {args.database_url} ...", flush=True)
        seeded = seed(env)
        print(f"starting gunicorn ({args.workers} workers) ...", flush=True)
        server, port = server_start(args, 4096, BENCH_DIR / "gunicorn-ingest.log")
        # Sanity and warm-up: every worker answers a real batch before the measurement.
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        for n in range(4 * args.workers):
            conn.request("POST", "/api/v1/events", body=batch_body(99_999, n, args.batch, occurred_at),
                         headers={"Authorization": f"Bearer {seeded['sdk_key']}", "Content-Type": "application/json"})
            response = conn.getresponse()
            data = json.loads(response.read())
            if response.status != 200 or data["counts"]["accepted"] != args.batch:
                raise SystemExit(f"warm-up batch answered {response.status}: {str(data)[:500]}")
        conn.close()
        warm = table_count(env)

        print(f"measuring ingest for {args.seconds} s ({args.concurrency} clients, batches of {args.batch}) ...",
              flush=True)
        ingest = run_ingest(port, seeded["sdk_key"], args, occurred_at)
        stored = table_count(env) - warm
        server_stop(server)
        server = None

        rows = max(ingest["accepted"], 50_000)
        print(f"measuring COPY of {rows} rows ...", flush=True)
        copied = run_copy(env, rows, occurred_at)
    finally:
        if server is not None:
            server_stop(server)
        if not args.keep_db:
            database_drop(args.database_url)

    ingest_rate = ingest["accepted"] / args.seconds
    copy_rate = copied["rows"] / copied["seconds"]
    lat = sorted(ingest["latencies"])
    p50 = lat[len(lat) // 2] * 1000 if lat else 0
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0
    unexpected = {s: n for s, n in ingest["statuses"].items() if s != 200}
    print()
    print(f"database postgresql; gunicorn {args.workers} sync workers; {args.concurrency} clients; "
          f"batches of {args.batch}; {args.seconds} s")
    print(f"machine: {machine()}")
    print()
    print(f"ingest  {ingest['accepted']:>9} events  {ingest_rate:>9.0f} events/s  "
          f"({ingest['requests']} requests, p50 {p50:.0f} ms, p99 {p99:.0f} ms per batch; stored {stored}; "
          f"rejected {ingest['rejected']}; unexpected {unexpected or 'none'}; socket errors {ingest['errors']})")
    print(f"COPY    {copied['rows']:>9} rows    {copy_rate:>9.0f} rows/s    "
          f"({copied['seconds']:.2f} s, one COPY + commit)")
    print(f"ratio   ingest / COPY = {100 * ingest_rate / copy_rate:.0f} %  (target >= 30 %)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": machine(), "workers": args.workers, "concurrency": args.concurrency, "batch": args.batch,
            "seconds": args.seconds, "ingest_events": ingest["accepted"], "ingest_events_per_s": round(ingest_rate),
            "requests": ingest["requests"], "p50_ms": round(p50, 1), "p99_ms": round(p99, 1),
            "copy_rows": copied["rows"], "copy_seconds": round(copied["seconds"], 3),
            "copy_rows_per_s": round(copy_rate), "ratio": round(ingest_rate / copy_rate, 3),
            "unexpected": unexpected, "rejected": ingest["rejected"],
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
