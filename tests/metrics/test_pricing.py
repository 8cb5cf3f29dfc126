"""Cost of a call from the model price table, the audited price service, and the price page."""
import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse

from apps.core.errors import PermissionDenied, ValidationFailed
from apps.core.models import AuditEvent
from apps.metrics.models import ModelPrice
from apps.metrics.pricing import DEFAULT_PRICES, PriceBook, call_cost, model_price_set, model_prices_seed_defaults

pytestmark = pytest.mark.django_db
AT = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def gpt4o():
    return ModelPrice.objects.create(model="gpt-4o", input_per_million=Decimal("2.50"),
                                     cached_input_per_million=Decimal("1.25"), output_per_million=Decimal("10.00"),
                                     effective_from=dt.date(2026, 1, 1))


def test_call_cost__worked_case__cached_part_of_input(gpt4o):
    # (2006 - 1920) x 2.50 + 1920 x 1.25 + 300 x 10.00 = 5615 micro-dollars
    cost = call_cost("gpt-4o", 2006, 1920, 300, AT)
    assert cost == Decimal("0.005615")
    assert isinstance(cost, Decimal)
    assert cost != Decimal("0.010415")  # cached billed on top of input
    assert cost != Decimal("0.008015")  # cached not discounted


def test_call_cost__price_book_agrees(gpt4o):
    assert PriceBook.load().cost("gpt-4o", 2006, 1920, 300, AT) == Decimal("0.005615")


def test_call_cost__cached_exceeds_input__rejected(gpt4o):
    with pytest.raises(ValidationFailed) as err:
        call_cost("gpt-4o", 100, 101, 0, AT)
    assert err.value.code == "cached_exceeds_input"


def test_call_cost__unknown_model__none(gpt4o):
    assert call_cost("no-such-model", 10, 0, 10, AT) is None


def test_call_cost__price_in_effect_on_the_event_date(gpt4o):
    ModelPrice.objects.create(model="gpt-4o", input_per_million=Decimal("5"), cached_input_per_million=Decimal("5"),
                              output_per_million=Decimal("5"), effective_from=dt.date(2026, 3, 11))
    before = dt.datetime(2026, 3, 10, 23, 59, tzinfo=dt.UTC)
    on_day = dt.datetime(2026, 3, 11, 0, 0, tzinfo=dt.UTC)
    assert call_cost("gpt-4o", 1_000_000, 0, 0, before) == Decimal("2.50")
    assert call_cost("gpt-4o", 1_000_000, 0, 0, on_day) == Decimal("5")
    # the date is the UTC date: 2026-03-11 00:30 in Tokyo is still 03-10 in UTC
    tokyo = dt.datetime(2026, 3, 11, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    assert call_cost("gpt-4o", 1_000_000, 0, 0, tokyo) == Decimal("2.50")
    book = PriceBook.load()
    assert book.cost("gpt-4o", 1_000_000, 0, 0, before) == Decimal("2.50")
    assert book.cost("gpt-4o", 1_000_000, 0, 0, on_day) == Decimal("5")
    # before the first price: unpriced
    assert call_cost("gpt-4o", 10, 0, 0, dt.datetime(2025, 12, 31, tzinfo=dt.UTC)) is None


def test_model_price_set__admin__creates_and_audits(personas):
    row = model_price_set(actor=personas["admin"], model="m-1", input_per_million="1.5",
                          cached_input_per_million="0.75", output_per_million="6", effective_from=dt.date(2026, 2, 1))
    assert (row.input_per_million, row.cached_input_per_million, row.output_per_million) == (
        Decimal("1.5"), Decimal("0.75"), Decimal("6"))
    audit = AuditEvent.objects.get(action="model_price.set")
    assert audit.object_key == "m-1@2026-02-01" and audit.before is None
    assert audit.after["input_per_million"] == "1.500000"


def test_model_price_set__same_day__replaces_with_before(personas):
    kwargs = dict(model="m-1", cached_input_per_million="1", output_per_million="1", effective_from=dt.date(2026, 2, 1))
    model_price_set(actor=personas["admin"], input_per_million="1", **kwargs)
    model_price_set(actor=personas["admin"], input_per_million="2", **kwargs)
    assert ModelPrice.objects.filter(model="m-1").count() == 1
    last = AuditEvent.objects.filter(action="model_price.set").order_by("-id").first()
    assert last.before["input_per_million"] == "1.000000" and last.after["input_per_million"] == "2.000000"


@pytest.mark.parametrize("role", ["pm", "engineer", "oncall", "reviewer", "nobody"])
def test_model_price_set__not_admin__forbidden(personas, role):
    with pytest.raises(PermissionDenied):
        model_price_set(actor=personas[role], model="m", input_per_million="1", cached_input_per_million="1",
                        output_per_million="1", effective_from=dt.date(2026, 1, 1))
    assert not ModelPrice.objects.filter(model="m").exists()


@pytest.mark.parametrize("bad", ["-1", "abc", "1.0000001", "1e9"])
def test_model_price_set__bad_price__rejected(personas, bad):
    with pytest.raises(ValidationFailed):
        model_price_set(actor=personas["admin"], model="m", input_per_million=bad, cached_input_per_million="1",
                        output_per_million="1", effective_from=dt.date(2026, 1, 1))


def test_seed_defaults__idempotent_and_keeps_edits(personas):
    model_price_set(actor=personas["admin"], model="gpt-4o", input_per_million="9", cached_input_per_million="9",
                    output_per_million="9", effective_from=dt.date(2026, 1, 1))
    added = model_prices_seed_defaults()
    assert added == len(DEFAULT_PRICES) - 1
    assert model_prices_seed_defaults() == 0
    assert ModelPrice.objects.get(model="gpt-4o").input_per_million == Decimal("9")


def test_price_book__first_use_seeds_defaults():
    assert not ModelPrice.objects.exists()
    book = PriceBook.load()
    assert book.cost("gpt-4o", 2006, 1920, 300, AT) == Decimal("0.005615")
    assert ModelPrice.objects.count() == len(DEFAULT_PRICES)


# --------------------------------------------------------------------------- the page


def test_price_page__lists_and_admin_adds(client, personas):
    client.force_login(personas["admin"])
    page = client.get(reverse("prices"))
    assert page.status_code == 200
    assert b"gpt-4o-mini" in page.content and b"in effect" in page.content
    response = client.post(reverse("prices"), {
        "model": "my-model", "input_per_million": "1.25", "cached_input_per_million": "0.5",
        "output_per_million": "4", "effective_from": "2026-02-01"})
    assert response.status_code == 302
    assert ModelPrice.objects.get(model="my-model").output_per_million == Decimal("4")
    assert AuditEvent.objects.filter(action="model_price.set", actor=personas["admin"]).exists()


def test_price_page__invalid__inline_errors(client, personas):
    client.force_login(personas["admin"])
    response = client.post(reverse("prices"), {"model": "", "input_per_million": "-1",
                                               "cached_input_per_million": "x", "output_per_million": "1",
                                               "effective_from": "not-a-date"})
    assert response.status_code == 400
    body = response.content.decode()
    assert 'class="field-error"' in body and "This field is required" in body
    assert not ModelPrice.objects.filter(model="").exists()


def test_price_page__not_admin__refused_inline(client, personas):
    client.force_login(personas["pm"])
    page = client.get(reverse("prices"))
    assert page.status_code == 200 and b"Only admins can change prices" in page.content
    response = client.post(reverse("prices"), {
        "model": "sneaky", "input_per_million": "1", "cached_input_per_million": "1",
        "output_per_million": "1", "effective_from": "2026-02-01"})
    assert response.status_code == 400
    assert b"may not price.manage" in response.content
    assert not ModelPrice.objects.filter(model="sneaky").exists()


def test_price_page__anonymous__redirected_to_login(client):
    assert client.get(reverse("prices")).status_code == 302


def test_price_page__wrong_method(client, personas):
    client.force_login(personas["admin"])
    assert client.put(reverse("prices")).status_code == 405


# --------------------------------------------------------------------------- admin


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser(username="root", password="pw-root", email="r@example.com")


def test_admin__price_add__goes_through_service_and_audits(client, superuser):
    client.force_login(superuser)
    response = client.post("/admin/metrics/modelprice/add/", {
        "model": "admin-model", "effective_from": "2026-02-01", "input_per_million": "1",
        "cached_input_per_million": "0.5", "output_per_million": "2"})
    assert response.status_code == 302, response.content[:500]
    assert ModelPrice.objects.get(model="admin-model").output_per_million == Decimal("2")
    assert AuditEvent.objects.filter(action="model_price.set", object_key="admin-model@2026-02-01").exists()


def test_admin__telemetry_read_only_and_prices_not_deletable(client, superuser, gpt4o):
    client.force_login(superuser)
    assert client.get("/admin/metrics/callevent/").status_code == 200
    assert client.get("/admin/metrics/callrollup/").status_code == 200
    assert client.get("/admin/metrics/callevent/add/").status_code == 403
    assert client.get(f"/admin/metrics/modelprice/{gpt4o.pk}/delete/").status_code == 403
    assert client.get(f"/admin/metrics/modelprice/{gpt4o.pk}/change/").status_code == 200


def test_admin__price_form__csrf_enforced(superuser):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)
    response = client.post("/admin/metrics/modelprice/add/", {
        "model": "x", "effective_from": "2026-02-01", "input_per_million": "1",
        "cached_input_per_million": "1", "output_per_million": "1"})
    assert response.status_code == 403
    assert not ModelPrice.objects.filter(model="x").exists()
