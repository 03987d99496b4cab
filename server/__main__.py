"""`python -m server --config config/runtime.yaml [--host H] [--port P]`"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from server.app import create_app
from server.appkeys import WORKER_HANDLES
from server.models.embedded import ModelNotFoundError
from server.settings import ConfigError, Settings, load_settings
from server.worker_handle import WorkerUnavailable

log = logging.getLogger("server")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m server", description="OpenAI-compatible MLX server")
    parser.add_argument("--config", type=Path, default=Path("config/runtime.yaml"), help="YAML settings file")
    parser.add_argument(
        "--profile", help="overlay a profile from config/profiles/ by name (v1.1.1, v1.2.0) or a YAML path"
    )
    parser.add_argument("--host", help="bind address (default from config: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port; 0 picks a free one (printed at start)")
    parser.add_argument("--model", help="model path, embedded:NAME or a cached Hugging Face repo id")
    return parser.parse_args(argv)


def overrides_from(args: argparse.Namespace) -> dict:
    server = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    result: dict = {"server": server} if server else {}
    if args.model:
        result["model"] = {"path": args.model}
    return result


async def serve(settings: Settings) -> int:
    app = create_app(settings)
    # handler_cancellation: a client that disconnects cancels its handler, which frees its sequence (and
    # its limiter place) at once. The grace period for in-flight work is app.on_shutdown's (server/app.py);
    # the runner's own timeout only covers writing the last events after that.
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.server.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"serving on http://{host}:{port} (profile {settings.compat})", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    exit_code = 0
    try:
        handles = list(app[WORKER_HANDLES].values())
        ready = asyncio.gather(*(e.wait_ready() for e in handles))
        stopped = asyncio.ensure_future(stop.wait())
        # Futures of different results (the workers' list, the event's True): only which ends first counts.
        first_of: set[asyncio.Future[Any]] = {ready, stopped}
        done, _ = await asyncio.wait(first_of, return_when=asyncio.FIRST_COMPLETED)
        if ready in done:
            try:
                ready.result()
                log.info("ready")
                await stopped
            except WorkerUnavailable as exc:
                log.error("cannot serve: %s", exc)
                exit_code = 1
        else:
            ready.cancel()
    finally:
        log.info(
            "shutting down: no new connections; in-flight requests get %.0f s",
            settings.server.shutdown_grace_s,
        )
        await runner.cleanup()
        log.info("stopped")
    return exit_code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(args.config, overrides_from(args), profile=args.profile)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ConfigError.exit_code
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        return asyncio.run(serve(settings))
    except ModelNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"error: cannot listen on {settings.server.host}:{settings.server.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
