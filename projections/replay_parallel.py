"""A replay of several projections, each in a process of its own.

A replay is bound by one Python process's CPU (reading and decoding the log, then applying it,
under one GIL), and the projections are independent: each has its own tables, shadow schema,
tracking row and advisory lock, and switches in on its own. So ``reserves replay`` of more than
one projection runs one child process per projection (``python -m projections.replay_parallel``),
each the same :class:`~projections.replay.Replay` of its one projection on its own connections
(its reader skips the other projections' events without decoding them). The parent coordinates:

- **all or none start**: each child takes its advisory lock, finds where it starts (its
  interrupted shadow's position, or a new shadow) and waits; only when every child is ready
  does the parent let them build. A refused child (another replay of its projection runs, or
  ``--from`` names a position it cannot start at) makes the parent tell the others to quit
  before they apply anything, as in one process.
- **progress**: each child reports after each page; the parent shows the slowest projection.
- **a failure** (an error, or a child that dies) fails the whole command; the other children
  are stopped: the page in progress rolls back and the shadow keeps the position of the last
  committed page, so the next replay resumes it. A projection that had already switched in
  stays switched in (its switch is atomic and complete).
- **Ctrl-C** (SIGINT to the parent) stops every child the same way, and the parent waits for
  them. The children ignore SIGINT (the terminal sends it to the whole process group; the
  parent's one ``stop`` is the only signal they act on), and stop on their own when the
  parent's end of the pipe closes (the parent killed).

The protocol: the parent writes the job as one JSON line on the child's stdin, then ``go``,
``quit`` or ``stop`` lines; the child writes JSON lines on its stdout (``ready``,
``progress``, then one of ``done``, ``refused``, ``failed``, ``stopped``). The database URL
travels on the pipe, never in the command line or environment of the child.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from projections.replay import Progress, ReplayError, ReplayReport

STOP_WAIT_S = 120.0  # a stopped child rolls back one page; a switch waits at most its lock timeout


class ReplayFailed(Exception):
    """A child replay failed or died; the message says which, why, and what became of the
    others."""


class ReplayInterrupted(Exception):
    """The replay was stopped (Ctrl-C); the message says where each projection was left."""


class _Stopped(BaseException):
    """Raised in a child's main thread when it is told to stop (a BaseException, so that no
    ``except Exception`` on the way mistakes it for a failure to retry or report)."""


# -- the parent ----------------------------------------------------------------------------------

@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    state: str = "starting"  # ready, building, done, refused, failed, stopped, quit, died
    told: str = ""  # go, quit or stop: the last thing the parent told it
    message: str = ""
    position: int = 0
    head: int = 0
    read: int = 0
    reported: bool = False
    report: ReplayReport | None = None
    ended: float = 0.0
    exited: bool = False

    def tell(self, what: str) -> None:
        if self.told == what or self.proc.stdin is None:
            return
        self.told = what
        with contextlib.suppress(OSError, ValueError):  # it exited meanwhile
            self.proc.stdin.write(what.encode() + b"\n")
            self.proc.stdin.flush()

    def stop(self) -> None:
        """Before ``go``: quit without writing anything; after: stop building."""
        self.tell("quit" if self.told in ("", "quit") else "stop")


@dataclass
class _Run:
    children: list[_Child]
    inbox: queue.Queue[tuple[_Child, dict[str, Any] | None]] = field(
        default_factory=queue.Queue)


def _read_child(child: _Child, inbox: queue.Queue[tuple[_Child, dict[str, Any] | None]]
                ) -> None:
    assert child.proc.stdout is not None
    for line in child.proc.stdout:
        try:
            inbox.put((child, json.loads(line)))
        except ValueError:
            continue  # not ours: the protocol's lines are JSON objects
    inbox.put((child, None))


def _child_command(name: str) -> list[str]:
    """The projection's name is in the command line only for ``ps`` to show which is which."""
    return [sys.executable, "-m", "projections.replay_parallel", name]


def replay_in_processes(database_url: str, names: Sequence[str], *, page: int = 2000,
                        cache_rows: int = 10_000, restart: bool = False,
                        from_position: int | None = None,
                        progress: Progress | None = None) -> ReplayReport:
    """Replays each of ``names`` in a child process of its own and returns one report: the
    position every projection reached, the events a projection read (each child reads the
    log), the time from the first child's start to the last one's end.

    Raises :class:`ReplayError` when a projection's replay is refused (nothing was written),
    :class:`ReplayFailed` when one failed, :class:`ReplayInterrupted` on Ctrl-C."""
    names = sorted(set(names))
    job = {"database_url": database_url, "page": page, "cache_rows": cache_rows,
           "restart": restart, "from_position": from_position}
    run = _Run([])
    interrupted = False
    try:
        for name in names:
            proc = subprocess.Popen(_child_command(name), stdin=subprocess.PIPE,  # noqa: S603
                                    stdout=subprocess.PIPE)
            child = _Child(name, proc)
            run.children.append(child)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({**job, "name": name}).encode() + b"\n")
            proc.stdin.flush()
            threading.Thread(target=_read_child, args=(child, run.inbox), daemon=True,
                             name=f"replay-{name}-pipe").start()
        while True:
            try:
                _follow(run, progress)
                break
            except KeyboardInterrupt:
                if interrupted:  # a second Ctrl-C: do not wait for their rollbacks
                    for child in run.children:
                        with contextlib.suppress(OSError):
                            child.proc.kill()
                    raise
                interrupted = True
                for child in run.children:
                    child.stop()
    finally:
        for child in run.children:
            if child.proc.poll() is None:  # only after an error of the parent's own
                child.proc.kill()
            child.proc.wait()
            if child.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    child.proc.stdin.close()
            if child.proc.stdout is not None:
                child.proc.stdout.close()
    return _outcome(run.children, interrupted, progress)


def _follow(run: _Run, progress: Progress | None) -> None:
    """Handles the children's messages until every child has exited."""
    children = run.children
    while not all(c.exited for c in children):
        try:
            child, message = run.inbox.get(timeout=1.0)
        except queue.Empty:
            continue
        if message is None:  # its stdout closed: it exited
            child.proc.wait()
            child.exited = True
            if child.state in ("starting", "ready", "building"):
                if child.told == "stop" and child.proc.returncode == 0:
                    child.state = "stopped"  # stopped before it could say so
                else:
                    child.state = "died"
                    child.message = f"its process ended with exit code {child.proc.returncode}"
        else:
            _handle(child, message, children, progress)
        if any(c.state in ("refused", "failed", "died") for c in children):
            for other in children:
                other.stop()
        elif all(c.state == "ready" for c in children):
            for c in children:
                c.state = "building"
                c.tell("go")


def _handle(child: _Child, message: dict[str, Any], children: list[_Child],
            progress: Progress | None) -> None:
    event = message.get("event")
    if event == "ready":
        child.state = "ready"
    elif event == "progress":
        child.position, child.head, child.read = (int(message["position"]),
                                                  int(message["head"]), int(message["read"]))
        child.reported = True
        if progress is not None and all(c.reported or c.report for c in children):
            slowest = min(children, key=lambda c: c.position)
            progress(slowest.position, max(c.head for c in children), slowest.read)
    elif event == "done":
        child.state = "done"
        child.report = ReplayReport(**message["report"])
        child.ended = float(message["ended"])
        child.position = child.report.position
    elif event in ("refused", "failed", "stopped", "quit"):
        child.state = str(event)
        child.message = str(message.get("message", ""))


def _outcome(children: list[_Child], interrupted: bool,
             progress: Progress | None) -> ReplayReport:
    def fates(skip: _Child | None = None) -> str:
        said = []
        for c in children:
            if c is skip or c.state in ("refused", "failed", "died"):
                continue
            if c.state == "done":
                said.append(f"{c.name!r} was rebuilt and switched in")
            elif c.state == "stopped":
                said.append(f"{c.name!r} was stopped after position {c.position} (its shadow "
                            "is kept: the next replay resumes it)")
            else:
                said.append(f"{c.name!r} did not start")
        return "; ".join(said)

    refused = [c for c in children if c.state == "refused"]
    if refused:
        raise ReplayError("; ".join(c.message for c in refused))
    failed = [c for c in children if c.state in ("failed", "died")]
    if failed:
        what = "; ".join(f"the replay of {c.name!r} failed: {c.message}" for c in failed)
        others = fates()
        raise ReplayFailed(what + (f". Meanwhile {others}" if others else ""))
    if interrupted or any(c.report is None for c in children):
        raise ReplayInterrupted(fates())
    reports = [c.report for c in children if c.report is not None]
    started = min(c.ended - r.seconds for c, r in zip(children, reports, strict=True))
    ended = max(c.ended for c in children)
    report = ReplayReport(
        projections=[n for r in reports for n in r.projections],
        started_from={n: p for r in reports for n, p in r.started_from.items()},
        position=min(r.position for r in reports),
        events_read=max(r.events_read for r in reports),
        seconds=ended - started,
        switch_seconds=max(r.switch_seconds for r in reports),
        rows={t: n for r in reports for t, n in r.rows.items()},
        processes=len(reports))
    if progress is not None:
        progress(report.position, report.position, report.events_read)
    return report


# -- a child -------------------------------------------------------------------------------------

def _child_main(protocol: IO[str]) -> int:
    from projections.replay import Replay
    from services.eventstore import ReserveStore, postgres_env
    from services.logs import configure_logging

    configure_logging()
    job = json.loads(sys.stdin.readline() or "{}")
    if not job:
        return 2
    name = str(job["name"])
    started = threading.Event()  # told to go: from now on a stop is a signal
    stopping = threading.Event()  # told to stop, or the parent gone
    lines: queue.Queue[str] = queue.Queue()

    def say(**message: Any) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    def listen() -> None:
        """The parent's lines; ``stop``, or its end of the pipe closing (the parent gone),
        stops the main thread with a signal (which also interrupts a wait on PostgreSQL)."""
        for line in sys.stdin:
            word = line.strip()
            if word == "stop":
                break
            lines.put(word)
        stopping.set()
        lines.put("quit")
        if started.is_set():  # else ready() sees ``stopping`` once it has set ``started``
            os.kill(os.getpid(), signal.SIGTERM)

    def ready() -> None:
        say(event="ready")
        if lines.get() != "go":
            _stop()
        started.set()
        if stopping.is_set():  # a stop that came before the main thread took its go
            _stop()

    threading.Thread(target=listen, name="replay-parent", daemon=True).start()
    last = [0.0]

    def report(position: int, head: int, read: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.1 or position >= head:  # the parent redraws at most that often
            last[0] = now
            say(event="progress", position=position, head=head, read=read)

    store = ReserveStore(env=postgres_env(job["database_url"], pool_size=2))
    try:
        result = Replay(store, str(job["database_url"]), [name], page=int(job["page"]),
                        cache_rows=int(job["cache_rows"])).run(
            restart=bool(job["restart"]), from_position=job["from_position"],
            progress=report, ready=ready)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # switched in: nothing left to stop
    except _Stopped:
        say(event="stopped" if started.is_set() else "quit")
        return 0
    except ReplayError as e:
        say(event="refused", message=str(e))
        return 3
    except Exception as e:
        import logging

        logging.getLogger("projections.replay_parallel").exception(
            "replay of %s failed", name)
        say(event="failed", message=f"{type(e).__name__}: {e}")
        return 1
    finally:
        store.close()
    say(event="done", report=asdict(result), ended=time.monotonic())
    return 0


def _stop() -> None:
    """Stops the child's main thread, once: a second stop (the parent's ``stop`` racing a
    signal) must not interrupt the first one's rollback and release."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Stopped


def _raise_stopped(signum: int, frame: Any) -> None:
    _stop()


def child() -> int:
    """A child: its protocol goes to the real stdout, anything else printed goes to stderr."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches it through the parent only
    signal.signal(signal.SIGTERM, _raise_stopped)
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        return _child_main(protocol)
    except _Stopped:
        return 0


if __name__ == "__main__":
    sys.exit(child())
