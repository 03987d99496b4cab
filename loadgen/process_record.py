"""What the plugin keeps for each Locust process beside Locust's `Environment` (which has no field for it):
one typed record per environment, created at init. Locust's report_to_master and worker_report listeners
receive no environment, so the process's one environment is kept here too."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import gevent
from gevent.event import Event
from locust.env import Environment

from loadgen.prepare import Target
from loadgen.runstate import RunState
from loadgen.shards import ShardBook


@dataclass(slots=True, eq=False)
class ProcessRecord:
    state: RunState
    # The master's bookkeeping of its workers this test, by Locust client id.
    expected_workers: set[str] = field(default_factory=set)  # told their configuration
    final_workers: set[str] = field(default_factory=set)  # whose last records arrived
    shard_book: ShardBook | None = None
    # Set when init has prepared the target (readiness, model, tokenizer, prompts); None: init did not.
    prepared: Event | None = None
    target: Target | None = None
    not_ready: bool = False  # the server never became ready: users stop before sending anything
    scrape_loop: gevent.Greenlet | None = None


_records: weakref.WeakKeyDictionary[Environment, ProcessRecord] = weakref.WeakKeyDictionary()
_current: list[Environment] = []  # this process's environment, once init ran


def attach(environment: Environment, record: ProcessRecord) -> None:
    _records[environment] = record
    _current[:] = [environment]


def record_of(environment: Environment) -> ProcessRecord | None:
    """The environment's record; None before init (or for an environment the plugin never saw)."""
    return _records.get(environment)


def current_environment() -> Environment | None:
    return _current[0] if _current else None
