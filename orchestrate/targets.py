"""The servers under test: our server started with a campaign profile, or an external URL."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from orchestrate import campaign as camp
from orchestrate.locust_runs import Progress, listed_model, warm_up
from orchestrate.processes import ServerFailed, running_server
from reports.errors import RunFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CampaignTarget:
    """A server under test: a campaign profile (started here, on `model` when given) or an external URL."""

    name: str
    spec: camp.ProfileSpec | None = None
    url: str | None = None
    model: str | None = None

    def describe(self, base_url: str) -> dict[str, str | None]:
        """What the report says this target was (sweep-plan.json `targets`)."""
        if self.url is None:
            return {"profile": self.spec.profile if self.spec else None, "model": self.model}
        return {"url": base_url, "model": self.model or listed_model(base_url)}


@contextlib.contextmanager
def target_server(
    campaign: camp.Campaign, target: CampaignTarget, out: Path, phase: str, derived: dict | None = None
) -> Iterator[str]:
    """The target's base URL: an external one as given, else our server started with the profile."""
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)  # the Locust logs go there, for an external server too
    if target.url is not None:
        yield target.url.rstrip("/")
        return
    assert target.spec is not None
    overlay = camp.write_overlay(target.spec, out / "server" / phase, derived)
    server_log = logs / f"{phase}-{target.name}.server.log"
    try:
        with running_server(
            campaign.config_path, profile=overlay, model=target.model, log_file=server_log
        ) as url:
            yield url
    except ServerFailed as exc:  # did not start or not healthy; the message ends with its last output
        raise RunFailed(f"{target.name}: {exc}\nserver log {server_log}") from None


def base_load(campaign: camp.Campaign, target: CampaignTarget) -> dict:
    load = dict(campaign.load)
    if target.spec is not None:
        load.update(target.spec.load)
    if target.model and target.url is not None:
        load["extra_args"] = [*load.get("extra_args", []), "--model", target.model]
    return load


class Servers:
    """The campaign's servers, running for the whole campaign (the idle ones wait on their queues)."""

    def __init__(self, campaign: camp.Campaign, targets: list[CampaignTarget], out: Path, progress: Progress):
        self.campaign, self.targets, self.out, self.progress = campaign, targets, out, progress
        self.stack = contextlib.ExitStack()
        self.servers: dict[str, contextlib.ExitStack] = {}
        self.urls: dict[str, str] = {}
        self.hints: dict[str, float | None] = {}

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def start(self, phase: str, derived: dict[str, dict] | None = None) -> None:
        """Start (or restart, with `derived` values) the targets' servers side by side: each loads its
        model alone, so three at once take little longer than one. The warm-up requests then run one
        server at a time, so that no server's first reply waits on another's."""
        names = [t.name for t in self.targets if derived is None or t.name in derived]
        for name in names:
            if name in self.servers:
                self.servers.pop(name).close()  # stop it, then start it with the derived values
            self.servers[name] = self.stack.enter_context(contextlib.ExitStack())
        self.progress(f"starting {len(names)} server(s) side by side ({phase}): {', '.join(names)}")
        chosen = [t for t in self.targets if t.name in names]

        def launch(target: CampaignTarget) -> str:
            extra = derived.get(target.name) if derived else None
            return self.servers[target.name].enter_context(
                target_server(self.campaign, target, self.out, phase, extra)
            )

        with ThreadPoolExecutor(max_workers=len(chosen)) as pool:
            futures = {t.name: pool.submit(launch, t) for t in chosen}
            failures = [e for f in futures.values() if (e := f.exception()) is not None]
            if failures:
                raise failures[0]  # the others stop with the stack
            for name, future in futures.items():
                self.urls[name] = future.result()
        for target in chosen:
            max_tokens = camp.LoadSpec.model_validate(base_load(self.campaign, target)).max_tokens
            model = target.model if target.url is not None else None
            self.hints[target.name] = warm_up(self.urls[target.name], model, max_tokens)
