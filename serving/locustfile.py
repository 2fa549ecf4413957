"""Load test for the serving API: mostly /recommend over a pool of known and unknown users, some /feedback.

    locust -f serving/locustfile.py --host http://127.0.0.1:3000 --headless -u 60 -r 60 -t 30s \
        --csv .tandem/load/recommend

Each simulated user sends 5 requests/s, so 60 users is the DESIGN.md §6 operating point (300 req/s, where
/recommend must hold p99 ≤ 15 ms on 2 cores). Set TANDEM_LOAD_USERS (comma list, or a count for u0000…)
and TANDEM_LOAD_ITEMS (i0000…) to match the dataset being served, and TANDEM_API_KEY if the server has one.
`tandem bench` is the careful measurement against a no-op endpoint; this file is the quick, by-hand check.
"""

from __future__ import annotations

import os
import random
import uuid
from datetime import UTC, datetime

from locust import HttpUser, constant_throughput, task


def _users() -> list[str]:
    raw = os.environ.get("TANDEM_LOAD_USERS", "1000")
    if raw.isdigit():
        return [f"u{i:04d}" for i in range(int(raw))]
    return [u for u in raw.split(",") if u]


USERS = _users()
N_ITEMS = int(os.environ.get("TANDEM_LOAD_ITEMS", "200"))
HEADERS = {"Content-Type": "application/json"}
if os.environ.get("TANDEM_API_KEY"):
    HEADERS["X-API-Key"] = os.environ["TANDEM_API_KEY"]


class ApiUser(HttpUser):
    # each simulated user sends 5 requests/s: 60 users ≈ 300 req/s, the DESIGN.md §6 operating point
    wait_time = constant_throughput(5)

    @task(20)
    def recommend_known(self) -> None:
        self.client.post("/recommend", json={"user_id": random.choice(USERS), "k": 10}, headers=HEADERS,
                         name="/recommend")

    @task(2)
    def recommend_cold(self) -> None:
        self.client.post("/recommend", json={"user_id": f"new-{uuid.uuid4().hex[:12]}", "k": 10}, headers=HEADERS,
                         name="/recommend (cold user)")

    @task(1)
    def feedback(self) -> None:
        event = {"event_id": uuid.uuid4().hex, "user_id": random.choice(USERS),
                 "item_id": f"i{random.randrange(N_ITEMS):04d}", "event_type": "click",
                 "ts": datetime.now(UTC).isoformat()}
        self.client.post("/feedback", json=event, headers=HEADERS, name="/feedback")
