"""Project-level guards: no pending migrations, health endpoints, the OpenAPI schema."""
from io import StringIO

from django.core.management import call_command


def test_no_pending_migrations(db):
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=StringIO())
    assert "No changes detected" in out.getvalue()


def test_healthz__up(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz__database_and_broker(db, client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"]["database"] == "ok"


def test_openapi_schema__documents_the_public_endpoints(db, client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = response.json()
    for path in ("/api/v1/config", "/ofrep/v1/evaluate/flags/{key}", "/ofrep/v1/evaluate/flags",
                 "/api/v1/features/{key}/environments/{env}/rollback"):
        assert path in schema["paths"], path


def test_api_docs_page__served_without_a_cdn(db, client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"cdn." not in response.content and b"unpkg" not in response.content


def test_unknown_api_path__json_404(db, client):
    response = client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_vendored_contracts_match_shared():
    import pytest

    from tests.conftest import VENDORED_CONTRACTS, shared_contracts_dir

    shared = shared_contracts_dir()
    if shared is None:
        pytest.skip("shared/contracts is not beside this checkout; the vendored copy is used")
    for vendored in VENDORED_CONTRACTS.glob("*.json"):
        assert vendored.read_text() == (shared / vendored.name).read_text(), (
            f"tests/contracts/{vendored.name} differs from shared/contracts: copy the new one in"
        )


def test_openapi_schema__generates_without_warnings(tmp_path):
    """A warning here is a wrong schema: e.g. two views' InputSerializer merged into one
    component, so a generated client would send the wrong body to all but one of them."""
    from django.core.management import call_command

    out = tmp_path / "schema.yml"
    call_command("spectacular", "--file", str(out), "--validate", "--fail-on-warn")
    text = out.read_text()
    assert "FeatureListInputRequest" in text and "PromptVersionListInputRequest" in text
    assert "sdkKey" in text and "personalToken" in text
