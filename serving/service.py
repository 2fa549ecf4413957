"""The BentoML service: POST /recommend, POST /feedback; BentoML adds /healthz, /livez, /readyz, /metrics, /docs.

Thin on purpose: features come from serving/features.py, models from serving/models.py, and the
ranking from models/ranking.py `rank` (the function `tandem evaluate` replays). Run it with
`tandem serve` (loopback by default).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from pathlib import Path
from typing import Any

import bentoml
from prometheus_client import Counter
from starlette.responses import JSONResponse

from models.ranking import ItemState, Ranker, default_popular, rank, user_view
from models.rows import check_columns
from serving.features import OnlineFeatures, OnlineStoreUnavailable, UserRecord
from serving.feedback import FeedbackProducer, FeedbackUnavailable
from serving.http_models import (
    MAX_BODY_BYTES,
    FeedbackAccepted,
    FeedbackEvent,
    ModelVersions,
    RecommendContext,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
)
from serving.models import ChampionHolder
from serving.recommend import RequestTimeRefused, assign_variant, feature_age_s, request_now
from serving.server import server_options
from tandem.schema import (
    MAX_EVENT_BYTES,
    EventError,
    decode_json,
    json_needs_checks,
    lone_surrogate_at,
    validate_event,
)
from tandem.settings import get_settings

log = logging.getLogger("tandem.serving")
decisions = logging.getLogger("tandem.serving.decisions")

SETTINGS = get_settings()
API_PATHS = {"/recommend": MAX_BODY_BYTES, "/feedback": MAX_EVENT_BYTES}
# probes and the API docs stay open; /recommend, /feedback and /metrics need the key when TANDEM_API_KEY is set
OPEN_PATHS = ("/healthz", "/livez", "/readyz", "/static_content/")
OPEN_DOCS = ("/", "/docs", "/docs.json")

# BentoML runs prometheus_client in multiprocess mode and exports this on /metrics with its own metrics
recommendations_total = Counter("tandem_recommendations_total", "Answers of /recommend by A/B variant and degradation.",
                                ["variant", "degraded"])


class RequestGuard:
    """ASGI middleware: API key, body size and content type checks, and 400 bodies that name the problem."""

    def __init__(self, app: Any, api_key: str = ""):
        self.app = app
        self.api_key = api_key.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        if path == "/docs":  # DESIGN.md §3 promises the docs at /docs; BentoML's Swagger UI lives at /
            return await _redirect(send, "/")
        if self.api_key and not (path in OPEN_DOCS or path.startswith(OPEN_PATHS)) and not self._authorized(headers):
            return await _reject(send, 401, "missing or wrong API key: send it as the X-API-Key header "
                                            "(or Authorization: Bearer <key>)")
        limit = API_PATHS.get(path)
        if limit is None or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        ctype = headers.get("content-type", b"").split(b";")[0].strip().lower()
        if ctype != b"application/json":
            shown = f"Content-Type {ctype.decode('latin-1')!r} is" if ctype else "a body without a Content-Type is"
            return await _reject(send, 415, f"{shown} not supported; send Content-Type: application/json")
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _reject(send, 413, f"request body of {declared.decode('latin-1')} bytes is too large: "
                                            f"at most {limit} bytes on {path}")
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > limit:
                return await _reject(send, 413, f"request body is too large: at most {limit} bytes on {path}")
            if not message.get("more_body", False):
                break
        problem = _json_problem(bytes(body), limit)
        if problem:
            log.info("client error on %s [POST]: %s", path, problem)
            return await _reject(send, 400, problem)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, _NamedErrors(send))

    def _authorized(self, headers: dict[str, bytes]) -> bool:
        given = headers.get("x-api-key")
        if given is None:
            auth = headers.get("authorization", b"")
            given = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
        return hmac.compare_digest(given, self.api_key)


class _NamedErrors:
    """Rewrites BentoML's 400 validation bodies so `error` says which field is wrong and why."""

    def __init__(self, send: Any):
        self.send = send
        self.start: dict | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start" and message["status"] == 400:
            self.start = message
            return
        if self.start is None:
            return await self.send(message)
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(self.chunks)
        try:
            data = json.loads(body)
            if isinstance(data, dict) and isinstance(data.get("detail"), list) and data["detail"]:
                data["error"] = "; ".join(_describe(d) for d in data["detail"])
                body = json.dumps(data).encode()
        except (json.JSONDecodeError, TypeError, KeyError):
            pass
        headers = [(k, v) for k, v in self.start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


def _json_problem(body: bytes, limit: int) -> str | None:
    """What BentoML's parser would refuse without naming it (too deep, a huge integer, a lone surrogate), in the
    schema's words; None for the usual body, which a cheap scan clears without decoding it."""
    if not json_needs_checks(body):
        return None
    try:
        doc = decode_json(body, limit)
    except EventError as exc:
        return str(exc)
    where = lone_surrogate_at(doc)
    return f"{where}: contains a lone surrogate (not a Unicode character)" if where else None


def _describe(detail: dict) -> str:
    loc = ".".join(str(p) for p in detail.get("loc", ()) if p != "body") or "body"
    msg = str(detail.get("msg", "invalid"))
    if detail.get("type") == "extra_forbidden":
        msg = "unknown field (not accepted; see the API docs at /docs)"
    return f"{loc}: {msg}"


async def _redirect(send: Any, location: str) -> None:
    await send({"type": "http.response.start", "status": 307,
                "headers": [(b"location", location.encode()), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


async def _reject(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class OneLineClientErrors(logging.Filter):
    """BentoML logs every bad request as an ERROR with a traceback; a client's mistake is one INFO line here
    (a 5xx keeps its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from bentoml.exceptions import BentoMLException
        from pydantic import ValidationError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ValidationError):
            summary = "; ".join(_describe(d) for d in exc.errors(include_context=False, include_input=False))
        elif isinstance(exc, BentoMLException) and int(exc.error_code) < 500:
            summary = f"{int(exc.error_code)}: {exc}"
        else:
            return True
        path, method = (record.args + ("?", "?"))[:2] if isinstance(record.args, tuple) else ("?", "?")
        record.msg, record.args = "client error on %s [%s]: %s", (path, method, summary[:500])
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


logging.getLogger("bentoml._internal.server.http_app").addFilter(OneLineClientErrors())
# BentoML's server logs WARNING and up from other packages; tandem's INFO lines (champion swaps, client errors,
# the producer connecting) are worth a line each
logging.getLogger("tandem").setLevel(logging.INFO)


def _log_decisions_to(path: Path) -> None:
    """Send the decision log (one JSON object per line) to `path`; appends from several workers interleave by line."""
    if decisions.handlers:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    decisions.addHandler(handler)
    decisions.setLevel(logging.INFO)
    decisions.propagate = False


@bentoml.service(name="tandem", **server_options(SETTINGS))
class Recommender:
    """Hybrid batch + online recommendations over Feast's online store."""

    def __init__(self) -> None:
        self.settings = get_settings()
        _log_decisions_to(self.settings.decision_log)
        self.variants = self.settings.ab_variants
        self.features = OnlineFeatures(self.settings)
        self.models = ChampionHolder(self.settings)
        # (snapshot version, batch version) → popular items, and the popular items of each category
        self._popular: tuple[tuple[str, str | None], list[str], dict[str, list[str]]] = (("", None), [], {})
        self._popular_lock = threading.Lock()
        self.feedback_producer = FeedbackProducer(self.settings)
        self.features.on_items_changed.append(lambda _: self._refresh_popular())
        self.models.on_change.append(lambda _: self._refresh_popular())
        self.features.start()
        self.models.start()
        self._refresh_popular()

    def __is_ready__(self) -> bool:
        """Ready once the batch champion is loaded (the online one is optional: batch-only is a fallback)."""
        return self.models.current.batch is not None

    # ---- /recommend --------------------------------------------------------------------------

    @bentoml.api(route="/recommend", input_spec=RecommendRequest)
    def recommend(self, user_id: str, k: int = 10, context: RecommendContext | None = None) -> RecommendResponse:
        """Top-k items for a user: candidates from the precomputed list, the session's item neighbours and trending,
        scored by the batch and online champions and blended by the user's A/B variant."""
        context = context or RecommendContext()
        try:
            now = request_now(context.request_time, self.settings.serve_allow_request_time)
        except RequestTimeRefused as exc:
            log.info("client error on /recommend [POST]: %s", exc)
            return JSONResponse({"error": str(exc), "field": "context.request_time"},  # type: ignore[return-value]
                                status_code=400)
        try:
            return self._recommend(user_id, k, context, now)
        except Exception as exc:  # a recommender always answers: popular items, flagged, and the error logged
            log.exception("recommend(%r) failed; answering with popular items", user_id)
            return self._popular_answer(user_id, k, context, f"error:{type(exc).__name__}")

    def _popular_answer(self, user_id: str, k: int, context: RecommendContext, reason: str) -> RecommendResponse:
        champions = self.models.current
        _, popular, _ = self._popular
        exclude = set(context.exclude_item_ids)
        items = [i for i in popular or self.features.items.item_ids if i not in exclude][:k]
        recommendations_total.labels(variant="fallback", degraded="true").inc()
        return RecommendResponse(
            user_id=user_id, items=[RecommendedItem(item_id=i, score=0.0, batch_score=None, online_score=None)
                                    for i in items],
            variant=assign_variant(user_id, self.variants).name,
            model_versions=ModelVersions(batch=champions.batch.version if champions.batch else None,
                                         online=champions.online.version if champions.online else None),
            degraded=True, degraded_reasons=[reason], feature_age_s=0.0)

    def _recommend(self, user_id: str, k: int, context: RecommendContext, now: float) -> RecommendResponse:
        champions = self.models.current  # read once: a swap mid-request cannot mix versions
        # TANDEM_SERVE_TRENDING_REFRESH_S=0: this request reads trending itself, so it sees every applied event
        snapshot, item_columns, trending = self.features.item_columns(
            fresh_trending=self.settings.trending_refresh_s == 0)
        variant = assign_variant(user_id, self.variants)
        reasons: list[str] = []
        try:
            record = self.features.read_user(user_id)
        except OnlineStoreUnavailable:
            reasons.append("online_store_unreachable")
            record = self.features.cached_user(user_id) or UserRecord({}, None, False)
        if snapshot.source != "redis":
            reasons.append("item_features_from_local_cache")
        user = user_view(user_id, record.values, record.updated_epoch, self.features.contract)
        _, popular, by_category = self._popular
        items = ItemState(snapshot.item_ids, snapshot.index, item_columns, snapshot.categories, snapshot.neighbours,
                          snapshot.neighbour_scores, trending, popular, by_category, snapshot.sequence,
                          snapshot.sequence_scores)
        if champions.batch is not None:
            self._check(champions.batch)
        ranking = rank(user, record.values, items, champions.batch, champions.online, variant.online_weight, k, now,
                       context.exclude_item_ids)
        reasons.extend(ranking.missing)
        ranked = ranking.items
        age = feature_age_s(now, record.updated_epoch) if record.found else feature_age_s(now, snapshot.updated_epoch)
        response = RecommendResponse(
            user_id=user_id,
            items=[RecommendedItem(item_id=r.item_id, score=r.score, batch_score=r.batch_score,
                                   online_score=r.online_score) for r in ranked],
            variant=variant.name,
            model_versions=ModelVersions(batch=champions.batch.version if champions.batch else None,
                                         online=champions.online.version if champions.online else None),
            degraded=bool(reasons), degraded_reasons=reasons, feature_age_s=round(age, 3))
        recommendations_total.labels(variant=variant.name, degraded=str(bool(reasons)).lower()).inc()
        if decisions.isEnabledFor(logging.INFO):
            decisions.info(json.dumps({
                "ts": round(now, 3), "user_id": user_id, "variant": variant.name, "known_user": user.known,
                "degraded": reasons, "model_versions": response.model_versions.model_dump(),
                "session_id": context.session_id, "items": [r.item_id for r in ranked],
                "feature_age_s": response.feature_age_s}))
        return response

    def _check(self, ranker: Ranker) -> None:
        """Every batch-model column must come from the model's feature service or be derived by serving
        (FeatureSkewError otherwise); checked once per model version and Feast registry schema."""
        services = self.features.services
        key = id(services)
        if key not in ranker._checked:
            check_columns(ranker.feature_columns, services.get(ranker.feature_service), ranker.feature_service)
            ranker._checked.clear()
            ranker._checked[key] = True

    def _refresh_popular(self) -> None:
        """The batch champion's top items for the default (empty) profile: what a cold user is shown."""
        with self._popular_lock:
            snapshot = self.features.items
            batch = self.models.current.batch
            key = (snapshot.version, batch.version if batch else None)
            if key == self._popular[0] or not snapshot.item_ids:
                return
            _, item_columns, _ = self.features.item_columns()
            try:
                if batch is not None:
                    self._check(batch)
                popular, by_category = default_popular(batch, snapshot.item_ids, item_columns, snapshot.categories)
            except Exception:  # a model serving cannot feed: no popular list, categories in catalogue order
                log.exception("%s v%s cannot score the default profile", batch.name, batch.version)
                popular, by_category = default_popular(None, snapshot.item_ids, item_columns, snapshot.categories)
            self._popular = (key, popular, by_category)

    # ---- /feedback ---------------------------------------------------------------------------

    @bentoml.api(route="/feedback", input_spec=FeedbackEvent)
    async def feedback(self, **fields: Any) -> FeedbackAccepted:
        """Record one interaction: validated against tandem's event schema, then produced to Kafka
        (topic `interactions`, keyed by user id) for the stream processor. 202: it is in the topic;
        503: it was not produced (retry it: the event_id makes a retry count once)."""
        raw = {k: v for k, v in fields.items() if v is not None}
        try:
            event = validate_event(raw)
        except EventError as exc:
            log.info("client error on /feedback [POST]: %s", exc)
            return JSONResponse({"error": str(exc), "field": exc.field},  # type: ignore[return-value]
                                status_code=400)
        try:
            meta = await self.feedback_producer.produce(event)
        except FeedbackUnavailable as exc:  # Kafka down is not the client's fault: 503 so it retries
            log.warning("event %s not produced: %s", event.event_id, exc)
            return JSONResponse({"error": f"event not recorded: {exc}"}, status_code=503,  # type: ignore[return-value]
                                headers={"Retry-After": "1"})
        accepted = FeedbackAccepted(event_id=event.event_id, topic=meta.topic, partition=meta.partition,
                                    offset=meta.offset)
        return JSONResponse(accepted.model_dump(), status_code=202)  # type: ignore[return-value]


Recommender.add_asgi_middleware(RequestGuard, api_key=SETTINGS.api_key)
