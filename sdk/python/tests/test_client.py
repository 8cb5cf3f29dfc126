"""ShipwayClient against a real HTTP server on 127.0.0.1 (no HTTP mocks)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shipway import MissingVariables, ShipwayAuthError, ShipwayClient, bucket

SDK_KEY = "sk_test_0123456789abcdef-secret"


def make_config(revision=1, canary_bp=0, enabled=True, poll_interval=5):
    return {
        "environment": "production",
        "revision": revision,
        "poll_interval_seconds": poll_interval,
        "features": {
            "ticket-summarizer": {
                "enabled": enabled,
                "stage": "beta",
                "salt": "ticket-summarizer",
                "targeting": [],
                "stable": {
                    "prompt_version": f"1.{revision}.0",
                    "messages": [
                        {"role": "system", "content": "Summarise for {{product}}."},
                        {"role": "user", "content": "{{ticket}}"},
                    ],
                    "model": "gpt-4o-mini",
                    "params": {"temperature": 0.2},
                    "fallback_models": ["gpt-4o"],
                },
                "canary": None,
                "review_sample_rate": 0.2,
            }
        },
        "flags": {
            "new-ui": {
                "enabled": True,
                "type": "boolean",
                "variants": {"on": True, "off": False},
                "default_variant": "on",
                "off_variant": "off",
                "targeting": [],
                "rollout": None,
            }
        },
        "segments": {},
    }


class ConfigServer:
    """A tiny stand-in for Shipway's config endpoint with a strong ETag."""

    def __init__(self) -> None:
        self.status = 200
        self.body_override: bytes | None = None
        self.requests: list[dict[str, str | None]] = []
        self.set_config(make_config())
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(
                    {
                        "path": self.path,
                        "authorization": self.headers.get("Authorization"),
                        "if_none_match": self.headers.get("If-None-Match"),
                    }
                )
                if self.path != "/api/v1/config":
                    return self._send(404, b'{"error": {"code": "not_found"}}')
                if self.headers.get("Authorization") != f"Bearer {SDK_KEY}":
                    return self._send(401, b'{"error": {"code": "unauthorized"}}')
                if server.status != 200:
                    return self._send(server.status, b'{"error": {"code": "boom"}}')
                if server.body_override is not None:
                    return self._send(200, server.body_override)
                if self.headers.get("If-None-Match") == server.etag:
                    self.send_response(304)
                    self.send_header("ETag", server.etag)
                    self.end_headers()
                    return None
                return self._send(200, server.body, etag=server.etag)

            def _send(self, status: int, body: bytes, etag: str | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if etag:
                    self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def set_config(self, config: dict) -> None:
        self.body = json.dumps(config).encode()
        self.etag = '"' + hashlib.sha256(self.body).hexdigest() + '"'

    def stop(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()


@pytest.fixture
def server():
    running = ConfigServer()
    yield running
    running.stop()


@pytest.fixture
def dead_url():
    stopped = ConfigServer()
    stopped.stop()
    return stopped.url


@pytest.fixture
def make_client():
    clients: list[ShipwayClient] = []

    def factory(url: str, key: str = SDK_KEY, **kwargs) -> ShipwayClient:
        kwargs.setdefault("poll", False)
        kwargs.setdefault("timeout", 2.0)
        client = ShipwayClient(url, key, **kwargs)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


def test_init__fetches_config_with_bearer_key_and_evaluates_locally(
    server, make_client
):
    client = make_client(server.url)
    assert client.revision == 1
    assert server.requests[0]["authorization"] == f"Bearer {SDK_KEY}"
    assert server.requests[0]["if_none_match"] is None
    result = client.evaluate("ticket-summarizer", {"targetingKey": "u1"})
    assert (result.reason, result.variant, result.value["prompt_version"]) == (
        "STATIC",
        "stable",
        "1.1.0",
    )
    assert client.evaluate_flag("new-ui", {}).value is True


def test_refresh__unchanged_config__sends_etag_and_keeps_config_on_304(
    server, make_client
):
    client = make_client(server.url)
    assert client.refresh() is True
    assert server.requests[-1]["if_none_match"] == server.etag
    assert client.revision == 1


def test_refresh__changed_config__is_picked_up(server, make_client):
    client = make_client(server.url)
    server.set_config(make_config(revision=2))
    assert client.refresh() is True
    assert client.revision == 2
    assert (
        client.config["features"]["ticket-summarizer"]["stable"]["prompt_version"]
        == "1.2.0"
    )


def test_refresh__server_stopped__keeps_last_known_good_and_logs_without_key(
    server, make_client, caplog
):
    client = make_client(server.url)
    server.stop()
    with caplog.at_level(logging.WARNING, logger="shipway"):
        assert client.refresh() is False
    assert client.revision == 1
    assert (
        client.evaluate("ticket-summarizer", {"targetingKey": "u"}).variant == "stable"
    )
    assert caplog.records, "an unreachable Shipway should be logged"
    assert SDK_KEY not in caplog.text


@pytest.mark.parametrize("failure", ["500", "bad-json", "not-an-object"])
def test_refresh__server_error_or_bad_body__keeps_last_known_good(
    server, make_client, caplog, failure
):
    client = make_client(server.url)
    if failure == "500":
        server.status = 500
    else:
        server.body_override = b"{not json" if failure == "bad-json" else b"[1, 2]"
    with caplog.at_level(logging.WARNING, logger="shipway"):
        assert client.refresh() is False
    assert client.revision == 1
    assert client.evaluate("ticket-summarizer", {}).value is not None
    assert SDK_KEY not in caplog.text


def test_init__wrong_key_with_nothing_known__raises_auth_error(server, make_client):
    with pytest.raises(ShipwayAuthError) as info:
        make_client(server.url, key="sk_wrong_key_value")
    assert "sk_wrong_key_value" not in str(info.value)


def test_refresh__key_revoked_later__logs_and_keeps_serving(
    server, make_client, caplog
):
    client = make_client(server.url)
    client._sdk_key = "sk_revoked"  # the server now refuses what the client sends
    with caplog.at_level(logging.WARNING, logger="shipway"):
        assert client.refresh() is False
    assert client.revision == 1
    assert "401" in caplog.text


def test_init__server_unreachable_without_cache__answers_provider_not_ready(
    dead_url, make_client
):
    client = make_client(dead_url)
    assert client.config is None
    assert client.revision is None
    result = client.evaluate("ticket-summarizer", {"targetingKey": "u"})
    assert (result.value, result.reason, result.variant, result.error_code) == (
        None,
        "ERROR",
        "off",
        "PROVIDER_NOT_READY",
    )


def test_evaluate__unknown_feature__answers_flag_not_found(server, make_client):
    result = make_client(server.url).evaluate("nope", {"targetingKey": "u"})
    assert (result.value, result.reason, result.variant, result.error_code) == (
        None,
        "ERROR",
        "off",
        "FLAG_NOT_FOUND",
    )


def test_cache__last_known_good__survives_a_restart_while_shipway_is_down(
    server, make_client, tmp_path, dead_url
):
    cache = tmp_path / "shipway-config.json"
    make_client(server.url, cache_path=str(cache))
    assert json.loads(cache.read_text())["config"]["revision"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["shipway-config.json"]

    restarted = make_client(dead_url, cache_path=str(cache))
    assert restarted.revision == 1
    assert restarted.evaluate("ticket-summarizer", {}).variant == "stable"


def test_cache__cached_etag__is_sent_so_an_unchanged_config_answers_304(
    server, make_client, tmp_path
):
    cache = tmp_path / "config.json"
    make_client(server.url, cache_path=str(cache))
    restarted = make_client(server.url, cache_path=str(cache))
    assert server.requests[-1]["if_none_match"] == server.etag
    assert restarted.revision == 1


def test_cache__wrong_key_with_cached_config__does_not_raise(
    server, make_client, tmp_path
):
    cache = tmp_path / "config.json"
    make_client(server.url, cache_path=str(cache))
    client = make_client(server.url, key="sk_other", cache_path=str(cache))
    assert client.revision == 1


def test_cache__corrupt_file__is_ignored(server, make_client, tmp_path):
    cache = tmp_path / "config.json"
    cache.write_text("{half a file")
    client = make_client(server.url, cache_path=str(cache))
    assert client.revision == 1
    assert json.loads(cache.read_text())["config"]["revision"] == 1


def test_polling__honours_poll_interval_and_stops_on_close(server, make_client):
    server.set_config(make_config(revision=1, poll_interval=1))
    client = make_client(server.url, poll=True)
    server.set_config(make_config(revision=2, poll_interval=1))
    deadline = time.monotonic() + 5
    while client.revision != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.revision == 2
    client.close()
    seen = len(server.requests)
    time.sleep(1.3)
    assert len(server.requests) == seen


def test_prompt__renders_served_messages_and_reports_arm(server, make_client):
    client = make_client(server.url)
    prepared = client.prompt(
        "ticket-summarizer",
        {"targetingKey": "u"},
        {"product": "Acme", "ticket": "T1", "x": 0},
    )
    assert prepared.served
    assert prepared.messages == [
        {"role": "system", "content": "Summarise for Acme."},
        {"role": "user", "content": "T1"},
    ]
    assert prepared.text is None
    assert (prepared.model, prepared.prompt_version, prepared.arm) == (
        "gpt-4o-mini",
        "1.1.0",
        "stable",
    )
    assert prepared.params == {"temperature": 0.2}
    assert prepared.fallback_models == ["gpt-4o"]
    assert prepared.extra == ["x"]


def test_prompt__missing_variables__are_all_named(server, make_client):
    with pytest.raises(MissingVariables) as info:
        make_client(server.url).prompt("ticket-summarizer", {}, {})
    assert info.value.missing == ["product", "ticket"]


def test_prompt__disabled_feature__serves_nothing_so_caller_uses_its_default(
    server, make_client
):
    server.set_config(make_config(enabled=False))
    prepared = make_client(server.url).prompt("ticket-summarizer", {}, {})
    assert not prepared.served
    assert prepared.messages is None and prepared.model is None
    assert prepared.evaluation.reason == "DISABLED"


def test_repr__does_not_contain_the_sdk_key(server, make_client):
    client = make_client(server.url)
    assert SDK_KEY not in repr(client)
    assert "revision=1" in repr(client)


def test_evaluate__feature_without_salt__buckets_with_the_feature_key(
    server, make_client
):
    config = make_config()
    feature = config["features"]["ticket-summarizer"]
    del feature["salt"]
    feature["canary"] = {
        **feature["stable"],
        "prompt_version": "2.0.0",
        "basis_points": 5000,
    }
    server.set_config(config)
    client = make_client(server.url)
    for key in ("user-42", "user-43", "acct_9f3e1c"):
        expected = "canary" if bucket("ticket-summarizer", key) < 5000 else "stable"
        assert (
            client.evaluate("ticket-summarizer", {"targetingKey": key}).variant
            == expected
        )


def test_evaluate__malformed_feature__answers_error_instead_of_raising(
    server, make_client
):
    config = make_config()
    config["features"]["ticket-summarizer"]["canary"] = {"basis_points": "lots"}
    server.set_config(config)
    result = make_client(server.url).evaluate(
        "ticket-summarizer", {"targetingKey": "u"}
    )
    assert (result.value, result.reason, result.error_code) == (
        None,
        "ERROR",
        "GENERAL",
    )
