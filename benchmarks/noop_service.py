"""The stock baseline of the serving benchmark: a BentoML POST /recommend that does no work.

Declared with tandem's own server settings (serving/server.py: workers, threads, timeout, access log) and
the same request and response models as serving/service.py, so BentoML parses and validates the same
body and serializes a response of the same size (k items); what it skips is everything tandem does per
request (online features, candidates, two models, ranking, decision log) and tandem's ASGI middleware.

    python -m bentoml serve benchmarks.noop_service:NoopRecommender --port 3001 --working-dir .
"""

from __future__ import annotations

import random

import bentoml

from serving.http_models import (
    MAX_K,
    ModelVersions,
    RecommendContext,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
)
from serving.server import server_options
from tandem.settings import get_settings

# a fixed answer shaped like tandem's: ids like the demo's, probabilities with full float precision
_rng = random.Random(7)
_SCORES = sorted((_rng.random() for _ in range(MAX_K)), reverse=True)
ITEMS = [RecommendedItem(item_id=f"i{i:04d}", score=s, batch_score=s, online_score=_rng.random())
         for i, s in enumerate(_SCORES)]
VERSIONS = ModelVersions(batch="1", online="1")


@bentoml.service(name="tandem-noop", **server_options(get_settings()))
class NoopRecommender:
    """Answers /recommend with the first k of a fixed list."""

    @bentoml.api(route="/recommend", input_spec=RecommendRequest)
    def recommend(self, user_id: str, k: int = 10, context: RecommendContext | None = None) -> RecommendResponse:
        return RecommendResponse(user_id=user_id, items=ITEMS[:k], variant="hybrid", model_versions=VERSIONS,
                                 degraded=False, degraded_reasons=[], feature_age_s=0.123)
