"""Soak: a process that makes and drops channels in a loop stays flat in memory and Redis.

``tests/churn_process.py`` runs in a subprocess (so its RSS is its own) with a 1 s
``expiry``: each dropped channel is swept within expiry + one tick (here 2 s). After a
warm-up, the process's RSS, the node's channel-record hash and the groups' member sets
must stay bounded by what the last 2 s of churn can hold, not grow with the total made.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from dataclasses import dataclass

import psutil
import pytest
import redis

from broadcast_layer._protocol.keys import Keys

from .churn_process import EXPIRY, GROUPS

SECONDS = 36  # the churn process's run; samples arrive once a second
WARM_UP = 8  # samples skipped: the first sweeps, the allocator reaching its working size
TICK = EXPIRY  # the upkeep tick: min(heartbeat_interval=5, expiry)
# Without the sweep RSS grows ~2 KB per channel made: over 150 MiB in this run. With it,
# growth after warm-up is the allocator's: 0.1 to 2.3 MiB in most runs, 6.4 once in CI.
RSS_GROWTH_LIMIT = 16 * 1024 * 1024


@dataclass
class Sample:
    at: float
    made: int
    channels: int  # the node's mailboxes
    records: int  # HLEN of the node's channel-record hash
    members: int  # ZCARD summed over the groups
    keys: int  # every key under the prefix
    rss: int


def sample(line: bytes, process: psutil.Process, client: redis.Redis, keys: Keys) -> Sample:
    report = json.loads(line)
    return Sample(
        at=time.monotonic(),
        made=report["made"],
        channels=report["channels"],
        records=client.hlen(keys.node_records(report["node"])),
        members=sum(client.zcard(keys.members(group)) for group in GROUPS),
        keys=sum(1 for _ in client.scan_iter(match=f"{keys.prefix}:*", count=1000)),
        rss=process.memory_info().rss,
    )


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 60)
async def test_made_and_dropped_channels_leave_memory_and_redis_flat(
    redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.churn_process", redis_url, prefix, str(SECONDS),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    process, keys = psutil.Process(child.pid), Keys(prefix)
    samples: list[Sample] = []
    try:
        while line := await asyncio.wait_for(child.stdout.readline(), timeout=30):
            samples.append(sample(line, process, redis_client, keys))
        assert await asyncio.wait_for(child.wait(), timeout=30) == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()

    assert len(samples) > WARM_UP + 10
    steady = samples[WARM_UP:]
    rates = [(b.made - a.made) / (b.at - a.at) for a, b in itertools.pairwise(samples)]
    bound = max(rates) * (EXPIRY + TICK) * 1.5 + 200  # what the last expiry + tick can hold
    growth = max(s.rss for s in steady) - steady[0].rss
    print(
        f"\nmade {samples[-1].made} channels in {samples[-1].at - samples[0].at:.0f} s "
        f"(peak {max(rates):.0f}/s); after warm-up: RSS {steady[0].rss / 2**20:.1f} -> "
        f"max {max(s.rss for s in steady) / 2**20:.1f} MiB, node records max "
        f"{max(s.records for s in steady)}, group members max {max(s.members for s in steady)}, "
        f"mailboxes max {max(s.channels for s in steady)}, keys max "
        f"{max(s.keys for s in steady)}; bound {bound:.0f}"
    )
    assert samples[-1].made - steady[0].made > bound  # far more made than may be kept
    assert growth < RSS_GROWTH_LIMIT
    for s in steady:
        assert s.records <= bound
        assert s.members <= bound
        assert s.channels <= bound
        assert s.keys <= 100  # groups, indices, node records, credit keys
