"""Budget enforcement: the config's per-feature ``budget`` entry, exposed on
evaluations and enforced by ``ShipwayClient.check_request_tokens`` (a real HTTP server
on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shipway import BudgetExceeded, BudgetInfo, ShipwayClient, evaluate_feature
from shipway.budget import budget_info

KEY = "sk_budget_test_secret"


def feature(budget=None):
    entry = {
        "enabled": True,
        "salt": "summarizer",
        "targeting": [],
        "stable": {"prompt_version": "1.0.0", "template": "Hi", "model": "m"},
        "canary": None,
    }
    if budget is not None:
        entry["budget"] = budget
    return entry


CONFIG = {
    "environment": "production",
    "revision": 3,
    "features": {
        "capped": feature({"max_tokens_per_request": 1000, "exhausted": False}),
        "spent": feature({"max_tokens_per_request": None, "exhausted": True}),
        "free": feature(),
    },
    "flags": {},
    "segments": {},
}


@pytest.fixture
def client():
    body = json.dumps(CONFIG).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    shipway = ShipwayClient(url, KEY, poll=False, timeout=2.0)
    yield shipway
    shipway.close()
    httpd.shutdown()
    httpd.server_close()


def test_evaluation__exposes_token_cap_and_exhausted():
    result = evaluate_feature(
        feature({"max_tokens_per_request": 512, "exhausted": True}), {}
    )
    assert result.max_tokens_per_request == 512 and result.exhausted is True
    plain = evaluate_feature(feature(), {})
    assert plain.max_tokens_per_request is None and plain.exhausted is False


@pytest.mark.parametrize(
    "entry",
    [None, "x", {"max_tokens_per_request": "10"}, {"max_tokens_per_request": True},
     {"max_tokens_per_request": -1}, {"exhausted": "yes"}],
)
def test_budget_info__malformed_entry__no_budget(entry):
    assert budget_info({"budget": entry}) == BudgetInfo()


def test_check_request_tokens__over_cap__raises_and_counts(client):
    client.check_request_tokens("capped", 1000)  # at the cap is fine
    with pytest.raises(BudgetExceeded) as info:
        client.check_request_tokens("capped", 1001)
    assert (info.value.reason, info.value.limit, info.value.requested) == (
        "max_tokens_per_request",
        1000,
        1001,
    )
    assert "1001 tokens requested, the per-request cap is 1000" in str(info.value)
    with pytest.raises(BudgetExceeded):
        client.check_request_tokens("capped", 5000)
    assert client.stats == {"budget_violations": {"capped": 2}}
    assert client.evaluate("capped", {}).max_tokens_per_request == 1000


def test_check_request_tokens__exhausted__refuses_everything(client):
    with pytest.raises(BudgetExceeded) as info:
        client.check_request_tokens("spent", 1)
    assert info.value.reason == "exhausted"
    assert client.budget("spent") == BudgetInfo(None, True)
    assert client.stats["budget_violations"] == {"spent": 1}


def test_check_request_tokens__no_budget_or_unknown_feature__allowed(client):
    client.check_request_tokens("free", 10**9)
    # Fail open: never block a service on missing data.
    client.check_request_tokens("unknown", 10**9)
    assert client.stats == {"budget_violations": {}}


def test_check_request_tokens__no_config__allowed():
    offline = ShipwayClient("http://127.0.0.1:9", KEY, poll=False, timeout=0.5)
    try:
        offline.check_request_tokens("capped", 10**9)
    finally:
        offline.close()


def test_stats__counts_across_threads(client):
    def violate():
        for _ in range(50):
            with pytest.raises(BudgetExceeded):
                client.check_request_tokens("capped", 2000)

    threads = [threading.Thread(target=violate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert client.stats["budget_violations"]["capped"] == 200
