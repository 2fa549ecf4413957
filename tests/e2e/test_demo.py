"""`tandem demo` end to end, as `make demo` runs it: its own services, data, batch, online model, stream, server."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_shows_recommendations_change_after_streamed_clicks(tmp_path):
    # an isolated home and ports: the demo's batch run must not touch the state other tests rely on
    env = {**os.environ, "TANDEM_HOME": str(tmp_path / "home"),
           "TANDEM_REDIS_URL": "redis://127.0.0.1:16391/0", "TANDEM_KAFKA_BOOTSTRAP": "127.0.0.1:19191",
           "TANDEM_KAFKA_CONTROLLER_PORT": "19192", "MLFLOW_TRACKING_URI": "http://127.0.0.1:15091",
           "TANDEM_SERVE_PORT": "3191", "TANDEM_STREAM_METRICS_PORT": "9191", "COLUMNS": "120"}

    def tandem(*args, timeout):
        return subprocess.run([sys.executable, "-m", "tandem", *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)

    try:
        demo = tandem("demo", "--users", "2", timeout=1500)
    finally:
        tandem("services", "down", timeout=300)
    out = demo.stdout + demo.stderr
    assert demo.returncode == 0, out[-5000:]
    for step in ("1/6 services", "2/6 data", "3/6 batch", "4/6 online model"):
        assert f"✓ {step}" in out, f"step {step!r} not reported done:\n{out[-3000:]}"
    changed = re.search(r"(\d+) of 2 users' recommendations changed after their streamed clicks", out)
    assert changed and int(changed.group(1)) >= 1, out[-3000:]
    assert "MLflow UI" in out and "/docs" in out
