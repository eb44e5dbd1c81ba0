"""The ``reserves`` console script: serve, replay, republish, history, dlq."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from aiokafka import AIOKafkaProducer
from rich.console import Console

from services import ops
from services.eventstore import apply_session_options
from services.logs import configure_logging
from services.settings import ROLES, Settings, SettingsError, load_settings

console = Console(stderr=True)


def _print_dev_tokens(settings: Settings) -> None:
    if not settings.tokens_generated:
        return
    console.print("[bold yellow]Development tokens[/] (RESERVES_API_TOKENS / RESERVES_ERP_TOKENS "
                  f"unset; kept in {settings.var_dir / 'dev-tokens.json'}):")
    if settings.generated_api_tokens:  # tokens from the environment are never printed
        for token, manager in sorted(settings.api_tokens.items(), key=lambda kv: kv[1]):
            console.print(f"  manager {manager:<8} Bearer {token}")
    if settings.generated_erp_tokens:
        for token in sorted(settings.erp_tokens):
            console.print(f"  ERP connector    Bearer {token}")


class _Server(uvicorn.Server):
    """Uvicorn that stops on SIGINT/SIGTERM without re-raising them afterwards, so the
    service's own shutdown (consumers, relay, embedded servers) always runs."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._request_exit)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _request_exit(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


async def _until_stopped() -> None:
    """Waits for Ctrl-C or SIGTERM (a process without the HTTP API has no server to wait on)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# The cyclic garbage collector's young generation is collected after this many net allocations
# of container objects (Python's default: 700); see tune_gc.
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Tunes the cyclic garbage collector for a long-running service, once it has started.

    What start-up built (modules, the app, the pools: some 100,000 objects) is frozen out of
    every later collection, and the young generation is collected every ``GC_YOUNG_THRESHOLD``
    net allocations instead of 700. Measured in ``reserves serve`` at 32 clients giving
    (docs/performance.md, "Round trips, the garbage collector and the relay's reads"): with
    the defaults a full collection came every few seconds and held the GIL up to 115 ms, and
    the collector took ~8 % of the process's time; after this, a few young collections in a
    run. Reference counting frees everything that is not in a cycle as before; cycles wait
    for the next collection.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


async def _serve(settings: Settings, roles: frozenset[str]) -> None:
    # Threads that waited on PostgreSQL take the GIL back sooner (5 ms by default): a give
    # makes a few round trips, each ending in such a wait, while other threads compute.
    sys.setswitchinterval(settings.switch_interval_s)
    from handlers.http_api import create_http_app
    from services.runtime import BROKER_ROLES, Infrastructure, Service

    infra = await asyncio.to_thread(Infrastructure.start, settings,
                                    with_broker=bool(roles & BROKER_ROLES))
    service = None
    try:
        service = await asyncio.to_thread(Service, settings, infra, roles)
        await service.start_background()
        app = create_http_app(service.core, readiness=service.monitor)
        tune_gc()
        server = _Server(uvicorn.Config(app, host=settings.http_host,
                                        port=settings.http_port, log_level="warning",
                                        lifespan="off"))
        if "api" in roles:
            service.write_runtime_file()
            where = f"serving http://{settings.http_host}:{settings.http_port}"
        else:
            where = "running"
        console.print(f"[bold green]reserve exchange[/] {where}  roles: "
                      f"{','.join(sorted(roles))}  (PostgreSQL: "
                      f"{'embedded' if infra.embedded_pg else 'DATABASE_URL'}, Kafka: "
                      f"{infra.bootstrap_servers or '-'}"
                      f"{' embedded' if infra.embedded_broker else ''})")
        _print_dev_tokens(settings)
        console.print("Press Ctrl-C to stop.")
        if "api" in roles:
            # the commands' reads and writes on this loop (handlers/http_api.py, CommandStores)
            try:
                await app.state.command_stores.start()
                await server.serve()
            finally:
                await app.state.command_stores.close()
        else:
            await _until_stopped()
    finally:
        if service is not None:
            await service.stop_background()
            service.close()
        infra.stop()
        console.print("stopped.")


def parse_roles(raw: str) -> frozenset[str]:
    roles = frozenset(r.strip() for r in raw.split(",") if r.strip())
    unknown = sorted(roles - set(ROLES))
    if unknown or not roles:
        raise argparse.ArgumentTypeError(
            f"roles are a comma-separated subset of {','.join(ROLES)}; "
            f"not {','.join(unknown) or 'empty'}")
    return roles


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from services.runtime import event_loop_factory

    with (contextlib.suppress(KeyboardInterrupt),
          asyncio.Runner(loop_factory=event_loop_factory(settings.event_loop)) as runner):
        runner.run(_serve(settings, args.roles))
    return 0


async def _republish(settings: Settings, start: int, stop: int | None) -> int:
    from projections.relay import Relay
    from services.runtime import Core, Infrastructure
    from services.topics import ensure_topics

    if settings.kafka_bootstrap_servers is None:
        raise SettingsError("republish needs KAFKA_BOOTSTRAP_SERVERS: the embedded broker lives "
                            "inside `reserves serve`, whose relay republishes on its own.")
    infra = Infrastructure.start(settings)  # the broker is named: only PostgreSQL may embed
    core = Core(settings, infra.database_url)
    await ensure_topics(infra.bootstrap_servers, settings.kafka_partitions,
                        settings.kafka_replication_factor)
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap_servers, acks="all",
                                enable_idempotence=settings.kafka_enable_idempotence)
    await producer.start()
    relay = Relay(core.store, core.pool, producer, bootstrap_servers=infra.bootstrap_servers)
    try:
        sent = await relay.republish(start, stop)
    finally:
        await relay.close()
        await producer.stop()
        core.close()
        infra.stop()
    console.print(f"republished {sent} events to reserve.events")
    return 0


def cmd_republish(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_republish(settings, args.from_position, args.to_position))


def cmd_schemas(args: argparse.Namespace) -> int:
    """Needs no settings: the documents come from the code alone."""
    from services.contracts import drift, export

    docs = Path(args.docs)
    if args.action == "check":
        problems = drift(docs)
        for problem in problems:
            console.print(f"[red]differs from the code:[/] {docs / problem}")
        return 1 if problems else 0
    for path in export(docs):
        console.print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reserves", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service (embedded defaults when unset)")
    serve.add_argument("--roles", type=parse_roles, default=",".join(ROLES),
                       help=f"what this process runs, comma-separated (default: all of "
                            f"{','.join(ROLES)}); run the others in other processes")
    ops.add_parsers(sub)  # replay, history, dlq
    republish = sub.add_parser("republish", help="re-emit stored events to reserve.events")
    republish.add_argument("--from", dest="from_position", type=int, default=1,
                           help="first position to re-emit (default 1)")
    republish.add_argument("--to", dest="to_position", type=int, default=None,
                           help="last position to re-emit (default: the newest)")
    schemas = sub.add_parser("schemas", help="the AsyncAPI document and JSON Schemas in docs/")
    schemas.add_argument("action", choices=["export", "check"],
                         help="export: write them; check: fail if they differ from the code")
    schemas.add_argument("--docs", default="docs", help="the docs directory (default: docs)")
    args = parser.parse_args(argv)
    configure_logging()
    if args.command == "schemas":
        return cmd_schemas(args)
    apply_session_options()
    try:
        settings = load_settings()
    except SettingsError as e:
        console.print(f"[red]configuration error:[/] {e}")
        return 2
    handler = {"serve": cmd_serve, "replay": ops.cmd_replay, "republish": cmd_republish,
               "history": ops.cmd_history, "dlq": ops.cmd_dlq}
    try:
        return handler[args.command](args, settings)
    except SettingsError as e:
        console.print(f"[red]{e}[/]")
        return 2


if __name__ == "__main__":
    sys.exit(main())
