"""Per-step training curves: a CSV that survives resumes and a PNG of every loss term and the LR."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from difiisr_dwt.io import write_atomic, write_text_atomic


class CurveLog:
    """Append-only CSV of per-step values (``step`` first). A value that appears later (e.g. codebook usage
    once quantisation starts) adds a column: the file is rewritten once with the wider header.

    On resume, rows after the resumed step are dropped, so the file always describes one run.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.columns: list[str] | None = None
        if self.path.is_file():
            with open(self.path, encoding="utf-8", newline="") as f:
                header = next(csv.reader(f), None)
            self.columns = header or None

    def read(self) -> list[dict[str, float]]:
        if not self.path.is_file():
            return []
        with open(self.path, encoding="utf-8", newline="") as f:
            return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
                    for row in csv.DictReader(f)]

    def truncate(self, step: int) -> None:
        """Keep the rows with ``step <= step`` (atomically)."""
        if self.path.is_file() and self.columns is not None:
            self._rewrite([r for r in self.read() if r["step"] <= step])

    def _rewrite(self, rows: list[dict[str, float]]) -> None:
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(self.columns)
        for row in rows:
            writer.writerow([_fmt(row.get(k, math.nan)) for k in self.columns])
        write_text_atomic(text.getvalue(), self.path)

    def append(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **values}
        if self.columns is None:
            self.columns = list(row)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rewrite([])
        new = [k for k in row if k not in self.columns]
        if new:
            rows = self.read()
            self.columns += new
            self._rewrite(rows)
        with open(self.path, "a", encoding="utf-8", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(k, math.nan)) for k in self.columns])

    def plot(self, png_path: str | os.PathLike, skip: tuple[str, ...] = ("step",)) -> None:
        """One panel per column (log-scale y for losses), written atomically."""
        rows = self.read()
        if not rows:
            return
        import matplotlib  # here, not at the top: only the main process plots, and it costs a second to import

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [c for c in self.columns if c not in skip]
        cols = min(3, len(names))
        nrows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.8 * nrows), squeeze=False)
        steps = [r["step"] for r in rows]
        for ax, name in zip(axes.flat, names):
            values = [r[name] for r in rows]
            ax.plot(steps, values, linewidth=0.8)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            positive = [v for v in values if v == v]
            if name not in ("lr", "codebook_usage") and positive and min(positive) > 0:
                ax.set_yscale("log")
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        fig.tight_layout()
        try:
            write_atomic(png_path, lambda f: fig.savefig(f, dpi=90, format="png"))
        finally:
            plt.close(fig)


def _fmt(value: float) -> str:
    return f"{value:.8g}" if isinstance(value, float) else str(value)
