"""Shared fixtures: personas (one user per role), environments, a feature with versions and
releases, SDK keys, API clients; and an autouse guard that fails any outbound network."""
import json
import os
import socket
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from apps.core.services import api_token_create, environment_create, roles_ensure, sdk_key_create
from apps.prompts.services import feature_create, prompt_version_create
from apps.rollouts import services as rollouts

REQUIRE_SERVICES = os.environ.get("SHIPWAY_REQUIRE_SERVICES") == "1"
ON_POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


def race(*calls, timeout: float = 60) -> list:
    """Run `calls` in threads released together by a barrier (each on its own database
    connection); return their results, or the exception each raised, in order. For the
    Postgres concurrency tests: the point is that the calls really overlap."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        try:
            barrier.wait()
            results[i] = call()
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test asserts
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    return results


def skip_or_fail(reason: str) -> None:
    """CI sets SHIPWAY_REQUIRE_SERVICES=1: there a missing service is a failure, not a skip."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


VENDORED_CONTRACTS = Path(__file__).resolve().parent / "contracts"


def shared_contracts_dir() -> Path | None:
    """shared/contracts beside the checkout (or SHIPWAY_CONTRACTS_DIR), when present."""
    env = os.environ.get("SHIPWAY_CONTRACTS_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for parent in here.parents:
        candidate = parent / "shared" / "contracts"
        if (candidate / "rollback.json").exists():
            return candidate
    return None


def load_contract(name: str) -> dict:
    """The contract from shared/ when it is beside the checkout, else the vendored copy in
    tests/contracts/ (a test checks the two are identical whenever both exist)."""
    folder = shared_contracts_dir() or VENDORED_CONTRACTS
    return json.loads((folder / name).read_text())


_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and self.family in (socket.AF_INET, socket.AF_INET6):
        if not (host.startswith("127.") or host in ("::1", "localhost")):
            raise RuntimeError(f"tests must not reach the network (tried {address!r})")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """Per-process caches keyed by primary keys outlive a test's database: clear them, or a
    credential created in one test inherits another test's 'touched a minute ago'."""
    from django.core.cache import cache

    from apps.core.authentication import _LAST_TOUCH

    _LAST_TOUCH.clear()
    cache.clear()


@pytest.fixture
def personas(db, django_user_model):
    roles_ensure()
    from django.contrib.auth.models import Group

    users = {}
    for role in ("admin", "pm", "oncall", "engineer", "reviewer"):
        user = django_user_model.objects.create_user(username=role, password="pw-" + role,
                                                     email=f"{role}@example.com")
        user.groups.add(Group.objects.get(name=role))
        users[role] = user
    users["nobody"] = django_user_model.objects.create_user(username="nobody", password="pw-nobody")
    return users


@pytest.fixture
def envs(db):
    return {
        "staging": environment_create(key="staging", name="Staging", position=1),
        "production": environment_create(key="production", name="Production", position=2),
    }


@pytest.fixture
def feature(db, personas):
    feature = feature_create(key="ticket-summarizer", name="Ticket summarizer", actor=personas["pm"],
                             owner=personas["pm"])
    for version, text in (("1.0.0", "Summarise: {{ ticket }}"), ("1.1.0", "Summarise briefly: {{ ticket }}"),
                          ("1.2.0", "Summarise as JSON {\"s\": 1}: {{ticket}}")):
        prompt_version_create(feature=feature, version=version, model="gpt-4o-mini", template=text,
                              actor=personas["engineer"])
    return feature


@pytest.fixture
def release(feature, envs, personas):
    """ticket-summarizer in production: r1 stable 1.0.0."""
    rollouts.release_create(feature=feature, environment=envs["production"], stable_version="1.0.0",
                            actor=personas["engineer"])
    return feature.releases.get(environment=envs["production"])


@pytest.fixture
def sdk_key(envs):
    _, secret = sdk_key_create(environment=envs["production"], name="test", scopes=["config:read"])
    return secret


@pytest.fixture
def api_for(personas):
    """api_for("oncall") -> an APIClient authenticated with that persona's personal token."""
    def make(role: str) -> APIClient:
        _, secret = api_token_create(user=personas[role], name="test")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return client

    return make
