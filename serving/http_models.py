"""Request and response bodies of the HTTP API (DESIGN.md §3), with the input limits they enforce.

Unknown fields are rejected (400 naming them) so that a misspelt option never silently does nothing.
`/feedback` bodies are checked by `tandem.schema.validate_event`, the one event validation; the model
here only documents the fields in the OpenAPI spec.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from _bentoml_sdk.io_models import IOMixin
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from tandem.schema import EVENT_TYPES, MAX_EVENT_BYTES, MAX_ID_LENGTH, MAX_VALUE, REQUIRED_FIELDS, check_id

MAX_K = 100
DEFAULT_K = 10
MAX_EXCLUDE = 500
# context.request_time: Unix seconds from 1970-01-01 up to 2100-01-01 (anything else is not a request's time)
MIN_REQUEST_TIME, MAX_REQUEST_TIME = 0.0, 4_102_444_800.0
# a /recommend body is small; anything bigger is refused before parsing (413)
MAX_BODY_BYTES = max(64 * 1024, MAX_EVENT_BYTES)


class RecommendContext(BaseModel):
    """Optional request context."""

    model_config = ConfigDict(extra="forbid")

    session_id: str | None = Field(None, description="The client's session id (logged with the decision).")
    exclude_item_ids: Annotated[list[str], Field(max_length=MAX_EXCLUDE)] = Field(
        default_factory=list, description=f"Items not to recommend (e.g. already shown), at most {MAX_EXCLUDE}.")
    request_time: float | None = Field(
        None, description="Rank as of this time (Unix seconds, a finite number from 1970 to 2100) instead of the "
                          "server's clock; only accepted when the server sets TANDEM_SERVE_ALLOW_REQUEST_TIME=1 "
                          "(replays such as `tandem evaluate --through-stack`).",
        json_schema_extra={"type": "number", "minimum": MIN_REQUEST_TIME, "maximum": MAX_REQUEST_TIME})

    @field_validator("request_time", mode="before")
    @classmethod
    def _request_time(cls, v: Any) -> float | None:
        """A number of seconds, strictly: no strings, no booleans, nothing infinite or outside 1970–2100."""
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"expected Unix seconds as a number, got {type(v).__name__} {v!r:.40}")
        # range first: a 400-digit integer compares exactly, where float(v) or isfinite(v) would overflow
        if not MIN_REQUEST_TIME <= v <= MAX_REQUEST_TIME or not math.isfinite(v):
            raise ValueError(f"expected Unix seconds from {MIN_REQUEST_TIME:.0f} (1970) to {MAX_REQUEST_TIME:.0f} "
                             f"(2100), got {v!r}")
        return float(v)

    @field_validator("session_id")
    @classmethod
    def _session_id(cls, v: str | None) -> str | None:
        return None if v is None else check_id("session_id", v)

    @field_validator("exclude_item_ids")
    @classmethod
    def _exclude(cls, v: list[str]) -> list[str]:
        return [check_id("exclude_item_ids[]", x) for x in v]


class RecommendRequest(IOMixin, BaseModel):
    """POST /recommend body."""

    model_config = ConfigDict(extra="forbid", title="RecommendRequest")

    user_id: str = Field(description=f"The user to recommend for (1–{MAX_ID_LENGTH} characters). "
                                     "Unknown users get popular items.")
    k: StrictInt = Field(DEFAULT_K, ge=1, le=MAX_K, description=f"How many items to return, 1–{MAX_K}.")
    context: RecommendContext = Field(default_factory=RecommendContext)

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, v: str) -> str:
        return check_id("user_id", v)


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(description="The blended score the list is ordered by.")
    batch_score: float | None = Field(description="The batch champion's score.")
    online_score: float | None = Field(description="The online champion's score (null when it is not loaded).")


class ModelVersions(BaseModel):
    batch: str | None = Field(description="Version of batch-ranker@champion used, null if none is registered.")
    online: str | None = Field(description="Version of online-ranker@champion used, null if none is registered.")


class RecommendResponse(BaseModel):
    user_id: str
    items: list[RecommendedItem]
    variant: str = Field(description="The A/B variant the user is assigned to (TANDEM_AB_VARIANTS).")
    model_versions: ModelVersions
    degraded: bool = Field(description="True when a fallback answered: online store unreachable, or a model missing.")
    degraded_reasons: list[str] = Field(default_factory=list, description="Why the answer is degraded, if it is.")
    feature_age_s: float = Field(description="Seconds since the freshest feature this answer used was written.")


_EVENT_DOCS = {
    "event_id": "Unique id of the event (string, ≤ 128 characters).",
    "user_id": "The user (string, ≤ 128 characters).",
    "item_id": "The item (string, ≤ 128 characters).",
    "event_type": f"One of {', '.join(EVENT_TYPES)}.",
    "value": f"Rating in [0, 5] (required for `rating`) or price; optional number in [0, {MAX_VALUE:g}].",
    "ts": "Event time, ISO-8601 with a timezone, e.g. 2026-01-31T12:00:00Z.",
    "session_id": "Optional session id (string, ≤ 128 characters).",
}


# at least one character that is neither whitespace nor a control character, none that is a control character
_ID_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\x00-\\x20\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
_ID_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": _ID_PATTERN}


class FeedbackEvent(IOMixin, BaseModel):
    """POST /feedback body: one interaction event in tandem's event schema (tandem/schema.py)."""

    # values are typed loosely on purpose: validate_event is the one place that judges an event;
    # the JSON schema still documents what it accepts
    model_config = ConfigDict(extra="forbid", title="FeedbackEvent",
                              json_schema_extra={"required": list(REQUIRED_FIELDS)})

    event_id: Any = Field(None, description=_EVENT_DOCS["event_id"], json_schema_extra=_ID_SCHEMA)
    user_id: Any = Field(None, description=_EVENT_DOCS["user_id"], json_schema_extra=_ID_SCHEMA)
    item_id: Any = Field(None, description=_EVENT_DOCS["item_id"], json_schema_extra=_ID_SCHEMA)
    event_type: Any = Field(None, description=_EVENT_DOCS["event_type"],
                            json_schema_extra={"type": "string", "enum": list(EVENT_TYPES)})
    value: Any = Field(None, description=_EVENT_DOCS["value"], json_schema_extra={"type": "number", "minimum": 0,
                                                                              "maximum": MAX_VALUE})
    ts: Any = Field(None, description=_EVENT_DOCS["ts"], json_schema_extra={"type": "string", "format": "date-time"})
    session_id: Any = Field(None, description=_EVENT_DOCS["session_id"], json_schema_extra=_ID_SCHEMA)


class FeedbackAccepted(BaseModel):
    event_id: str
    topic: str
    partition: int
    offset: int
