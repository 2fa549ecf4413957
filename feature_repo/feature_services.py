"""Feature services: each one is the feature contract of one model version.

`ranker_batch_v1` feeds the batch ranker (batch features only, so its training set is
complete from history alone); `ranker_hybrid_v1` adds the stream's session and trending
features for models that also see the live state.
"""

from feast import FeatureService
from features.item_features import item_features_v1
from features.stream_features import item_trending_v1, user_session_v1
from features.user_features import user_features_v1

ranker_batch_v1 = FeatureService(
    name="ranker_batch_v1",
    features=[user_features_v1, item_features_v1],
    description="Features of batch-ranker v1: long-term user behaviour and item popularity.",
    owner="tandem",
    tags={"model": "batch-ranker", "version": "1"},
)

ranker_hybrid_v1 = FeatureService(
    name="ranker_hybrid_v1",
    features=[user_features_v1, item_features_v1, user_session_v1, item_trending_v1],
    description="Batch features plus the stream's live session and trending features.",
    owner="tandem",
    tags={"model": "hybrid-ranker", "version": "1"},
)
