"""The alerting channel: open once per dedupe key, resolve, and webhook delivery with retries
against a real HTTP server on 127.0.0.1 (no HTTP mocks, no eager mode: the task body runs
through `.apply()`)."""
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import override_settings

from apps.metrics.alerts import alert_notification_send, alert_open, alert_resolve, alerts_open
from apps.metrics.models import Alert, Budget
from apps.metrics.tasks import alert_notify


class WebhookReceiver:
    """Answers the queued statuses in turn (then 200) and records every JSON body."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.bodies: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/SECRET-TOKEN"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def _local_receivers_allowed(settings):
    """The receivers here listen on 127.0.0.1, which production refuses by default."""
    settings.SHIPWAY_WEBHOOK_ALLOW_PRIVATE = True


def _open(feature, key="slo:ticket-summarizer:production:error_rate", **kw):
    return alert_open(kind=kw.pop("kind", Alert.Kind.SLO), feature=feature, environment=kw.pop("environment", None),
                      dedupe_key=key, title=kw.pop("title", "error rate 7.5 % > SLO 2 %"),
                      figures=kw.pop("figures", {"error_rate": "0.075", "slo": "0.02"}))


@pytest.mark.django_db
def test_alert_open__same_dedupe_key__opens_once(feature, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        first = _open(feature)
        second = _open(feature)
    assert first is not None and second is None
    assert Alert.objects.count() == 1
    assert len(callbacks) == 1  # one notification enqueued, on commit


@pytest.mark.django_db
def test_alert_resolve__frees_the_key_for_the_next_episode(feature, envs):
    first = _open(feature, environment=envs["production"])
    assert list(alerts_open(feature=feature, environment=envs["production"])) == [first]
    assert alert_resolve(dedupe_key=first.dedupe_key, figures={"error_rate": "0.01"}) is True
    assert alert_resolve(dedupe_key="slo:ticket-summarizer:production:error_rate") is False  # already resolved
    first.refresh_from_db()
    assert first.resolved_at is not None and first.figures["resolved"] == {"error_rate": "0.01"}
    assert list(alerts_open()) == []
    again = _open(feature, environment=envs["production"])
    assert again is not None and again.pk != first.pk


@pytest.mark.django_db
def test_alert_notify__webhook_fails_then_succeeds__retried_and_marked(feature, caplog):
    alert = _open(feature)
    with WebhookReceiver(statuses=[503]) as hook, override_settings(SHIPWAY_ALERT_WEBHOOK_URL=hook.url), \
            caplog.at_level(logging.INFO):
        result = alert_notify.apply(args=[alert.id, "opened"])
    assert result.successful(), result.traceback
    assert len(hook.bodies) == 2  # the 503, then the retry that got 200
    body = hook.bodies[-1]
    assert body["text"].startswith("[ALERT] error rate 7.5 % > SLO 2 %")
    assert body["event"] == "opened"
    assert body["alert"]["feature"] == "ticket-summarizer" and body["alert"]["figures"]["slo"] == "0.02"
    alert.refresh_from_db()
    assert alert.notify_attempts == 2 and alert.notified_at is not None
    assert "SECRET-TOKEN" not in caplog.text  # the webhook URL is a secret


@pytest.mark.django_db
def test_alert_notify__webhook_keeps_failing__gives_up_after_max_retries(feature):
    alert = _open(feature)
    with WebhookReceiver(statuses=[500] * 20) as hook, override_settings(SHIPWAY_ALERT_WEBHOOK_URL=hook.url):
        result = alert_notify.apply(args=[alert.id])
    assert result.failed()
    alert.refresh_from_db()
    assert alert.notify_attempts == 1 + alert_notify.max_retries
    assert alert.notified_at is None
    assert len(hook.bodies) == 7


@pytest.mark.django_db
def test_alert_notify__feature_webhook_wins_over_default_and_resolved_event(feature):
    with WebhookReceiver() as default_hook, WebhookReceiver() as feature_hook, \
            override_settings(SHIPWAY_ALERT_WEBHOOK_URL=default_hook.url):
        Budget.objects.create(feature=feature, webhook_url=feature_hook.url)
        alert = _open(feature)
        alert_resolve(dedupe_key=alert.dedupe_key)
        assert alert_notification_send(alert_id=alert.id, event="resolved") is True
    assert default_hook.bodies == []
    assert feature_hook.bodies[0]["event"] == "resolved"
    assert feature_hook.bodies[0]["text"].startswith("[RESOLVED]")
    assert feature_hook.bodies[0]["alert"]["resolved_at"] is not None


@pytest.mark.django_db
@override_settings(SHIPWAY_ALERT_WEBHOOK_URL="")
def test_alert_notify__no_webhook__nothing_sent_but_marked(feature):
    alert = _open(feature)
    assert alert_notify.apply(args=[alert.id]).successful()
    alert.refresh_from_db()
    assert alert.notified_at is not None and alert.notify_attempts == 1


@pytest.mark.django_db
def test_alert_notify__connection_refused__raises_for_retry(feature):
    alert = _open(feature)
    with WebhookReceiver() as hook:
        url = hook.url
    # The server is gone: a direct call raises so Celery's autoretry can back off.
    with override_settings(SHIPWAY_ALERT_WEBHOOK_URL=url), pytest.raises(Exception):  # noqa: B017
        alert_notify(alert.id)
    alert.refresh_from_db()
    assert alert.notified_at is None and alert.notify_attempts == 1


def test_alert_notify__retry_policy():
    assert alert_notify.retry_backoff is True
    assert alert_notify.max_retries == 6


@pytest.mark.django_db
def test_alert_banner__one_query_and_capped_list(feature, personas, rf, django_assert_num_queries):
    from django.template import engines

    for i in range(8):
        _open(feature, key=f"k{i}", title=f"alert number {i}")
    request = rf.get("/")
    request.user = personas["pm"]
    personas["pm"]._shipway_roles = {"pm"}
    template = engines["django"].from_string("{% load alert_tags %}{% alert_banner %}")
    with django_assert_num_queries(1):
        html = template.render({"request": request})
    assert "8 open alerts" in html and "and 3 more" in html
    assert html.count("<li>") == 5  # five titles, then "and 3 more"
    assert 'href="/features/ticket-summarizer/"' in html


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://[::1]/hook", "https://10.1.2.3/hook",
                                 "http://169.254.169.254/latest/meta-data", "http://localhost:8000/x"])
def test_webhook__private_targets_refused_unless_allowed(feature, settings, url):
    from apps.metrics.alerts import alert_notification_send, webhook_target_refusal

    settings.SHIPWAY_WEBHOOK_ALLOW_PRIVATE = False
    assert "non-public address" in webhook_target_refusal(url)
    Budget.objects.create(feature=feature, webhook_url=url)
    alert = _open(feature)
    assert alert_notification_send(alert_id=alert.pk, event="opened") is False  # refused, not retried
    alert.refresh_from_db()
    assert alert.notified_at is None
    settings.SHIPWAY_WEBHOOK_ALLOW_PRIVATE = True
    assert webhook_target_refusal(url) is None


def test_budget_set__private_webhook_address__refused_at_save(feature, personas, settings):
    from apps.core.errors import ValidationFailed
    from apps.metrics.budgets import budget_set

    settings.SHIPWAY_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(ValidationFailed) as err:
        budget_set(actor=personas["pm"], feature=feature, webhook_url="http://192.168.1.5/hook")
    assert "non-public" in err.value.details["webhook_url"][0]


def test_webhook__redirect_is_not_followed(feature):
    """A public URL answering 307 to an internal address must not get the POST there."""
    from apps.metrics.alerts import WebhookFailed, alert_notification_send

    with WebhookReceiver() as internal:
        class Redirect(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                self.send_response(307)
                self.send_header("Location", internal.url)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            Budget.objects.create(feature=feature, webhook_url=f"http://127.0.0.1:{server.server_address[1]}/hook")
            alert = _open(feature)
            with pytest.raises(WebhookFailed, match="307"):
                alert_notification_send(alert_id=alert.pk, event="opened")
        finally:
            server.shutdown()
            server.server_close()
    assert internal.bodies == []
