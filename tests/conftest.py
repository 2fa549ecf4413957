"""The test suite owns its services: its own state directory and ports, never the ones `make demo` set up.

Set before anything imports tandem's settings, so every test, and every `tandem` subprocess a test
starts, sees them: Redis, Kafka and MLflow of the suite run under `.tandem/test/` on ports of their
own, and the suite leaves the user's registry, Redis data and topics as they were. The Kafka broker
jars are the one thing shared: a cache of what Maven Central served.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TEST_ENVIRONMENT = {
    "TANDEM_HOME": str(ROOT / ".tandem" / "test"),
    "TANDEM_REDIS_URL": "redis://127.0.0.1:6390/0",
    "TANDEM_KAFKA_BOOTSTRAP": "127.0.0.1:9192",
    "TANDEM_KAFKA_CONTROLLER_PORT": "9193",
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:5090",
    "TANDEM_SERVE_PORT": "3090",
    "TANDEM_STREAM_METRICS_PORT": "9190",
    "TANDEM_KAFKA_LIBS": os.environ.get("TANDEM_KAFKA_LIBS") or str(ROOT / ".tandem" / "kafka" / "libs"),
}
# derived from TANDEM_HOME unless set: a user's own values must not leak into the suite
DERIVED = ("TANDEM_DATA", "TANDEM_OFFLINE_DIR", "TANDEM_FEAST_REGISTRY", "TANDEM_FEAST_REDIS", "TANDEM_DECISION_LOG",
           "TANDEM_TOPIC", "TANDEM_API_KEY", "TANDEM_SPARK_MASTER")

os.environ.update(TEST_ENVIRONMENT)
for _name in DERIVED:
    os.environ.pop(_name, None)
