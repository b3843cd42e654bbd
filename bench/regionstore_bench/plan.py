"""How big each scenario is: the full run and the quick (smoke) run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Plan:
    """Counts and concurrency of every scenario; recorded in the results as they were."""

    name: str
    seed: int = 20260514
    # 1. baselines: the same number of messages/documents as the batch ingest
    baseline_runs: int = 3
    rtt_messages: int = 2000
    insert_runs: int = 3
    # Documents per insert_many run (the first ones of the ingest's): the rate barely depends
    # on the count, and three runs of every document would add minutes to the run.
    insert_documents: int = 34_000
    # 2. single-request ingest
    single_requests: int = 20_000
    single_concurrency: int = 32
    single_rounds: int = 3
    # On a busy 2-core machine the full count may not fit the run's time: stop sending then,
    # and record how many were sent.
    single_budget_s: float = 90.0
    unloaded_requests: int = 300
    # 3. batch ingest
    batch_customers: int = 100_000
    batch_size: int = 1000
    batch_concurrency: int = 4
    # 4. recovery
    recovery_writes: int = 50_000
    # 5. queries (per condition: all regions up, one region down): rounds of every shape, the
    # point read included, so a time budget cuts every shape alike.
    queries_per_shape: int = 120
    # One at a time: each latency is the query's own, not a queue's.
    query_concurrency: int = 1
    query_budget_s: float = 90.0
    query_timeout_s: float = 30.0
    # how long writes may take to settle before the audit gives up
    apply_timeout_s: float = 600.0
    # 6. store writes per customer write on maps of 3, 6 and 12 regions: customers per map
    map_customers: int = 300
    map_sizes: tuple[int, ...] = (3, 6, 12)
    # 7. a parked backlog drained while live writes go to the same region, paced and not:
    # commands parked, live commands per second, and seconds of live writes alone before.
    paced_backlog: int = 30_000
    paced_live_rate: int = 200
    paced_baseline_s: float = 10.0
    # 8. end to end, every process running: seconds of the idle round, of each fixed-rate round
    # (20, 100 and 1,000 writes/s), and of the sustained rounds (single creates from 32
    # connections as fast as answered; the reference app, when given).
    e2e_idle_s: float = 10.0
    e2e_round_s: float = 10.0
    e2e_sustained_s: float = 30.0

    def as_dict(self) -> dict[str, Any]:
        """The plan as plain data, for the results file."""
        return dataclasses.asdict(self)


FULL = Plan(name="full")
QUICK = Plan(
    name="quick",
    baseline_runs=3,
    rtt_messages=300,
    insert_runs=3,
    insert_documents=10_000,
    single_requests=2000,
    single_concurrency=32,
    single_rounds=2,
    single_budget_s=15.0,
    unloaded_requests=100,
    batch_customers=10_000,
    batch_size=1000,
    batch_concurrency=4,
    recovery_writes=5000,
    queries_per_shape=30,
    query_concurrency=1,
    query_budget_s=20.0,
    query_timeout_s=15.0,
    apply_timeout_s=240.0,
    map_customers=60,
    paced_backlog=3000,
    paced_live_rate=100,
    paced_baseline_s=3.0,
    e2e_idle_s=2.0,
    e2e_round_s=2.0,
    e2e_sustained_s=5.0,
)
SMOKE = Plan(
    name="smoke",
    baseline_runs=1,
    rtt_messages=100,
    insert_runs=1,
    insert_documents=2000,
    single_requests=400,
    single_concurrency=16,
    single_rounds=1,
    single_budget_s=4.0,
    unloaded_requests=20,
    batch_customers=2000,
    batch_size=500,
    batch_concurrency=2,
    recovery_writes=2000,
    queries_per_shape=5,
    query_concurrency=1,
    query_budget_s=5.0,
    query_timeout_s=15.0,
    apply_timeout_s=240.0,
    map_customers=20,
    map_sizes=(3,),
    paced_backlog=1000,
    paced_live_rate=50,
    paced_baseline_s=1.0,
    e2e_idle_s=1.0,
    e2e_round_s=0.5,
    e2e_sustained_s=1.5,
)
"""Every scenario once at the smallest counts that still give each of its figures: what the
bench's own test runs (``--smoke``), to prove the run and its results file whole, not to
measure."""
