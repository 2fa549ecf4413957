"""The BentoML server settings of `tandem serve`, in one place.

serving/service.py declares the Recommender with them, and `tandem bench` declares its no-op baseline
(benchmarks/noop_service.py) with the very same ones, so the two differ only in the work per request.
"""

from __future__ import annotations

from typing import Any

from tandem.settings import Settings

# threads per worker process for sync APIs: requests wait on Redis, so a few overlap on one core
THREADS = 4
REQUEST_TIMEOUT_S = 30


def server_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of `@bentoml.service` (besides the name) for a server run with these settings."""
    return {
        "workers": settings.serve_workers,
        "threads": THREADS,
        "http": {"host": settings.serve_host, "port": settings.serve_port},
        "traffic": {"timeout": REQUEST_TIMEOUT_S},
        "logging": {"access": {"enabled": settings.serve_access_log}},
    }
