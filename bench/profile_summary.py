"""Summarises py-spy's collapsed stacks (``--format raw``, as ``bench.run --profile`` writes
them): the frames holding the most samples, on their own (self) and with what they call
(inclusive), optionally only in threads or stacks whose text contains a word.

    python -m bench.profile_summary DIR/serve-give.txt --top 25
    python -m bench.profile_summary DIR/replay.txt --under Projector.replay

The same files open in https://www.speedscope.app for a flame graph.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Summary:
    total: int
    self_samples: Counter[str]
    inclusive: Counter[str]


def frame_name(frame: str) -> str:
    """``func (path/to/module.py:123)`` → ``func (module.py)``: lines merged, paths shortened."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})" if where else name


def summarise(lines: Iterable[str], under: str | None = None,
              idle: bool = False) -> Summary:
    total = 0
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        if under is not None and under not in stack:
            continue
        frames = [frame_name(f) for f in stack.split(";")]
        if not idle and frames and _is_idle(frames[-1]):
            continue
        count = int(count_text)
        total += count
        self_samples[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return Summary(total, self_samples, inclusive)


_IDLE = ("select (selectors.py)", "poll (selectors.py)", "wait (threading.py)",
         "_worker (thread.py)", "get (queue.py)", "epoll", "Connection.wait")


def _is_idle(frame: str) -> bool:
    return frame.startswith(_IDLE)


def render(summary: Summary, top: int) -> str:
    out = [f"{summary.total} samples (idle waits left out)"]
    for title, counter in (("self", summary.self_samples), ("inclusive", summary.inclusive)):
        out.append(f"\ntop {top} by {title} time:")
        for name, count in counter.most_common(top):
            share = 100 * count / summary.total if summary.total else 0
            out.append(f"  {share:5.1f}%  {name}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_summary",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--under", help="only stacks whose text contains this")
    parser.add_argument("--idle", action="store_true", help="keep samples of idle waits")
    args = parser.parse_args(argv)
    with args.file.open() as f:
        print(render(summarise(f, args.under, args.idle), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
