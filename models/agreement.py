"""How often two answers to the same queries are the same list: the in-process replay against the real stack.

`tandem evaluate --through-stack` (tandem/through_stack.py) asks the running server the queries the
in-process replay answered (models/evaluate.py `ReplayedQuery`) and hands both lists here. A list
agrees only if it is identical — same items in the same order — since the claim is that the replay
*is* the platform without its network hops, not that it is close to it. Each side's NDCG/HitRate over
the same queries comes with it, so a disagreement's cost to the measured quality is visible too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from models.metrics import QueryMetrics

DISAGREEMENTS_KEPT = 5


@dataclass(frozen=True)
class Compared:
    """One query both sides answered: the revealed item and each side's top-k."""

    index: int  # the query's index after T (0: the first event after T)
    user_id: str
    item_id: str
    in_process: tuple[str, ...]
    served: tuple[str, ...]

    @property
    def identical(self) -> bool:
        return self.in_process == self.served


@dataclass
class Agreement:
    """Identical lists among the compared queries, the first disagreements, and both sides' quality."""

    k: int
    compared: int
    identical: int
    disagreements: list[Compared] = field(default_factory=list)  # the first DISAGREEMENTS_KEPT, in query order
    in_process: dict[str, float] = field(default_factory=dict)  # {"ndcg", "hitrate"} over the compared queries
    served: dict[str, float] = field(default_factory=dict)

    @property
    def share(self) -> float:
        """Identical lists over compared queries (1.0 when nothing was compared: there is no disagreement)."""
        return self.identical / self.compared if self.compared else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {"compared": self.compared, "identical": self.identical, "share": round(self.share, 6),
                f"in_process_ndcg@{self.k}": self.in_process["ndcg"],
                f"in_process_hitrate@{self.k}": self.in_process["hitrate"],
                f"through_stack_ndcg@{self.k}": self.served["ndcg"],
                f"through_stack_hitrate@{self.k}": self.served["hitrate"],
                "first_disagreements": [{"query": d.index, "user_id": d.user_id, "item_id": d.item_id,
                                         "in_process": list(d.in_process), "through_stack": list(d.served)}
                                        for d in self.disagreements]}


def agreement(compared: Sequence[Compared], k: int, keep: int = DISAGREEMENTS_KEPT) -> Agreement:
    """Count identical top-k lists and score both sides on the compared queries (lists longer than k are cut)."""
    if k < 1:
        raise ValueError(f"k: expected a positive integer, got {k!r}")
    sides = {"in_process": QueryMetrics("in-process"), "served": QueryMetrics("through-stack")}
    identical, disagreements = 0, []
    for query in compared:
        left, right = tuple(query.in_process[:k]), tuple(query.served[:k])
        sides["in_process"].add(query.item_id, left)
        sides["served"].add(query.item_id, right)
        if left == right:
            identical += 1
        elif len(disagreements) < keep:
            disagreements.append(Compared(query.index, query.user_id, query.item_id, left, right))
    summary = {name: m.summary(k) for name, m in sides.items()}
    quality = {name: {"ndcg": float(s[f"ndcg@{k}"]), "hitrate": float(s[f"hitrate@{k}"])}
               for name, s in summary.items()}
    return Agreement(k, len(compared), identical, disagreements, quality["in_process"], quality["served"])
