"""`healthbeat backtest --plot DIR`: the backtest's figures as PNG charts (matplotlib, the `charts` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker.analysis.backtest import Backtest, num
from worker.scoring.scorecard import BANDS


def plot_backtest(bt: Backtest, directory: Path) -> list[Path]:
    """PNG charts: ROC curve, churn rate by band, mean score before churn, bands over time (matplotlib,
    the `charts` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("charts need matplotlib: pip install 'healthbeat[charts]'") from None
    directory.mkdir(parents=True, exist_ok=True)
    colours = {"red": "#d9534f", "yellow": "#f0ad4e", "green": "#5cb85c", "unknown": "#999999"}
    written = []

    figure, axis = plt.subplots(figsize=(4.8, 4.8))
    roc = bt.discrimination.roc
    axis.plot([p[0] for p in roc], [p[1] for p in roc], color="#1f3b57", label=f"AUC {num(bt.discrimination.auc)}")
    axis.plot([0, 1], [0, 1], linestyle="--", color="#999999")
    axis.set_xlabel("retained accounts flagged (false positive rate)")
    axis.set_ylabel("churned accounts flagged (true positive rate)")
    axis.set_title(f"ROC: health score vs churn within {bt.plan.horizon_days} days")
    axis.legend(loc="lower right")
    written.append(_save(plt, figure, directory / "roc.png"))

    figure, axis = plt.subplots(figsize=(5.2, 3.6))
    rates = [(b.band, 100 * (b.rate or 0)) for b in bt.bands]
    axis.bar([r[0] for r in rates], [r[1] for r in rates], color=[colours[r[0]] for r in rates])
    for index, rate in enumerate(bt.bands):
        axis.annotate(f"{rate.churned}/{rate.observations}", (index, rates[index][1]), ha="center", va="bottom")
    axis.set_ylim(0, max([r[1] for r in rates] + [1.0]) * 1.15)
    axis.set_ylabel(f"% churned within {bt.plan.horizon_days} days")
    axis.set_title("Churn rate by band")
    written.append(_save(plt, figure, directory / "churn_by_band.png"))

    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    for column, name, colour in ((1, "churned", "#d9534f"), (2, "retained", "#1f3b57")):
        points = [(row[0], value) for row in bt.curve if (value := row[column]) is not None]
        axis.plot([-d for d, _ in points], [v for _, v in points], marker="o", color=colour, label=name)
    axis.set_xlabel("days before churn (churned) or won renewal (retained)")
    axis.set_ylabel("mean health score")
    axis.set_ylim(0, 100)
    axis.set_title("Score of churned vs retained accounts before the outcome")
    axis.legend()
    written.append(_save(plt, figure, directory / "score_before_churn.png"))

    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    days = [s.day for s in bt.distribution]
    bottom = [0.0] * len(days)
    for band in BANDS:
        values = [100 * s.shares.get(band, 0.0) for s in bt.distribution]
        axis.bar(days, values, bottom=bottom, color=colours[band], width=5, label=band)  # type: ignore[arg-type]
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for guard in bt.plan.guardrails:
        if guard.band == "red":
            axis.axhline(100 * guard.low, color="black", linestyle=":")
            axis.axhline(100 * guard.high, color="black", linestyle=":")
    axis.set_ylabel("% of accounts")
    axis.set_title("Bands over time (dotted: red guardrails)")
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    figure.autofmt_xdate()
    written.append(_save(plt, figure, directory / "bands_over_time.png"))
    return written


def _save(plt: Any, figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
