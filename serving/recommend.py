"""The pure logic of /recommend around the ranking: A/B assignment, the request's time and feature age.

The ranking itself (candidates, both models, blend, top-k) is models/ranking.py's `rank`, the
function `tandem evaluate` replays too. Everything here is unit-tested without services.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence

from tandem.settings import Variant

AB_SALT = "tandem-ab-v1"


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


class RequestTimeRefused(ValueError):
    """A /recommend that sent context.request_time to a server that does not accept it (a 400)."""


def request_now(request_time: float | None, allowed: bool, clock: Callable[[], float] = time.time) -> float:
    """The time a request is ranked at: the server's clock, or `context.request_time` when the server allows it.

    Off by default: ranking depends on "now" (session recency, trend decay), so a client that may pick it could
    make a stale session look fresh; replays that must rank as of an event's time switch it on.
    """
    if request_time is None:
        return clock()
    if not allowed:
        raise RequestTimeRefused("context.request_time: this server does not accept a request time (it ranks "
                                 "as of its own clock); start it with TANDEM_SERVE_ALLOW_REQUEST_TIME=1 to allow it")
    return request_time


def feature_age_s(now_epoch: float, *updated_epochs: float | None) -> float:
    """Seconds since the freshest of the given feature timestamps (0 when none is known)."""
    known = [t for t in updated_epochs if t is not None]
    return max(0.0, now_epoch - max(known)) if known else 0.0
