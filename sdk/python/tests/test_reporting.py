"""CallReporter and ShipwayClient.report_call against a real HTTP server on 127.0.0.1.

The stand-in server dedups on event_id like Shipway does, and can be scripted to answer
a request with an error (optionally after storing the batch, as when the answer of a
committed request is lost).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import shipway
from shipway import BudgetExceeded, CallReporter, ShipwayClient

SDK_KEY = "sk_test_reporting-0123456789-secret"
FEATURE = "ticket-summarizer"


def config():
    stable = {
        "prompt_version": "1.2.0",
        "template": "Summarise: {{ticket}}",
        "model": "gpt-4o-mini",
        "params": {},
        "fallback_models": [],
    }
    return {
        "environment": "production",
        "revision": 1,
        "poll_interval_seconds": 5,
        "features": {
            FEATURE: {
                "enabled": True,
                "salt": FEATURE,
                "targeting": [],
                "stable": stable,
                "canary": None,
                "budget": {"max_tokens_per_request": 1000, "exhausted": False},
            }
        },
        "flags": {},
        "segments": {},
    }


class EventServer:
    """``POST /api/v1/events`` and ``GET /api/v1/config``; stores events once each."""

    def __init__(self) -> None:
        self.stored: dict[str, dict] = {}
        self.requests: list[dict] = []
        # Each entry answers one POST: (status, headers, store_first) or "drop" /
        # "store-and-drop" (close the connection without an answer).
        self.script: list = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                body = json.dumps(config()).encode()
                self._send(200, body)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                events = json.loads(raw)["events"]
                with server.lock:
                    server.requests.append(
                        {
                            "at": time.monotonic(),
                            "authorization": self.headers.get("Authorization"),
                            "event_ids": [e["event_id"] for e in events],
                        }
                    )
                    action = server.script.pop(0) if server.script else (200, {}, True)
                    if action in ("drop", "store-and-drop"):
                        if action == "store-and-drop":
                            server.store(events)
                        self.close_connection = True
                        return
                    status, headers, store = action
                    answer = server.store(events) if store else None
                if status == 200:
                    return self._send(200, json.dumps(answer).encode(), headers)
                if status == 400:
                    listing = {
                        "counts": {
                            "accepted": 0,
                            "duplicate": 0,
                            "rejected": len(events),
                        },
                        "accepted": [],
                        "duplicate": [],
                        "rejected": [
                            {
                                "index": i,
                                "event_id": e["event_id"],
                                "reasons": [
                                    {"field": "feature", "code": "unknown_feature"}
                                ],
                            }
                            for i, e in enumerate(events)
                        ],
                        "flagged": [],
                    }
                    body = {
                        "error": {
                            "code": "all_events_rejected",
                            "message": "no",
                            "details": listing,
                        }
                    }
                else:
                    body = {
                        "error": {
                            "code": f"http_{status}",
                            "message": f"status {status}",
                        }
                    }
                self._send(status, json.dumps(body).encode(), headers)

            def _send(
                self, status: int, body: bytes, headers: dict | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def store(self, events: list[dict]) -> dict:
        accepted, duplicate = [], []
        for event in events:
            if event["event_id"] in self.stored:
                duplicate.append(event["event_id"])
            else:
                self.stored[event["event_id"]] = event
                accepted.append(event["event_id"])
        return {
            "counts": {
                "accepted": len(accepted),
                "duplicate": len(duplicate),
                "rejected": 0,
            },
            "accepted": accepted,
            "duplicate": duplicate,
            "rejected": [],
            "flagged": [],
        }

    @property
    def received(self) -> int:
        with self.lock:
            return sum(len(r["event_ids"]) for r in self.requests)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server():
    running = EventServer()
    yield running
    running.stop()


@pytest.fixture
def make_reporter():
    reporters: list[CallReporter] = []

    def factory(url: str, **kwargs) -> CallReporter:
        kwargs.setdefault("timeout", 2.0)
        reporter = CallReporter(url, SDK_KEY, **kwargs)
        reporters.append(reporter)
        return reporter

    yield factory
    for reporter in reporters:
        reporter.close(timeout=1)


def record(reporter: CallReporter, n: int = 1, **fields) -> list[str]:
    fields = {"feature": FEATURE, "model": "gpt-4o-mini", "latency_ms": 120} | fields
    return [reporter.record(**fields, request_id=f"r{i}") for i in range(n)]


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_record__event_shape__client_made_id_and_aware_utc_time(server, make_reporter):
    reporter = make_reporter(server.url, flush_interval=60)
    event_id = reporter.record(
        feature=FEATURE,
        model="gpt-4o",
        latency_ms=812.4,
        prompt_version="1.2.0",
        arm="canary",
        input_tokens=2006,
        cached_tokens=1920,
        output_tokens=300,
        cost_usd="0.0056",
        cache_hit=True,
        outcome="fallback",
        error_type="RateLimit",
        user_key="u-hash",
        request_id="req-1",
    )
    assert reporter.flush(timeout=5) is True
    event = server.stored[event_id]
    assert len(event_id) == 32 and int(event_id, 16) >= 0  # uuid4 hex
    when = dt.datetime.fromisoformat(event.pop("occurred_at"))
    assert when.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 5
    assert event == {
        "event_id": event_id,
        "feature": FEATURE,
        "prompt_version": "1.2.0",
        "arm": "canary",
        "model": "gpt-4o",
        "latency_ms": 812.4,
        "input_tokens": 2006,
        "cached_tokens": 1920,
        "output_tokens": 300,
        "cost_usd": "0.0056",
        "cache_hit": True,
        "outcome": "fallback",
        "error_type": "RateLimit",
        "user_key": "u-hash",
        "request_id": "req-1",
    }
    assert server.requests[0]["authorization"] == f"Bearer {SDK_KEY}"


def test_record__occurred_at_given__kept_with_its_offset(server, make_reporter):
    reporter = make_reporter(server.url, flush_interval=60)
    paris = dt.timezone(dt.timedelta(hours=2))
    [event_id] = record(
        reporter, occurred_at=dt.datetime(2026, 1, 31, 14, 0, tzinfo=paris)
    )
    reporter.flush(timeout=5)
    assert server.stored[event_id]["occurred_at"] == "2026-01-31T14:00:00+02:00"


def test_batching__full_batches_go_at_once_and_the_rest_on_close(server, make_reporter):
    reporter = make_reporter(server.url, batch_size=100, flush_interval=60)
    ids = record(reporter, 250)
    wait_for(lambda: server.received == 200)
    time.sleep(0.2)
    assert [len(r["event_ids"]) for r in server.requests] == [100, 100]
    reporter.close()
    assert [len(r["event_ids"]) for r in server.requests] == [100, 100, 50]
    assert sorted(server.stored) == sorted(ids)
    assert reporter.stats == {
        "recorded": 250,
        "sent": 250,
        "duplicates": 0,
        "rejected": 0,
        "dropped": 0,
        "retries": 0,
        "invalid": 0,
    }


def test_flush_interval__a_partial_batch_is_sent_in_the_background(
    server, make_reporter
):
    reporter = make_reporter(server.url, batch_size=500, flush_interval=0.1)
    record(reporter, 3)
    wait_for(lambda: reporter.pending == 0, timeout=3)  # the answer has been read
    assert len(server.stored) == 3 and len(server.requests) == 1


def test_batch_size__capped_at_the_servers_limit(server, make_reporter):
    reporter = make_reporter(server.url, batch_size=5000, flush_interval=60)
    record(reporter, 1500)
    reporter.close()
    assert [len(r["event_ids"]) for r in server.requests] == [1000, 500]


def test_close__flushes_then_stops_and_later_records_are_dropped(server, make_reporter):
    reporter = make_reporter(server.url, flush_interval=60)
    record(reporter, 7)
    reporter.close()
    assert len(server.stored) == 7
    assert not reporter._thread.is_alive()
    assert record(reporter, 2) == [None, None]
    assert reporter.stats["dropped"] == 2
    reporter.close()  # twice is fine


def test_retry__503_after_storing__resent_and_server_dedups(server, make_reporter):
    # The first request is committed but answered 503 (the outcome is unknown to the
    # client); the retry sends the same event_ids and nothing is stored twice.
    server.script = [(503, {}, True)]
    reporter = make_reporter(server.url, flush_interval=0.05)
    ids = record(reporter, 5)
    wait_for(lambda: len(server.requests) == 2, timeout=5)
    wait_for(lambda: reporter.pending == 0)
    first, second = server.requests
    assert first["event_ids"] == second["event_ids"] == ids
    assert server.received == 10 and len(server.stored) == 5
    stats = reporter.stats
    assert (stats["retries"], stats["sent"], stats["duplicates"]) == (1, 5, 5)


def test_retry__503_then_success__events_sent_once(server, make_reporter):
    server.script = [(503, {}, False), (502, {}, False)]
    reporter = make_reporter(server.url, flush_interval=0.05)
    ids = record(reporter, 4)
    wait_for(lambda: len(server.stored) == 4, timeout=5)
    assert [r["event_ids"] for r in server.requests] == [ids, ids, ids]
    assert reporter.stats["retries"] == 2 and reporter.stats["duplicates"] == 0


def test_retry__connection_dropped_after_storing__resent_safely(server, make_reporter):
    server.script = ["store-and-drop"]
    reporter = make_reporter(server.url, flush_interval=0.05)
    record(reporter, 3)
    wait_for(lambda: len(server.requests) == 2, timeout=5)
    wait_for(lambda: reporter.pending == 0)
    assert len(server.stored) == 3
    assert reporter.stats["retries"] == 1 and reporter.stats["duplicates"] == 3


def test_retry__retry_after_header_is_honoured(server, make_reporter):
    server.script = [(429, {"Retry-After": "1"}, False)]
    reporter = make_reporter(server.url, flush_interval=0.05)
    record(reporter, 2)
    wait_for(lambda: len(server.stored) == 2, timeout=5)
    gap = server.requests[1]["at"] - server.requests[0]["at"]
    assert 0.9 <= gap < 3, gap  # the default first backoff would be at most 0.5 s


def test_retry__backoff_grows_and_is_capped(server, make_reporter):
    server.script = [(500, {}, False)] * 4
    reporter = make_reporter(server.url, flush_interval=0.01, max_backoff=0.6)
    record(reporter, 1)
    wait_for(lambda: len(server.stored) == 1, timeout=8)
    times = [r["at"] for r in server.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 4
    assert all(gap <= 0.6 + 0.3 for gap in gaps), gaps  # capped
    assert gaps[2] >= 0.5 * 0.6 - 0.05, gaps  # 0.5, 1.0 -> cap 0.6, times jitter >= 0.5


def test_flush__waits_out_a_short_retry_after(server, make_reporter):
    server.script = [(503, {"Retry-After": "0.3"}, False)]
    reporter = make_reporter(server.url, flush_interval=60)
    record(reporter, 2)
    assert reporter.flush(timeout=5) is True
    assert len(server.stored) == 2 and len(server.requests) == 2


def test_flush__server_down__gives_up_at_the_timeout_and_keeps_events(make_reporter):
    dead = EventServer()
    dead.stop()
    reporter = make_reporter(dead.url, flush_interval=60, timeout=0.5)
    record(reporter, 3)
    started = time.monotonic()
    assert reporter.flush(timeout=0.5) is False
    assert time.monotonic() - started < 2
    assert reporter.pending == 3 and reporter.stats["retries"] >= 1
    reporter.close(timeout=0)
    assert reporter.stats["dropped"] == 3


def test_buffer_full__oldest_dropped_and_counted(server, make_reporter):
    reporter = make_reporter(
        server.url, max_buffer=5, batch_size=100, flush_interval=60
    )
    ids = record(reporter, 8)
    assert reporter.stats["dropped"] == 3 and reporter.pending == 5
    reporter.close()
    assert sorted(server.stored) == sorted(ids[3:])
    assert [e["request_id"] for e in server.stored.values()] == [
        "r3",
        "r4",
        "r5",
        "r6",
        "r7",
    ]


def test_400__rejected_events_counted_dropped_and_reason_logged_without_key(
    server, make_reporter, caplog
):
    server.script = [(400, {}, False)]
    reporter = make_reporter(server.url, flush_interval=60)
    record(reporter, 3)
    with caplog.at_level(logging.WARNING, logger="shipway"):
        assert reporter.flush(timeout=5) is True
    assert len(server.requests) == 1  # not retried
    assert reporter.stats["rejected"] == 3 and reporter.stats["retries"] == 0
    assert "unknown_feature" in caplog.text
    assert SDK_KEY not in caplog.text


def test_401__whole_batch_rejected_not_retried(server, make_reporter, caplog):
    server.script = [(401, {}, False)]
    reporter = make_reporter(server.url, flush_interval=60)
    record(reporter, 4)
    with caplog.at_level(logging.WARNING, logger="shipway"):
        reporter.flush(timeout=5)
    assert len(server.requests) == 1 and reporter.stats["rejected"] == 4
    assert "http_401" in caplog.text and SDK_KEY not in caplog.text


def test_logs__never_contain_the_key(server, make_reporter, caplog):
    server.script = [(503, {}, False), "drop", (413, {}, False), (400, {}, False)]
    with caplog.at_level(logging.DEBUG, logger="shipway"):
        reporter = make_reporter(server.url, flush_interval=60)
        for _ in range(4):
            record(reporter, 2)
            reporter.flush(timeout=5)
        dead = EventServer()
        dead.stop()
        offline = make_reporter(dead.url, flush_interval=60, timeout=0.5)
        record(offline, 1)
        offline.flush(timeout=0.2)
        offline.close(timeout=0)
    assert len(caplog.records) >= 5
    assert SDK_KEY not in caplog.text
    assert all(SDK_KEY not in str(r.args) for r in caplog.records)


def test_record__never_raises_into_the_caller(server, make_reporter):
    reporter = make_reporter(server.url, flush_interval=60)
    assert reporter.record(feature="", model="gpt-4o", latency_ms=1) is None
    assert reporter.record(feature=FEATURE, model=None, latency_ms=1) is None
    assert reporter.stats["invalid"] == 2
    record(reporter, 1, latency_ms=object())  # not JSON: the batch cannot be sent
    assert reporter.flush(timeout=2) is True
    assert reporter.stats["rejected"] == 1 and server.requests == []


def test_record__thread_safe(server, make_reporter):
    reporter = make_reporter(server.url, batch_size=200, flush_interval=0.05)
    ids: list[str] = []
    lock = threading.Lock()

    def work():
        mine = record(reporter, 500)
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reporter.close()
    assert len(set(ids)) == 4000
    assert sorted(server.stored) == sorted(ids) and server.received == 4000
    assert reporter.stats["sent"] == 4000


# --------------------------------------------------------------------------- client


@pytest.fixture
def client(server):
    client = ShipwayClient(
        server.url, SDK_KEY, poll=False, timeout=2.0, reporting={"flush_interval": 60}
    )
    yield client
    client.close()


def test_report_call__fields_from_the_evaluation(server, client):
    evaluation = client.evaluate(FEATURE, {"targetingKey": "u1"})
    assert client._reporter is None  # nothing started until the first report
    event_id = client.report_call(
        FEATURE,
        evaluation,
        latency_ms=300,
        input_tokens=900,
        output_tokens=80,
        cached_tokens=100,
    )
    assert client.reporter._thread.is_alive()
    client.close()  # flushes
    event = server.stored[event_id]
    assert (event["prompt_version"], event["arm"], event["model"]) == (
        "1.2.0",
        "stable",
        "gpt-4o-mini",
    )
    assert (event["input_tokens"], event["cached_tokens"], event["output_tokens"]) == (
        900,
        100,
        80,
    )
    assert event["outcome"] == "success"


def test_report_call__explicit_model_and_version_string(server, client):
    fallback = client.report_call(
        FEATURE,
        client.evaluate(FEATURE, {}),
        latency_ms=5,
        model="gpt-4o",
        outcome="fallback",
    )
    by_version = client.report_call(FEATURE, "1.0.0", latency_ms=7, model="gpt-4o")
    client.reporter.flush(timeout=5)
    assert server.stored[fallback]["model"] == "gpt-4o"
    assert server.stored[by_version]["prompt_version"] == "1.0.0"
    assert server.stored[by_version]["arm"] == "stable"


def test_report_call__no_model_known__not_recorded(server, client):
    assert (
        client.report_call("unknown", client.evaluate("unknown", {}), latency_ms=1)
        is None
    )
    assert client.reporter.stats["invalid"] == 1


def test_check_request_tokens__refusal_reported_as_budget_blocked(server, client):
    evaluation = client.evaluate(FEATURE, {"targetingKey": "u1"})
    client.check_request_tokens(FEATURE, 1000, evaluation)  # allowed: nothing reported
    with pytest.raises(BudgetExceeded):
        client.check_request_tokens(FEATURE, 5000, evaluation, request_id="req-9")
    client.close()
    [event] = server.stored.values()
    assert event["outcome"] == "budget_blocked"
    assert event["error_type"] == "max_tokens_per_request"
    assert (event["input_tokens"], event["output_tokens"], event["latency_ms"]) == (
        0,
        0,
        0,
    )
    assert (event["prompt_version"], event["request_id"]) == ("1.2.0", "req-9")


def test_client_close__without_reports__starts_no_reporter(server, client):
    client.close()
    assert client._reporter is None
    assert not any(r for r in server.requests)


def test_exit__a_script_that_never_closes__still_sends_its_events(server):
    script = (
        "from shipway import CallReporter\n"
        f"r = CallReporter({server.url!r}, {SDK_KEY!r}, flush_interval=60)\n"
        "for i in range(3):\n"
        f"    r.record(feature={FEATURE!r}, model='gpt-4o', latency_ms=i)\n"
    )
    src = str(Path(shipway.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=30)
    assert len(server.stored) == 3
