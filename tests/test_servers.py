"""Tests for the loopback SendGrid stub and SMTP sink in tests/servers.py."""

from __future__ import annotations

import http.client
import json
import smtplib
import socket
import time
import urllib.error
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
import python_http_client.exceptions as hce
import requests
from sendgrid import SendGridAPIClient

try:
    from tests.servers import (
        AUTH_ERROR_BODY,
        SendGridStub,
        SmtpSink,
        data_reply,
        drop_after_read,
        drop_before_read,
        drop_mid_data,
        expand,
        free_port,
        garbage,
        rate_limited,
        slow,
        status,
        validate_mail_send,
    )
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from servers import (  # type: ignore[no-redef]
        AUTH_ERROR_BODY,
        SendGridStub,
        SmtpSink,
        data_reply,
        drop_after_read,
        drop_before_read,
        drop_mid_data,
        expand,
        free_port,
        garbage,
        rate_limited,
        slow,
        status,
        validate_mail_send,
    )

KEY = "SG.test"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib and requests honour *_proxy variables; loopback must never go through one."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def _stub() -> Iterator[SendGridStub]:
    with SendGridStub(api_key=KEY) as stub:
        yield stub


@pytest.fixture
def sg(_stub: SendGridStub) -> Iterator[SendGridStub]:
    _stub.reset()
    _stub.set_api_key(KEY)
    _stub.clock = time.time
    yield _stub
    assert _stub.server_errors == []


@pytest.fixture
def client(sg: SendGridStub) -> SendGridAPIClient:
    return SendGridAPIClient(api_key=KEY, host=sg.url)


def mail(*emails: str, **extra: Any) -> dict[str, Any]:
    """A valid mail-send body with one personalization per address."""
    body: dict[str, Any] = {
        "personalizations": [{"to": [{"email": e}]} for e in emails or ("a@example.org",)],
        "from": {"email": "hq@example.org", "name": "HQ"},
        "subject": "Key messages",
        "content": [
            {"type": "text/plain", "value": "Hello"},
            {"type": "text/html", "value": "<p>Hello</p>"},
        ],
    }
    body.update(extra)
    return body


def post(client: SendGridAPIClient, body: Any, **kw: Any) -> Any:
    return client.client.mail.send.post(request_body=body, **kw)


# --------------------------------------------------------------------------- SendGrid: happy path


def test_accepts_valid_request(sg: SendGridStub, client: SendGridAPIClient) -> None:
    resp = post(client, mail("Ann@Example.org", "bob@example.org"))
    assert resp.status_code == 202
    assert resp.body == b""
    mid = resp.headers["X-Message-Id"]
    assert len(mid) == 22
    assert set(mid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    [rec] = sg.accepted
    assert rec["message_id"] == mid
    assert rec["emails"] == ["ann@example.org", "bob@example.org"]
    assert rec["body"]["subject"] == "Key messages"
    assert sg.requests == 1
    assert sg.url.startswith("http://127.0.0.1:") and not sg.url.endswith("/")


def test_delivered_emails_counts_every_accepted_address(
    sg: SendGridStub, client: SendGridAPIClient
) -> None:
    post(client, mail("a@example.org", "b@example.org"))
    body = mail("A@example.org")
    body["personalizations"][0]["cc"] = [{"email": "c@example.org"}]
    post(client, body)
    assert sg.delivered_emails() == {"a@example.org": 2, "b@example.org": 1, "c@example.org": 1}
    assert [r["emails"] for r in sg.accepted] == [
        ["a@example.org", "b@example.org"],
        ["a@example.org"],
    ]


def test_keep_bodies_false_logs_compactly() -> None:
    with SendGridStub(keep_bodies=False) as stub:
        SendGridAPIClient(api_key="SG.test", host=stub.url).send(mail("x@example.org"))
        assert "body" not in stub.accepted[0]
        assert stub.accepted[0]["emails"] == ["x@example.org"]


def test_thousand_personalizations_accepted(sg: SendGridStub, client: SendGridAPIClient) -> None:
    emails = [f"user{i}@example.org" for i in range(1000)]
    assert post(client, mail(*emails)).status_code == 202
    assert len(sg.accepted[0]["emails"]) == 1000


def test_template_needs_no_subject_or_content(client: SendGridAPIClient) -> None:
    body = mail(template_id="d-123")
    del body["subject"], body["content"]
    assert post(client, body).status_code == 202


def test_subject_in_every_personalization_is_enough(client: SendGridAPIClient) -> None:
    body = mail("a@example.org", "b@example.org")
    del body["subject"]
    for p in body["personalizations"]:
        p["subject"] = "Hi"
    assert post(client, body).status_code == 202


# --------------------------------------------------------------------------- SendGrid: refusals


def test_wrong_key_is_401(sg: SendGridStub) -> None:
    bad = SendGridAPIClient(api_key="SG.wrong", host=sg.url)
    with pytest.raises(hce.UnauthorizedError) as info:
        post(bad, mail())
    assert info.value.status_code == 401
    assert info.value.body == AUTH_ERROR_BODY
    assert info.value.to_dict["errors"][0]["field"] is None
    assert sg.accepted == [] and sg.requests == 1
    sg.set_api_key("SG.wrong")
    assert post(bad, mail()).status_code == 202


def test_missing_auth_header_and_bad_json(sg: SendGridStub) -> None:
    url = sg.url + "/v3/mail/send"
    assert requests.post(url, json=mail(), timeout=5).status_code == 401
    auth = {"Authorization": f"Bearer {KEY}"}
    json_type = {**auth, "Content-Type": "application/json"}
    resp = requests.post(url, data=b"{nope", headers=json_type, timeout=5)
    assert resp.status_code == 400
    assert "errors" in resp.json()
    body = json.dumps(mail()).encode()
    for other in ("text/plain", "application/json; charset=utf-8"):  # exactly application/json
        resp = requests.post(url, data=body, headers={**auth, "Content-Type": other}, timeout=5)
        assert resp.status_code == 415
    assert sg.accepted == []


def test_wrong_path_and_method(sg: SendGridStub) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    assert (
        requests.post(sg.url + "/v3/mail/batch", json={}, headers=auth, timeout=5).status_code
        == 404
    )
    resp = requests.get(sg.url + "/v3/mail/send", headers=auth, timeout=5)
    assert resp.status_code == 405
    assert resp.headers["Allow"] == "POST"
    assert sg.requests == 2 and sg.accepted == []


def _with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set ``value`` at a dotted ``path`` (list indexes as digits); None deletes the key."""
    *parents, last = path.split(".")
    node: Any = body
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is None:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return body


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("personalizations", None, "personalizations"),
    ("personalizations", [], "personalizations"),
    (
        "personalizations",
        [{"to": [{"email": f"u{i}@example.org"}]} for i in range(1001)],
        "personalizations",
    ),
    ("personalizations.0.to", None, "personalizations.0.to"),
    ("personalizations.0.to", [], "personalizations.0.to"),
    ("personalizations.0.to", [{"email": "not-an-address"}], "personalizations.0.to.0.email"),
    (
        "personalizations",
        [{"to": [{"email": f"u{i}-{j}@example.org"} for i in range(501)]} for j in range(2)],
        "personalizations",
    ),
    (
        "personalizations",
        [{"to": [{"email": "a@example.org"}]}, {"to": [{"email": "A@example.ORG"}]}],
        "personalizations.1.to",
    ),
    ("personalizations.0.cc", [{"email": "A@example.org"}], "personalizations.0.cc"),
    ("from", None, "from.email"),
    ("from", {"name": "HQ"}, "from.email"),
    ("subject", None, "subject"),
    ("content", None, "content"),
    ("content", [], "content"),
    ("content.0.value", "", "content.0.value"),
    (
        "content",
        [{"type": "text/html", "value": "<p>x</p>"}, {"type": "text/plain", "value": "x"}],
        "content.0.type",
    ),
    ("custom_args", {"n": 1}, "custom_args.n"),
    ("personalizations.0.custom_args", {"n": 1}, "personalizations.0.custom_args.n"),
    ("personalizations.0.custom_args", {"big": "x" * 10_000}, "personalizations.0.custom_args"),
    ("personalizations.0.substitutions", {"-k-": "x" * 9_998}, "personalizations.0.substitutions"),
    ("personalizations.0.substitutions", {"-k-": 5}, "personalizations.0.substitutions.-k-"),
    ("headers", {"Reply-To": "x@example.org"}, "headers.Reply-To"),
    ("headers", {"X-Custom": 1}, "headers.X-Custom"),
    ("personalizations.0.headers", {"X-SG-ID": "1"}, "personalizations.0.headers.X-SG-ID"),
    ("categories", [f"c{i}" for i in range(11)], "categories"),
    ("categories", ["x" * 256], "categories.0"),
    ("categories", [7], "categories.0"),
    ("reply_to", {"name": "nobody"}, "reply_to.email"),
]


@pytest.mark.parametrize(("path", "value", "field"), BAD_BODIES)
def test_validation_errors(
    sg: SendGridStub, client: SendGridAPIClient, path: str, value: Any, field: str
) -> None:
    body = _with(mail(), path, value)
    with pytest.raises(hce.BadRequestsError) as info:
        post(client, body)
    errors = info.value.to_dict["errors"]
    assert field in [e["field"] for e in errors], errors
    assert all(set(e) == {"message", "field", "help"} and e["message"] for e in errors)
    assert sg.accepted == []


def test_custom_args_limit_counts_top_level_merge() -> None:
    body = mail(custom_args={"top": "x" * 6_000})
    assert validate_mail_send(body) == []
    body["personalizations"][0]["custom_args"] = {"mine": "y" * 4_000}
    assert [e["field"] for e in validate_mail_send(body)] == ["personalizations.0.custom_args"]


def test_substitutions_limit_counts_utf8_bytes() -> None:
    body = mail()
    body["personalizations"][0]["substitutions"] = {"k": "é" * 4_999}  # 1 + 9_998 bytes
    assert validate_mail_send(body) == []
    body["personalizations"][0]["substitutions"] = {"k": "é" * 5_000}
    assert validate_mail_send(body) != []


# --------------------------------------------------------------------------- SendGrid: faults


@pytest.mark.parametrize(
    ("code", "exc"),
    [
        (400, hce.BadRequestsError),
        (401, hce.UnauthorizedError),
        (413, hce.PayloadTooLargeError),
        (429, hce.TooManyRequestsError),
        (500, hce.InternalServerError),
        (502, hce.HTTPError),
        (503, hce.ServiceUnavailableError),
        (504, hce.GatewayTimeoutError),
    ],
)
def test_status_faults(
    sg: SendGridStub, client: SendGridAPIClient, code: int, exc: type[Exception]
) -> None:
    sg.script(status(code))
    with pytest.raises(exc) as info:
        post(client, mail("a@example.org"))
    assert type(info.value) is exc
    assert info.value.status_code == code
    assert "errors" in json.loads(info.value.body)
    assert sg.accepted == []
    assert [(n, f.kind, f.code) for n, f in sg.fault_log] == [(1, "status", code)]
    assert post(client, mail("a@example.org")).status_code == 202  # queue empty: normal again


def test_status_fault_custom_body_and_headers(sg: SendGridStub, client: SendGridAPIClient) -> None:
    errors = {"errors": [{"message": "boom", "field": "content", "help": None}]}
    sg.script(status(400, errors, {"X-Trace": "t1"}))
    with pytest.raises(hce.BadRequestsError) as info:
        post(client, mail())
    assert info.value.to_dict == errors
    assert info.value.headers["X-Trace"] == "t1"


def test_rate_limit_headers_reach_the_exception(
    sg: SendGridStub, client: SendGridAPIClient
) -> None:
    sg.script(rate_limited(reset_in=2, retry_after=1))
    with pytest.raises(hce.TooManyRequestsError) as info:
        post(client, mail())
    headers = info.value.headers  # http.client.HTTPMessage: case-insensitive
    assert headers["retry-after"] == "1"
    assert headers["X-RateLimit-Limit"] == "600"
    assert headers["X-RateLimit-Remaining"] == "0"
    sg.clock = lambda: 1_700_000_000.5  # a fixed clock, as in the transport's tests
    sg.script(rate_limited(reset_in=2, retry_after=None))
    with pytest.raises(hce.TooManyRequestsError) as info:
        post(client, mail())
    assert info.value.headers["X-RateLimit-Reset"] == "1700000002"
    assert sg.accepted == []


def test_script_order_fault_log_and_reset(sg: SendGridStub, client: SendGridAPIClient) -> None:
    sg.script(status(503), status(500))
    assert sg.pending_faults == 2
    for exc in (hce.ServiceUnavailableError, hce.InternalServerError):
        with pytest.raises(exc):
            post(client, mail())
    assert post(client, mail()).status_code == 202
    assert [(n, str(f)) for n, f in sg.fault_log] == [(1, "status(503)"), (2, "status(500)")]
    sg.script(status(500))
    sg.reset()
    assert (sg.requests, sg.accepted, sg.fault_log, sg.pending_faults) == (0, [], [], 0)
    assert post(client, mail()).status_code == 202


def test_faults_are_not_consumed_by_wrong_paths(
    sg: SendGridStub, client: SendGridAPIClient
) -> None:
    sg.script(status(500))
    assert requests.get(sg.url + "/v3/mail/send", timeout=5).status_code == 405
    with pytest.raises(hce.InternalServerError):
        post(client, mail())
    assert sg.fault_log[0][0] == 2


def test_slow_times_out_client_but_mail_went_out(
    sg: SendGridStub, client: SendGridAPIClient
) -> None:
    sg.script(slow(1.0))
    client.client.timeout = 0.3  # propagates: every .mail.send child copies it
    with pytest.raises(TimeoutError):  # the client gave up: its own time-out, not a clock
        post(client, mail("slow@example.org"))
    assert sg.delivered_emails() == {"slow@example.org": 1}  # logged before the sleep


def test_slow_timeout_per_call_and_patient_client(
    sg: SendGridStub, client: SendGridAPIClient
) -> None:
    sg.script(slow(0.4), slow(0.2))
    with pytest.raises(TimeoutError):
        post(client, mail("a@example.org"), timeout=0.1)
    resp = post(client, mail("b@example.org"))  # waited out slow(0.2) with the default
    assert resp.status_code == 202 and [str(f) for _, f in sg.fault_log] == [
        "slow(0.4)",
        "slow(0.2)",
    ]
    assert resp.headers["X-Message-Id"] == sg.accepted[1]["message_id"]


def test_drop_after_read_logs_accepted(sg: SendGridStub, client: SendGridAPIClient) -> None:
    sg.script(drop_after_read(), drop_after_read(reset=True), drop_after_read())
    with pytest.raises(http.client.RemoteDisconnected):
        post(client, mail("a@example.org"))
    with pytest.raises(ConnectionResetError):
        post(client, mail("b@example.org"))
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(
            sg.url + "/v3/mail/send",
            json=mail("c@example.org"),
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=5,
        )
    assert sg.delivered_emails() == {"a@example.org": 1, "b@example.org": 1, "c@example.org": 1}


def test_drop_after_read_of_invalid_request_accepts_nothing(
    sg: SendGridStub, client: SendGridAPIClient
) -> None:
    sg.script(drop_after_read())
    with pytest.raises(ConnectionError):
        post(client, {"personalizations": []})
    assert sg.accepted == []


@pytest.mark.parametrize("size", [1, 1000])
def test_drop_before_read_accepts_nothing(
    sg: SendGridStub, client: SendGridAPIClient, size: int
) -> None:
    sg.script(drop_before_read(), drop_before_read(reset=False), drop_before_read())
    body = mail(*(f"u{i}@example.org" for i in range(size)))
    for _ in range(2):
        with pytest.raises(OSError) as info:  # URLError too is an OSError
            post(client, body)
        assert isinstance(info.value, (ConnectionError, urllib.error.URLError))
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(sg.url + "/v3/mail/send", json=body, timeout=5)
    assert sg.accepted == []
    assert post(client, body).status_code == 202


def test_garbage(sg: SendGridStub, client: SendGridAPIClient) -> None:
    sg.script(garbage(), garbage(500))
    resp = post(client, mail("a@example.org"))
    assert resp.status_code == 202
    assert "X-Message-Id" not in resp.headers
    with pytest.raises(ValueError):
        resp.to_dict  # noqa: B018 - the property parses JSON
    with pytest.raises(hce.InternalServerError) as info:
        post(client, mail("b@example.org"))
    with pytest.raises(ValueError):
        info.value.to_dict  # noqa: B018
    assert sg.delivered_emails() == {"a@example.org": 1}


def test_refused_after_stop() -> None:
    stub = SendGridStub()
    url = stub.url
    stub.stop()
    stub.stop()  # idempotent; returning at all is the check (no clock)
    with pytest.raises(urllib.error.URLError) as info:
        post(SendGridAPIClient(api_key="SG.test", host=url), mail())
    assert isinstance(info.value.reason, ConnectionRefusedError)


# --------------------------------------------------------------------------- SMTP sink


def message(to: str | list[str], subject: str = "Key messages") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "hq@example.org"
    msg["To"] = to if isinstance(to, str) else ", ".join(to)
    msg["Subject"] = subject
    msg.set_content("Hello\n")
    return msg


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


def test_smtp_records_messages(smtp: SmtpSink) -> None:
    assert smtp.host == "127.0.0.1" and smtp.port > 0
    with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as s:
        assert s.send_message(message(["A@example.org", "b@example.org"])) == {}
        s.send_message(message("a@example.org", "Second"))
    [(mail_from, rcpts, raw), _] = smtp.messages
    assert mail_from == "hq@example.org"
    assert rcpts == ["A@example.org", "b@example.org"]
    assert isinstance(raw, bytes) and b"Subject: Key messages" in raw
    assert [m["Subject"] for m in smtp.parsed()] == ["Key messages", "Second"]
    assert smtp.parsed()[0].get_content() == "Hello\n"
    assert smtp.delivered_emails() == {"a@example.org": 2, "b@example.org": 1}


def test_smtp_without_auth_does_not_offer_it(smtp: SmtpSink) -> None:
    with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as s:
        s.ehlo()
        assert not s.has_extn("auth")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            s.login("user", "pass")


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
def test_smtp_auth(mechanism: str) -> None:
    with SmtpSink(auth=("user", "pass")) as sink:
        with smtplib.SMTP(sink.host, sink.port, timeout=5) as s:
            s.ehlo()
            s.user, s.password = "user", "wrong"
            authobject = getattr(s, f"auth_{mechanism.lower()}")
            with pytest.raises(smtplib.SMTPAuthenticationError) as info:
                s.auth(mechanism, authobject, initial_response_ok=mechanism == "PLAIN")
            assert info.value.smtp_code == 535
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                s.send_message(message("a@example.org"))
            assert refused.value.smtp_code == 530
            s.password = "pass"
            assert s.auth(mechanism, authobject)[0] == 235
            s.send_message(message("a@example.org"))
        assert sink.auth_attempts == [("user", False), ("user", True)]
        assert sink.delivered_emails() == {"a@example.org": 1}


def test_smtp_login_helper() -> None:
    with SmtpSink(auth=("user", "pass")) as sink, smtplib.SMTP(sink.host, sink.port) as s:
        s.login("user", "pass")
        s.send_message(message("a@example.org"))
        assert len(sink.messages) == 1


def test_smtp_recipient_refused(smtp: SmtpSink) -> None:
    smtp.fail_recipient("Gone@example.org", 550, "5.1.1 No such user")
    with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as s:
        refused = s.send_message(message(["gone@example.org", "ok@example.org"]))
        assert refused == {"gone@example.org": (550, b"5.1.1 No such user")}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.send_message(message("gone@example.org"))
    assert [rcpts for _, rcpts, _ in smtp.messages] == [["ok@example.org"]]


def test_smtp_temporary_recipient_failure(smtp: SmtpSink) -> None:
    smtp.fail_recipient("busy@example.org", 451, "4.2.1 Mailbox busy", times=1)
    with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            s.send_message(message("busy@example.org"))
        assert info.value.recipients["busy@example.org"][0] == 451
        s.send_message(message("busy@example.org"))
    assert smtp.delivered_emails() == {"busy@example.org": 1}


@pytest.mark.parametrize("code", [451, 550])
def test_smtp_data_reply(smtp: SmtpSink, code: int) -> None:
    smtp.script(data_reply(code, "x.y.z Scripted"))
    with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as s:
        with pytest.raises(smtplib.SMTPDataError) as info:
            s.send_message(message("a@example.org"))
        assert (info.value.smtp_code, info.value.smtp_error) == (code, b"x.y.z Scripted")
        s.send_message(message("a@example.org"))  # same connection still usable
    assert smtp.delivered_emails() == {"a@example.org": 1}
    assert [(n, str(f)) for n, f in smtp.fault_log] == [(1, f"data_reply({code})")]


def test_smtp_421_closes_connection(smtp: SmtpSink) -> None:
    smtp.script(data_reply(421))
    s = smtplib.SMTP(smtp.host, smtp.port, timeout=5)
    s.ehlo()
    s.mail("hq@example.org")
    s.rcpt("a@example.org")
    assert s.data(message("a@example.org").as_bytes())[0] == 421
    with pytest.raises(smtplib.SMTPServerDisconnected):
        s.noop()
    s.close()
    assert smtp.messages == []


def test_smtp_drop_mid_data(smtp: SmtpSink) -> None:
    smtp.script(drop_mid_data())
    with (
        smtplib.SMTP(smtp.host, smtp.port, timeout=5) as s,
        pytest.raises(smtplib.SMTPServerDisconnected),
    ):
        s.send_message(message("a@example.org"))
    assert smtp.messages == [] and smtp.delivered_emails() == {}
    with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as s:
        s.send_message(message("a@example.org"))
    assert smtp.delivered_emails() == {"a@example.org": 1}
    smtp.reset()
    assert (smtp.messages, smtp.fault_log) == ([], [])


def test_smtp_stop_frees_port() -> None:
    sink = SmtpSink()
    port = sink.port
    sink.stop()
    sink.stop()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass
    assert free_port() > 0


def test_tracking_settings_shape_is_validated() -> None:
    good = {
        "click_tracking": {"enable": False, "enable_text": False},
        "open_tracking": {"enable": True},
        "subscription_tracking": {"enable": False},
        "ganalytics": {"enable": False},
    }
    assert validate_mail_send(mail(tracking_settings=good)) == []
    for bad, field in [
        ("off", "tracking_settings"),
        ({"click_tracking": {"enable": "false"}}, "tracking_settings.click_tracking.enable"),
        ({"click_tracking": {"enabled": False}}, "tracking_settings.click_tracking.enabled"),
        ({"clicks": {"enable": False}}, "tracking_settings.clicks"),
        ({"open_tracking": True}, "tracking_settings.open_tracking"),
    ]:
        fields = [e["field"] for e in validate_mail_send(mail(tracking_settings=bad))]
        assert fields == [field], (bad, fields)


def test_more_than_100_substitutions_are_refused() -> None:
    body = mail()
    body["personalizations"][0]["substitutions"] = {f"-{i}-": "x" for i in range(101)}
    assert [e["field"] for e in validate_mail_send(body)] == ["personalizations.0.substitutions"]


@pytest.mark.parametrize("order", ["given", "reversed", "at-once"])
def test_expand_fills_tags_in_the_order_and_passes_asked_for(order) -> None:
    subs = {"-a-": "-b-", "-b-": "B"}
    once = expand("x -a- y", subs, order)
    assert once == {"given": "x B y", "reversed": "x -b- y", "at-once": "x -b- y"}[order]
    assert expand("x -a- y", subs, order, passes=2) == "x B y"
