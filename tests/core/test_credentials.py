"""SDK keys and personal API tokens: shown once, stored hashed, revocable, audited."""
import hashlib

from apps.core.models import ApiToken, AuditEvent, SdkKey


def test_sdk_keys_page__admin_creates_key_shown_once_and_stored_hashed(client, personas, envs):
    client.force_login(personas["admin"])
    html = client.post("/settings/sdk-keys/", {"environment": "production", "name": "checkout",
                                               "scopes": ["config:read", "events:write"]}).content.decode()
    key = SdkKey.objects.get(name="checkout")
    secret = html.split('id="new-secret">')[1].split("<")[0]
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in client.get("/settings/sdk-keys/").content.decode()
    assert AuditEvent.objects.filter(action="sdk_key.created").exists()


def test_sdk_keys_page__non_admin_cannot_create(client, personas, envs):
    client.force_login(personas["oncall"])
    html = client.post("/settings/sdk-keys/", {"environment": "production", "name": "x",
                                               "scopes": ["config:read"]}).content.decode()
    assert "may not sdk_key.manage" in html
    assert not SdkKey.objects.exists()


def test_revoked_sdk_key__401_on_the_next_poll(client, personas, envs, sdk_key):
    assert client.get("/api/v1/config", HTTP_AUTHORIZATION=f"Bearer {sdk_key}").status_code == 200
    client.force_login(personas["admin"])
    client.post(f"/settings/sdk-keys/{SdkKey.objects.get().pk}/revoke")
    client.logout()
    assert client.get("/api/v1/config", HTTP_AUTHORIZATION=f"Bearer {sdk_key}").status_code == 401


def test_api_token_page__create_use_revoke(client, personas, envs):
    client.force_login(personas["oncall"])
    html = client.post("/settings/tokens/", {"name": "laptop"}).content.decode()
    secret = html.split('id="new-secret">')[1].split("<")[0]
    client.logout()
    ok = client.get("/api/v1/features", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert ok.status_code == 200
    token = ApiToken.objects.get(name="laptop")
    token.refresh_from_db()
    assert token.last_used_at is not None
    client.force_login(personas["oncall"])
    client.post(f"/settings/tokens/{token.pk}/revoke")
    client.logout()
    assert client.get("/api/v1/features", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 401


def test_api_token__someone_elses_cannot_be_revoked(client, personas, envs):
    from apps.core.services import api_token_create

    token, _ = api_token_create(user=personas["pm"], name="pm-token")
    client.force_login(personas["oncall"])
    client.post(f"/settings/tokens/{token.pk}/revoke")
    token.refresh_from_db()
    assert token.revoked_at is None
