"""HTTP input limits without a server: request models, the API-key/body-size guard and its error messages."""

import asyncio
import json
import re

import pytest
from pydantic import ValidationError

from serving.http_models import MAX_K, RecommendRequest
from serving.service import RequestGuard


def test_recommend_request_defaults_and_limits():
    r = RecommendRequest.model_validate_json('{"user_id": "u1"}')
    assert r.k == 10 and r.context.exclude_item_ids == []
    assert RecommendRequest.model_validate({"user_id": "u1", "k": MAX_K}).k == MAX_K
    for bad in [{"user_id": "u1", "k": MAX_K + 1}, {"user_id": "u1", "k": True}, {"user_id": "\t"},
                {"user_id": "u1", "context": {"exclude_item_ids": ["ok", ""]}},
                {"user_id": "u1", "context": {"exclude_item_ids": ["i"] * 501}},
                {"user_id": "u1", "surprise": 1}]:
        with pytest.raises(ValidationError):
            RecommendRequest.model_validate(bad)


async def _echo_app(scope, receive, send):
    body = (await receive())["body"]
    status = 400 if body == b'{"invalid": true}' else 200
    payload = (json.dumps({"error": "1 validation error", "detail": [
        {"type": "int_parsing", "loc": ["body", "k"], "msg": "Input should be a valid integer"}]}).encode()
        if status == 400 else body)
    headers = [(b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _call(guard, path="/recommend", body=b"{}", headers=(("content-type", "application/json"),), chunks=None):
    sent = []
    parts = chunks or [body]

    async def receive():
        chunk = parts.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(parts)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path,
             "headers": [(k.encode(), v.encode()) for k, v in headers]}
    asyncio.run(guard(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


def test_guard_checks_the_api_key_but_leaves_probes_open():
    guard = RequestGuard(_echo_app, api_key="s3cret")
    status, body = _call(guard)
    assert status == 401 and b"API key" in body
    json_body = ("content-type", "application/json")
    assert _call(guard, headers=[json_body, ("x-api-key", "wrong")])[0] == 401
    assert _call(guard, headers=[json_body, ("x-api-key", "s3cret")]) == (200, b"{}")
    assert _call(guard, headers=[json_body, ("authorization", "Bearer s3cret")]) == (200, b"{}")
    assert _call(guard, path="/readyz")[0] == 200
    assert _call(guard, path="/docs.json")[0] == 200
    assert _call(guard, path="/metrics")[0] == 401
    assert _call(guard, path="/docs")[0] == 307
    assert _call(RequestGuard(_echo_app))[0] == 200  # no key configured: open


def test_guard_bounds_the_body_even_without_content_length():
    guard = RequestGuard(_echo_app)
    status, body = _call(guard, headers=[("content-type", "application/json"), ("content-length", "999999")])
    assert status == 413 and b"at most" in body
    status, body = _call(guard, chunks=[b"x" * 40_000, b"x" * 40_000])
    assert status == 413
    assert _call(guard, path="/feedback", body=b"y" * 20_000)[0] == 413
    assert _call(guard, headers=[("content-type", "text/csv")])[0] == 415


def test_a_body_without_a_content_type_is_415_not_taken_as_json():
    status, body = _call(RequestGuard(_echo_app), headers=())
    assert status == 415 and b"without a Content-Type" in body
    assert _call(RequestGuard(_echo_app), headers=[("content-type", "")])[0] == 415


@pytest.mark.parametrize(("body", "words"), [
    (b'{"user_id": "u1", "context": {"exclude_item_ids": ' + b"[" * 5000 + b"]" * 5000 + b"}}", b"nested deeper"),
    (b'{"user_id": "u1", "k": ' + b"9" * 5000 + b"}", b"4300 digits"),
    (b'{"user_id": "u1", "context": {"exclude_item_ids": ["i\\udc00"]}}',
     b"context.exclude_item_ids[0]: contains a lone"),
])
def test_the_guard_refuses_json_no_parser_should_see(body, words):
    status, answer = _call(RequestGuard(_echo_app), body=body)
    assert status == 400 and words in answer, answer


@pytest.mark.parametrize("body", [b'{"user_id": "u1", "k": 5}', b'{"user_id": "[[[[[[[[[[[[[[[[[[[["}',
                                  b'{"user_id": "caf\\u00e9"}', b'{"user_id": "u1"'])
def test_the_guard_passes_everything_else_on(body):
    # ordinary bodies, brackets inside strings, other escapes; plain broken JSON is BentoML's to name (400)
    assert _call(RequestGuard(_echo_app), body=body) == (200, body)


def test_guard_names_the_field_in_validation_errors():
    status, body = _call(RequestGuard(_echo_app), body=b'{"invalid": true}')
    assert status == 400
    assert json.loads(body)["error"] == "k: Input should be a valid integer"


def test_request_time_is_unix_seconds_in_a_sane_range_and_nothing_else():
    from serving.http_models import MAX_REQUEST_TIME

    ok = RecommendRequest.model_validate_json('{"user_id": "u1", "context": {"request_time": 893286638.5}}')
    assert ok.context.request_time == 893286638.5
    assert RecommendRequest.model_validate({"user_id": "u1", "context": {"request_time": 0}}).context.request_time == 0
    assert RecommendRequest.model_validate_json('{"user_id": "u1"}').context.request_time is None
    for bad, words in [('"893286638"', "as a number, got str"), ("true", "as a number, got bool"),
                       ("-1", "from 0 (1970)"), (f"{MAX_REQUEST_TIME + 1}", "to 4102444800 (2100)"),
                       ("1e400", "got inf"), ("NaN", "got nan"), ("[1]", "got list"),
                       ("9" * 400, "to 4102444800 (2100)"), ("-" + "9" * 400, "from 0 (1970)")]:
        with pytest.raises(ValidationError, match=re.escape(words)) as info:
            RecommendRequest.model_validate_json(f'{{"user_id": "u1", "context": {{"request_time": {bad}}}}}')
        assert info.value.errors()[0]["loc"] == ("context", "request_time")


def test_request_time_is_honoured_only_when_the_server_allows_it():
    from serving.recommend import RequestTimeRefused, request_now

    assert request_now(None, allowed=False, clock=lambda: 1234.5) == 1234.5
    assert request_now(None, allowed=True, clock=lambda: 1234.5) == 1234.5
    assert request_now(893286638.5, allowed=True, clock=lambda: 1234.5) == 893286638.5
    with pytest.raises(RequestTimeRefused, match="does not accept a request time.*TANDEM_SERVE_ALLOW_REQUEST_TIME=1"):
        request_now(893286638.5, allowed=False, clock=lambda: 1234.5)


def test_the_request_time_setting_is_off_by_default_and_parsed_strictly(monkeypatch):
    from tandem.settings import Settings, SettingsError

    monkeypatch.delenv("TANDEM_SERVE_ALLOW_REQUEST_TIME", raising=False)
    assert Settings().serve_allow_request_time is False
    for raw, expected in [("1", True), ("true", True), ("YES", True), ("0", False), ("off", False)]:
        monkeypatch.setenv("TANDEM_SERVE_ALLOW_REQUEST_TIME", raw)
        assert Settings().serve_allow_request_time is expected
    monkeypatch.setenv("TANDEM_SERVE_ALLOW_REQUEST_TIME", "sometimes")
    with pytest.raises(SettingsError, match="TANDEM_SERVE_ALLOW_REQUEST_TIME='sometimes': expected 1/true"):
        Settings()


def test_the_trending_refresh_setting_takes_seconds_and_zero_for_every_request(monkeypatch):
    from tandem.settings import Settings, SettingsError

    monkeypatch.delenv("TANDEM_SERVE_TRENDING_REFRESH_S", raising=False)
    assert Settings().trending_refresh_s == 2.0
    monkeypatch.setenv("TANDEM_SERVE_TRENDING_REFRESH_S", "0")
    assert Settings().trending_refresh_s == 0.0
    for bad in ("-1", "nan", "7200"):
        monkeypatch.setenv("TANDEM_SERVE_TRENDING_REFRESH_S", bad)
        with pytest.raises(SettingsError, match="expected seconds in"):
            Settings()


def test_the_item_cache_ttl_setting_takes_seconds_up_to_a_week(monkeypatch):
    from tandem.settings import Settings, SettingsError

    monkeypatch.delenv("TANDEM_SERVE_ITEM_CACHE_TTL_S", raising=False)
    assert Settings().item_cache_ttl_s == 600.0
    monkeypatch.setenv("TANDEM_SERVE_ITEM_CACHE_TTL_S", "86400")
    assert Settings().item_cache_ttl_s == 86_400.0
    for bad in ("0", "nan", "1e9"):
        monkeypatch.setenv("TANDEM_SERVE_ITEM_CACHE_TTL_S", bad)
        with pytest.raises(SettingsError, match="TANDEM_SERVE_ITEM_CACHE_TTL_S=.*expected seconds in"):
            Settings()
