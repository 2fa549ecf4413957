"""The pure logic of /recommend: A/B assignment, candidate gathering and top-k.

No I/O here: serving/service.py reads the online store (serving/features.py), holds the models
(serving/models.py), turns online rows into model inputs (serving/rows.py), blends with
models/blend.py, then calls these functions. Everything here is unit-tested without services.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tandem.settings import Variant

AB_SALT = "tandem-ab-v1"
# candidate budget per request (DESIGN.md §6 sizes the hot path for 100 candidates)
MAX_CANDIDATES = 100
COVISIT_QUOTA = 30
SESSION_CATEGORY_QUOTA = 20
TRENDING_QUOTA = 10
MAX_SESSION_ITEMS = 5

SOURCE_COVISIT, SOURCE_SESSION_CATEGORY = "covisit", "session_category"
SOURCE_PRECOMPUTED, SOURCE_TRENDING, SOURCE_POPULAR = "precomputed", "trending", "popular"


def assign_variant(user_id: str, variants: Sequence[Variant], salt: str = AB_SALT) -> Variant:
    """Deterministically map a user to a variant: a hash of (salt, user id) as a point in [0, 1) against the shares."""
    digest = hashlib.blake2b(f"{salt}:{user_id}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") / 2**64
    cumulative = 0.0
    for variant in variants:
        cumulative += variant.share
        if point < cumulative:
            return variant
    return variants[-1]


@dataclass(frozen=True)
class UserView:
    """What the online store knows about one user, as serving needs it."""

    user_id: str
    values: Mapping[str, float] = field(default_factory=dict)  # numeric user features by full name view__feature
    candidates: tuple[str, ...] = ()  # the batch-precomputed candidate list
    session_items: tuple[str, ...] = ()  # the stream's last_item_ids, newest first
    last_category: str | None = None
    updated_epoch: float | None = None  # event time of the freshest user feature row

    @property
    def known(self) -> bool:
        return bool(self.values or self.candidates or self.session_items)


def gather_candidates(
    user: UserView,
    covisit: Mapping[str, Sequence[str]],
    trending: Sequence[str],
    popular: Sequence[str],
    exclude: Iterable[str] = (),
    limit: int = MAX_CANDIDATES,
    session_category: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """Merge candidate sources into at most `limit` unseen items, each with the source that contributed it.

    Order of precedence: items co-visited with the session's last items (round-robin over those items,
    newest first), popular items of the session's last category, the precomputed list, trending, then
    popular items to fill up (all of it for a cold user).
    """
    seen = set(exclude) | set(user.session_items)
    out: list[tuple[str, str]] = []
    taken: set[str] = set()

    def take(items: Iterable[str], source: str, quota: int) -> None:
        added = 0
        for item in items:
            if len(out) >= limit or added >= quota:
                return
            if item in seen or item in taken:
                continue
            taken.add(item)
            out.append((item, source))
            added += 1

    lists = [covisit.get(item, ()) for item in user.session_items[:MAX_SESSION_ITEMS]]
    take(_round_robin(lists), SOURCE_COVISIT, COVISIT_QUOTA)
    take(session_category, SOURCE_SESSION_CATEGORY, SESSION_CATEGORY_QUOTA)
    take(user.candidates, SOURCE_PRECOMPUTED, limit)
    take(trending, SOURCE_TRENDING, TRENDING_QUOTA)
    take(popular, SOURCE_POPULAR, limit)
    return out


def _round_robin(lists: Sequence[Sequence[str]]) -> Iterable[str]:
    longest = max((len(x) for x in lists), default=0)
    for i in range(longest):
        for items in lists:
            if i < len(items):
                yield items[i]


@dataclass(frozen=True)
class Ranked:
    item_id: str
    score: float
    batch_score: float | None
    online_score: float | None


def top_k(
    item_ids: Sequence[str],
    blended: np.ndarray,
    batch: np.ndarray | None,
    online: np.ndarray | None,
    k: int,
) -> list[Ranked]:
    """The k best items by blended score (ties keep candidate order, so results are stable).

    Scores are picked and cleaned (non-finite → 0.0) as arrays, then turned into Python floats in one
    `tolist()`: per item only the Ranked is built, which keeps this off the top of the /recommend profile.
    """
    if len(item_ids) == 0:
        return []
    order = np.argsort(-blended, kind="stable")[:k]
    scores = _finite(blended[order])
    batch_scores = [None] * len(scores) if batch is None else _finite(batch[order])
    online_scores = [None] * len(scores) if online is None else _finite(online[order])
    return [Ranked(item_ids[i], s, b, o)
            for i, s, b, o in zip(order.tolist(), scores, batch_scores, online_scores, strict=True)]


def _finite(x: np.ndarray) -> list[float]:
    """The values as Python floats, NaN and ±inf as 0.0 (JSON has no such numbers)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.isfinite(x), x, 0.0).tolist()


def feature_age_s(now_epoch: float, *updated_epochs: float | None) -> float:
    """Seconds since the freshest of the given feature timestamps (0 when none is known)."""
    known = [t for t in updated_epochs if t is not None]
    return max(0.0, now_epoch - max(known)) if known else 0.0
