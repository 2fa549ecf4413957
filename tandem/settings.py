"""Where everything lives: paths, service addresses and defaults, read once from the environment.

Every address can be pointed at a cluster through its environment variable; the
defaults are the loopback services that `tandem services up` starts.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r}: expected 1/true/yes/on or 0/false/no/off")


class SettingsError(ValueError):
    """A setting from the environment that tandem cannot use."""


# A/B variants of /recommend: the share of users each gets and the online model's weight in the blend. The hybrid's
# 1 is what `tandem evaluate` chose on the validation split of MovieLens 100k (NDCG@10 0.1034 against 0.1013 at
# 0.75); on the demo data's the two tie (0.0853 and 0.0854). The online model takes the batch score as an input.
DEFAULT_AB_VARIANTS = ('{"hybrid": {"share": 0.5, "online_weight": 1.0}, '
                       '"batch_only": {"share": 0.5, "online_weight": 0.0}}')


MATERIALIZERS = ("tandem", "feast")


@dataclass(frozen=True)
class Variant:
    name: str
    share: float
    online_weight: float


def parse_ab_variants(raw: str) -> tuple[Variant, ...]:
    """TANDEM_AB_VARIANTS (JSON: {name: {"share": s, "online_weight": w}}) as variants; shares must sum to 1."""
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"TANDEM_AB_VARIANTS is not valid JSON: {exc}") from None
    if not isinstance(spec, dict) or not spec:
        raise SettingsError("TANDEM_AB_VARIANTS: expected a non-empty JSON object {name: {share, online_weight}}")
    variants = []
    for name, v in spec.items():
        if not isinstance(v, dict) or set(v) - {"share", "online_weight"} or "share" not in v:
            raise SettingsError(f"TANDEM_AB_VARIANTS[{name!r}]: expected "
                                f"{{\"share\": s, \"online_weight\": w}}, got {v!r}")
        share, weight = v["share"], v.get("online_weight", 0.0)
        for label, x in (("share", share), ("online_weight", weight)):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= x <= 1.0:
                raise SettingsError(f"TANDEM_AB_VARIANTS[{name!r}].{label}: expected a number in [0, 1], got {x!r}")
        variants.append(Variant(str(name), float(share), float(weight)))
    total = sum(v.share for v in variants)
    if abs(total - 1.0) > 1e-6:
        raise SettingsError(f"TANDEM_AB_VARIANTS: shares sum to {total:g}, expected 1")
    return tuple(variants)


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: Path(_env("TANDEM_HOME", str(PROJECT_ROOT / ".tandem"))))
    redis_url: str = field(default_factory=lambda: _env("TANDEM_REDIS_URL", "redis://127.0.0.1:6379/0"))
    kafka_bootstrap: str = field(default_factory=lambda: _env("TANDEM_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    kafka_controller_port: int = field(default_factory=lambda: _env_int("TANDEM_KAFKA_CONTROLLER_PORT", 9093))
    kafka_partitions: int = field(default_factory=lambda: _env_int("TANDEM_KAFKA_PARTITIONS", 4))
    mlflow_uri: str = field(default_factory=lambda: _env("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"))
    spark_master: str = field(default_factory=lambda: _env("TANDEM_SPARK_MASTER", "local[*]"))
    serve_host: str = field(default_factory=lambda: _env("TANDEM_SERVE_HOST", "127.0.0.1"))
    serve_port: int = field(default_factory=lambda: _env_int("TANDEM_SERVE_PORT", 3000))
    topic: str = field(default_factory=lambda: _env("TANDEM_TOPIC", "interactions"))
    stream_metrics_port: int = field(default_factory=lambda: _env_int("TANDEM_STREAM_METRICS_PORT", 9108))
    seed: int = field(default_factory=lambda: _env_int("TANDEM_SEED", 7))
    # serving: empty API key = no authentication (the server binds to loopback by default)
    api_key: str = field(default_factory=lambda: _env("TANDEM_API_KEY", ""), repr=False)
    ab_variants_json: str = field(default_factory=lambda: _env("TANDEM_AB_VARIANTS", DEFAULT_AB_VARIANTS))
    model_poll_s: float = field(default_factory=lambda: _env_float("TANDEM_MODEL_POLL_S", 3.0))
    serve_workers: int = field(default_factory=lambda: _env_int("TANDEM_SERVE_WORKERS", 1))
    # BentoML's per-request access log costs CPU on the hot path; /recommend decisions are logged anyway
    serve_access_log: bool = field(default_factory=lambda: _env("TANDEM_SERVE_ACCESS_LOG", "0") in ("1", "true"))
    # /recommend's context.request_time (rank as of that time instead of now): off by default, because a client
    # that picks "now" picks how fresh sessions and trends look; `tandem evaluate --through-stack` turns it on
    serve_allow_request_time: bool = field(
        default_factory=lambda: _env_bool("TANDEM_SERVE_ALLOW_REQUEST_TIME", False))
    # how often serving re-reads the stream's trending rows; 0: on every /recommend (exact, one more Redis read)
    trending_refresh_s: float = field(default_factory=lambda: _env_float("TANDEM_SERVE_TRENDING_REFRESH_S", 2.0))
    # the longest serving keeps its item snapshot without a materialization (a backstop: materialize reloads it)
    item_cache_ttl_s: float = field(default_factory=lambda: _env_float("TANDEM_SERVE_ITEM_CACHE_TTL_S", 600.0))
    feature_repo: Path = field(default_factory=lambda: Path(_env("TANDEM_FEATURE_REPO",
                                                                 str(PROJECT_ROOT / "feature_repo"))))
    # who writes the batch views online: tandem's column-wise writer, or Feast's FeatureStore.materialize
    materializer_name: str = field(default_factory=lambda: _env("TANDEM_MATERIALIZER", "tandem"))

    def __post_init__(self) -> None:
        if not 0.0 <= self.trending_refresh_s <= 3600.0:  # NaN fails both comparisons
            raise SettingsError(f"TANDEM_SERVE_TRENDING_REFRESH_S={self.trending_refresh_s!r}: expected seconds in "
                                "[0, 3600] (0: re-read trending on every request)")
        if not 1.0 <= self.item_cache_ttl_s <= 7 * 86_400.0:
            raise SettingsError(f"TANDEM_SERVE_ITEM_CACHE_TTL_S={self.item_cache_ttl_s!r}: expected seconds in "
                                "[1, 604800] (a week)")

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    @property
    def data_dir(self) -> Path:
        """The default dataset directory (commands take --data/--out to use another)."""
        return Path(_env("TANDEM_DATA", str(self.home / "data")))

    @property
    def ab_variants(self) -> tuple[Variant, ...]:
        return parse_ab_variants(self.ab_variants_json)

    @property
    def materializer(self) -> str:
        """TANDEM_MATERIALIZER: `tandem` (default, pipelines/batch/materialize.py) or `feast` (its batch engine)."""
        name = self.materializer_name.strip().lower()
        if name not in MATERIALIZERS:
            raise SettingsError(f"TANDEM_MATERIALIZER={self.materializer_name!r}: expected one of "
                                f"{', '.join(MATERIALIZERS)}")
        return name

    @property
    def serving_cache_dir(self) -> Path:
        """Where serving keeps its local fallback cache (popular items, item features) for Redis outages."""
        return self.home / "serving"

    @property
    def decision_log(self) -> Path:
        """One JSON line per /recommend answer (user, variant, model versions, items) for comparing A/B variants."""
        return Path(_env("TANDEM_DECISION_LOG", str(self.serving_cache_dir / "decisions.jsonl")))

    @property
    def kafka_libs(self) -> Path:
        """The Apache Kafka broker jars, fetched from Maven Central once (TANDEM_KAFKA_LIBS: a shared cache)."""
        return Path(_env("TANDEM_KAFKA_LIBS", str(self.home / "kafka" / "libs")))

    @property
    def run_dir(self) -> Path:
        """PID files and logs of the local services."""
        return self.home / "run"

    @property
    def offline_dir(self) -> Path:
        """The offline store: feature tables as parquet, read by Spark and Feast."""
        return Path(_env("TANDEM_OFFLINE_DIR", str(self.home / "offline")))

    @property
    def feast_redis(self) -> str:
        """TANDEM_REDIS_URL in the `host:port,db=N` form Feast's Redis online store expects."""
        host, port = self.redis_host_port
        db = urlparse(self.redis_url).path.strip("/") or "0"
        return f"{host}:{port},db={db}"

    @property
    def feast_registry(self) -> Path:
        """Feast's file registry (what `feast apply` writes)."""
        return Path(_env("TANDEM_FEAST_REGISTRY", str(self.home / "feast" / "registry.db")))

    def feast_environment(self) -> dict[str, str]:
        """Variables that feature_repo/feature_store.yaml reads as ${...} placeholders, plus the Python
        Spark workers must run: Feast's spark.engine executes Python on them (DESIGN §8)."""
        env = {"TANDEM_HOME": str(self.home), "TANDEM_FEAST_REDIS": self.feast_redis,
                "TANDEM_FEAST_REGISTRY": str(self.feast_registry),
                "TANDEM_OFFLINE_DIR": str(self.offline_dir), "TANDEM_SPARK_MASTER": self.spark_master,
                "PYSPARK_PYTHON": _env("PYSPARK_PYTHON", sys.executable),
                "PYSPARK_DRIVER_PYTHON": _env("PYSPARK_DRIVER_PYTHON", sys.executable)}
        if self.spark_master.startswith("local"):
            # in-process Spark binds to loopback like every other local service
            env["SPARK_LOCAL_IP"] = _env("SPARK_LOCAL_IP", "127.0.0.1")
        return env

    @property
    def redis_host_port(self) -> tuple[str, int]:
        parsed = urlparse(self.redis_url)
        if parsed.scheme not in ("redis", "rediss"):
            raise SettingsError(f"TANDEM_REDIS_URL={self.redis_url!r}: expected redis://host:port/db")
        return parsed.hostname or "127.0.0.1", parsed.port or 6379

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        first = self.kafka_bootstrap.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        if not host or not port.isdigit():
            raise SettingsError(f"TANDEM_KAFKA_BOOTSTRAP={self.kafka_bootstrap!r}: expected host:port[,host:port]")
        return host, int(port)

    @property
    def mlflow_host_port(self) -> tuple[str, int]:
        parsed = urlparse(self.mlflow_uri)
        if parsed.scheme not in ("http", "https"):
            raise SettingsError(f"MLFLOW_TRACKING_URI={self.mlflow_uri!r}: expected http://host:port")
        return parsed.hostname or "127.0.0.1", parsed.port or (443 if parsed.scheme == "https" else 80)


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def get_settings() -> Settings:
    return Settings()


def export_feast_environment(settings: Settings | None = None) -> None:
    """Fill the feature_store.yaml placeholders in this process (values already set win)."""
    for key, value in (settings or get_settings()).feast_environment().items():
        os.environ.setdefault(key, value)
