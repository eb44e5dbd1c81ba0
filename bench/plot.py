"""``bench/results.png``: the shape of a run at a glance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.stats import PERCENTILES, percentile_name


def draw(path: Path, *, sweep: Sequence[tuple[int, float]], give_baseline: float,
         give_floors: Mapping[str, float] | None = None,
         latencies_ms: Mapping[str, Mapping[str, float]],
         e2e_baseline_ms: Mapping[str, float] | None, title: str) -> None:
    """Left: successful gives/s by client concurrency, against the raw single-row commit
    rate and the 0.6 target, and the floors (``bench/floor.py``) at the gives' concurrency.
    Right: latency percentiles (ms, log scale) per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    if sweep:
        xs = [c for c, _ in sweep]
        left.plot(xs, [r for _, r in sweep], marker="o", label="gives/s (HTTP, successful)")
        left.set_xscale("log", base=2)
        left.set_xticks(xs, [str(x) for x in xs])
    if give_baseline > 0:
        left.axhline(give_baseline, linestyle="--", color="grey",
                     label=f"raw INSERT+COMMIT, 1 conn ({give_baseline:,.0f}/s)")
        left.axhline(0.6 * give_baseline, linestyle=":", color="red", label="target: 0.6 × raw")
    for (mode, per_second), color in zip((give_floors or {}).items(),
                                         ("tab:green", "tab:olive", "tab:purple"), strict=False):
        left.axhline(per_second, linestyle="-.", color=color, linewidth=1,
                     label=f"floor: HTTP, {mode} ({per_second:,.0f}/s)")
    left.set_xlabel("concurrent clients")
    left.set_ylabel("per second")
    left.set_title("give throughput by concurrency")
    left.set_ylim(bottom=0)
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize=8)

    names = [percentile_name(p) for p in PERCENTILES]
    series = dict(latencies_ms)
    if e2e_baseline_ms:
        series["broker round trip (raw)"] = e2e_baseline_ms
    width = 0.8 / max(len(series), 1)
    for n, (label, values) in enumerate(series.items()):
        xs2 = [i + n * width for i in range(len(names))]
        right.bar(xs2, [max(values.get(k, 0.0), 1e-3) for k in names], width, label=label)
    right.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(names))], names)
    right.set_yscale("log")
    right.axhline(50, linestyle=":", color="red", linewidth=1, label="give p99 target 50 ms")
    right.axhline(25, linestyle=":", color="orange", linewidth=1, label="e2e p99 target 25 ms")
    right.set_ylabel("ms")
    right.set_title("latency percentiles")
    right.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
