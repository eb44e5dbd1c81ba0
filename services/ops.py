"""The operators' subcommands of ``reserves``: replay, history, dlq (bodies; cli.py registers).

Output goes to stderr through rich: a progress bar and tables on a terminal, plain lines
otherwise (logs, CI), and ``--json`` where a script wants the data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from projections.projector import PROJECTIONS
from projections.replay import Replay, ReplayError, ReplayReport
from projections.replay_parallel import ReplayFailed, ReplayInterrupted, replay_in_processes
from services.settings import Settings, SettingsError

console = Console(stderr=True, soft_wrap=True)
LOG_EVERY_S = 2.0


def add_parsers(sub: Any) -> None:
    """Registers replay, history and dlq on the ``reserves`` parser."""
    replay = sub.add_parser(
        "replay", help="rebuild read models beside the live ones, then switch atomically")
    replay.add_argument("--projection", choices=["all", *sorted(PROJECTIONS)], default="all",
                        help="which projection to rebuild (default: all)")
    replay.add_argument("--from", dest="from_position", type=int, default=None,
                        help="0: start afresh; or the position an interrupted replay kept "
                             "(the default is to continue it when one was interrupted)")
    replay.add_argument("--restart", action="store_true",
                        help="discard what an interrupted replay built; start from 0")
    replay.add_argument("--page", type=int, default=2000, help="events per transaction")
    replay.add_argument("--one-process", action="store_true",
                        help="rebuild several projections in this one process (by default each "
                             "is rebuilt in a process of its own, on its own core)")
    history = sub.add_parser("history", help="an order's timeline and open requests")
    history.add_argument("order_id")
    history.add_argument("--json", action="store_true", help="print JSON to stdout")
    dlq = sub.add_parser("dlq", help="inspect and re-drive dead letters (reserve.dlq)")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser("list", help="every dead letter, retried or not")
    dlq_list.add_argument("--json", action="store_true", help="print JSON to stdout")
    retry = dlq_sub.add_parser("retry", help="re-produce dead letters to their source topic")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", default=[], metavar="ID",
                       help="partition:offset, as `dlq list` shows")
    which.add_argument("--all", action="store_true", help="every letter not retried yet")
    retry.add_argument("--again", action="store_true",
                       help="re-drive named letters even if they were retried before")


# -- replay --------------------------------------------------------------------------------

def _summary(report: ReplayReport) -> None:
    resumed = {n: p for n, p in report.started_from.items() if p}
    console.print(
        f"replay done: {report.position} events into {', '.join(report.projections)} "
        f"in {report.seconds:.1f} s ({report.rate:,.0f} events/s; {report.events_read} read"
        f"{', resumed from ' + str(resumed) if resumed else ''}); switched in "
        f"{report.switch_seconds * 1000:.0f} ms"
        f"{'; one process per projection' if report.processes > 1 else ''}")
    table = Table(title="rebuilt tables", show_header=True)
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in report.rows.items():
        table.add_row(name, f"{rows:,}")
    if console.is_terminal:
        console.print(table)
    else:
        console.print("rows: " + ", ".join(f"{t}={n}" for t, n in report.rows.items()))


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from services.runtime import Core, Infrastructure

    names = sorted(PROJECTIONS) if args.projection == "all" else [args.projection]
    infra = Infrastructure.start(settings, with_broker=False)
    core = Core(settings, infra.database_url)
    try:
        started = time.monotonic()
        last_log = [0.0]
        with Progress(TextColumn(f"replaying {'+'.join(names)}"), BarColumn(),
                      TextColumn("position {task.completed:,.0f}/{task.total:,.0f}"),
                      TextColumn("{task.fields[rate]} events/s"), TimeElapsedColumn(),
                      TextColumn("ETA"), TimeRemainingColumn(),
                      console=console, disable=not console.is_terminal) as progress:
            task = progress.add_task("replay", total=core.store.recorder.max_notification_id()
                                     or 0, rate="-")

            def report(position: int, head: int, read: int) -> None:
                rate = read / max(time.monotonic() - started, 1e-6)
                progress.update(task, completed=position, total=head, rate=f"{rate:,.0f}")
                now = time.monotonic()
                if not console.is_terminal and now - last_log[0] >= LOG_EVERY_S:
                    last_log[0] = now
                    eta = (head - position) / rate if rate else 0
                    console.print(f"replay {'+'.join(names)}: position {position}/{head} "
                                  f"({rate:,.0f} events/s, ETA {eta:.0f} s)")

            try:
                if len(names) > 1 and not args.one_process:
                    # one process per projection: a replay is bound by one interpreter's CPU
                    result = replay_in_processes(
                        infra.database_url, names, page=args.page, restart=args.restart,
                        from_position=args.from_position, progress=report)
                else:
                    result = Replay(core.store, core.pool, names, page=args.page).run(
                        restart=args.restart, from_position=args.from_position,
                        progress=report)
            except ReplayError as e:
                console.print(f"[red]replay refused:[/] {e}")
                return 3
            except ReplayFailed as e:
                console.print(f"[red]replay failed:[/] {e}")
                return 1
            except (KeyboardInterrupt, ReplayInterrupted) as e:
                console.print(f"[yellow]replay stopped[/]{': ' + str(e) if str(e) else ''}; "
                              "what was built is kept in the shadow schemas and the next "
                              "replay resumes it")
                return 130
        _summary(result)
    finally:
        core.close()
        infra.stop()
    return 0


# -- history -------------------------------------------------------------------------------

def _print_history(h: dict[str, Any]) -> None:
    console.print(f"[bold]order {h['order_id']}[/] № {h['number']} of {h['date']}  "
                  f"partner {h['partner']}  manager {h['manager']}  status [bold]{h['status']}[/]")
    lines = Table("sku", "warehouse", "ordered", "reserved", "shortage", title="lines")
    for ln in h["lines"]:
        lines.add_row(ln["sku"], ln["warehouse"], str(ln["ordered"]), str(ln["reserved"]),
                      str(ln["shortage"]))
    console.print(lines)
    timeline = Table("at", "event", "by", "what", title="timeline", show_lines=False)
    for t in h["timeline"]:
        timeline.add_row(t["at"][:19].replace("T", " "), t["type"], t["by"], t["what"])
    console.print(timeline)
    for direction, title in (("incoming", "open requests for this order's reserve"),
                             ("outgoing", "open requests this order made")):
        rows = h["open_requests"][direction]
        table = Table("request", "from order", "to order", "what", "requester", "owner",
                      "expires", title=title)
        for r in rows:
            table.add_row(r["request_id"], r["from_order_id"], r["to_order_id"],
                          f"{r['requested']} × {r['sku']} @ {r['warehouse']}", r["requester"],
                          r["owner"], r["expires_at"][:19].replace("T", " "))
        console.print(table if rows else f"{title}: none")


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    from projections.history import OrderHistory
    from services.runtime import Core, Infrastructure

    infra = Infrastructure.start(settings, with_broker=False)
    core = Core(settings, infra.database_url)
    try:
        found = OrderHistory(core.store, core.pool).order(args.order_id)
    finally:
        core.close()
        infra.stop()
    if found is None:
        console.print(f"[red]customer order {args.order_id!r} is unknown[/]")
        return 1
    if args.json:
        print(json.dumps(found, ensure_ascii=False, indent=2, default=str))
    else:
        _print_history(found)
    return 0


# -- dlq -----------------------------------------------------------------------------------

async def _dlq(args: argparse.Namespace, settings: Settings) -> int:
    from services.ops_dlq import DeadLetterError, DeadLetters
    from services.runtime import Core, Infrastructure

    if settings.kafka_bootstrap_servers is None:
        raise SettingsError("dlq needs KAFKA_BOOTSTRAP_SERVERS: the embedded broker lives "
                            "inside `reserves serve` and keeps nothing across restarts.")
    infra = Infrastructure.start(settings)
    core = Core(settings, infra.database_url)
    try:
        letters = DeadLetters(core.pool, infra.bootstrap_servers)
        if args.dlq_command == "list":
            found = await letters.letters()
            if args.json:
                print(json.dumps([{
                    "id": d.id, "source": d.source, "error": d.error,
                    "time": d.timestamp.isoformat(),
                    "key": d.key.decode("utf-8", "replace") if d.key is not None else None,
                    "value": d.value.decode("utf-8", "replace"),
                    "retried_at": d.retried_at.isoformat() if d.retried_at else None,
                } for d in found], ensure_ascii=False, indent=2))
                return 0
            table = Table("id", "time", "source", "key", "error", "payload", "retried",
                          title=f"reserve.dlq: {len(found)} dead letters")
            for d in found:
                table.add_row(d.id, f"{d.timestamp:%Y-%m-%d %H:%M:%S}", d.source,
                              (d.key or b"").decode("utf-8", "replace"), d.error, d.preview(60),
                              f"{d.retried_at:%Y-%m-%d %H:%M:%S}" if d.retried_at else "-")
            console.print(table, width=None if console.is_terminal else 200)
            return 0
        try:
            done = await letters.retry(None if args.all else list(args.ids), again=args.again)
        except DeadLetterError as e:
            console.print(f"[red]retry refused:[/] {e}")
            return 1
        for d in done:
            console.print(f"re-drove {d.id} to {d.source_topic} (was {d.source}: {d.error})")
        console.print(f"retried {len(done)} dead letters")
        return 0
    finally:
        core.close()
        infra.stop()


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_dlq(args, settings))
