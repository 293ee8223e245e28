"""Per-stage counters and the funnel report (rows in/out, yield, drop reasons, tokens, seconds, tokens/s).

Every stage fills a `StageStats`; shards' stats add up (``a + b``), like datatrove's ``PipelineStats``. The funnel
is written as ``funnel.json`` and ``funnel.png`` and goes into every pushed dataset card as a table.

Token counts: ``completion_tokens`` counts the tokens of every completion the stage used, cached ones included;
``generated_tokens`` only those generated in this process, which is what ``tokens_per_s`` divides by the stage's
wall-clock ``seconds``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class StageStats:
    stage: str = ""
    rows_in: int = 0
    rows_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows
    requests: int = 0  # model requests the stage needed (LCE: one per generated block)
    cache_hits: int = 0  # of which answered by the request cache
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generated_tokens: int = 0
    executions: int = 0  # sandbox runs
    seconds: float = 0.0
    rows_by_method: dict[str, int] = field(default_factory=dict)  # rows out per augmentation method (comparisons)

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count

    def add_completion(self, completion, *, cached: bool) -> None:
        self.requests += 1
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        if cached:
            self.cache_hits += 1
        else:
            self.generated_tokens += completion.completion_tokens

    @contextmanager
    def timer(self):
        start = time.perf_counter()
        try:
            yield self
        finally:
            self.seconds += time.perf_counter() - start

    @property
    def yield_(self) -> float | None:
        return self.rows_out / self.rows_in if self.rows_in else None

    @property
    def tokens_per_s(self) -> float | None:
        return self.generated_tokens / self.seconds if self.seconds > 0 and self.generated_tokens else None

    def __add__(self, other: StageStats) -> StageStats:
        out = StageStats(stage=self.stage or other.stage)
        for f in fields(StageStats):
            if f.name == "stage":
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, dict):
                merged = dict(a)
                for k, v in b.items():
                    merged[k] = merged.get(k, 0) + v
                setattr(out, f.name, merged)
            else:
                setattr(out, f.name, a + b)
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["yield"] = self.yield_
        d["tokens_per_s"] = self.tokens_per_s
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StageStats:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def funnel_table(stats: list[StageStats]) -> str:
    """A markdown table of the funnel."""
    head = "| stage | rows in | rows out | yield | dropped | requests (cached) | output tokens | seconds | tokens/s |"
    lines = [head, "|" + "---|" * 9]
    for s in stats:
        dropped = ", ".join(f"{k}: {v}" for k, v in sorted(s.dropped.items())) or "-"
        y = f"{s.yield_:.2f}" if s.yield_ is not None else "-"
        tps = f"{s.tokens_per_s:.0f}" if s.tokens_per_s is not None else "-"
        lines.append(f"| {s.stage} | {s.rows_in} | {s.rows_out} | {y} | {dropped} | {s.requests} ({s.cache_hits}) "
                     f"| {s.completion_tokens} | {s.seconds:.1f} | {tps} |")
    return "\n".join(lines)


def method_table(stats: list[StageStats]) -> str | None:
    """Rows out per augmentation method and stage (MathGenie vs MetaMath's augmenters on one run); None if the run
    used one method."""
    methods = sorted({m for s in stats for m in s.rows_by_method})
    if len(methods) < 2:
        return None
    staged = [s for s in stats if s.rows_by_method]
    lines = ["| method | " + " | ".join(s.stage for s in staged) + " |", "|---|" + "---|" * len(staged)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(str(s.rows_by_method.get(m, 0)) for s in staged) + " |")
    return "\n".join(lines)


def write_funnel(stats: list[StageStats], out_dir: str | Path) -> tuple[Path, Path]:
    """``funnel.json`` and ``funnel.png`` (rows out per stage, log scale) in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "funnel.json"
    # Unique temporary names: concurrent shard runs (a Slurm array on shared storage) may write at the same time.
    unique = f"{socket.gethostname()}.{os.getpid()}.tmp"
    tmp = json_path.with_name(f"funnel.json.{unique}")
    tmp.write_text(json.dumps({"stages": [s.to_dict() for s in stats]}, indent=2) + "\n")
    tmp.replace(json_path)
    png_path = out_dir / "funnel.png"
    png_tmp = png_path.with_name(f"funnel.{unique}.png")
    plot_funnel(stats, png_tmp)
    png_tmp.replace(png_path)
    return json_path, png_path


def plot_funnel(stats: list[StageStats], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.stage for s in stats]
    fig, ax = plt.subplots(figsize=(1.6 * max(len(stats), 3), 3.2), dpi=100)
    bars = ax.bar(names, [max(s.rows_out, 0) for s in stats], color="#4c72b0")
    for bar, s in zip(bars, stats):
        label = f"{s.rows_out}" + (f"\n×{s.yield_:.2f}" if s.yield_ is not None else "")
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                    fontsize=8)
    ax.set_ylabel("rows out")
    if any(s.rows_out > 0 for s in stats):
        ax.set_yscale("symlog")
    ax.set_title("mathgenie funnel (rows out per stage, ×yield)")
    ax.margins(y=0.25)
    fig.tight_layout()
    tmp = Path(str(path) + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
