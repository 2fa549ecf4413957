"""The pure logic of /recommend around the ranking: A/B assignment and feature age.

The ranking itself (candidates, both models, blend, top-k) is models/ranking.py's `rank`, the
function `tandem evaluate` replays too. Everything here is unit-tested without services.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

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


def feature_age_s(now_epoch: float, *updated_epochs: float | None) -> float:
    """Seconds since the freshest of the given feature timestamps (0 when none is known)."""
    known = [t for t in updated_epochs if t is not None]
    return max(0.0, now_epoch - max(known)) if known else 0.0
