"""Which worker holds which share of the open-loop schedule: assigned by the master, by worker id.

Locust's `worker_index` is never reused, so shards taken from it break when a worker reconnects or a new
one joins. The master keeps the book instead: a worker that asks again gets its own shard back; a new
worker gets the shard of one that is gone (and starts from the present, the past slots stay missed), or
none when every shard is held by a live worker (its users then send nothing in open loop).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Assignment:
    shard: int | None
    takeover: bool  # the shard was held by another worker before: skip the slots already past


@dataclass
class ShardBook:
    shards: int
    holders: dict[int, str] = field(default_factory=dict)  # shard -> worker id

    def assign(self, worker: str, live: set[str]) -> Assignment:
        for shard, holder in self.holders.items():
            if holder == worker:
                return Assignment(shard, takeover=False)
        for shard in range(self.shards):
            current = self.holders.get(shard)
            if current is None or current not in live:
                self.holders[shard] = worker
                return Assignment(shard, takeover=current is not None)
        return Assignment(None, takeover=False)
