"""Loss curve of a run from its metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from lmlab.fsio import read_jsonl


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of a run's metrics.jsonl (a torn last line is dropped with a warning)."""
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def plot_loss_curve(run_dir: str | Path) -> Path:
    """Write ``loss_curve.png``: train and val loss against tokens seen."""
    # deferred: matplotlib takes ~1 s to import; only runs that plot need it
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt  # deferred: after the backend is chosen

    rows = read_metrics(run_dir)
    train = [(r["tokens"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["tokens"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="val loss", lw=1.5)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(Path(run_dir).name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(run_dir) / "loss_curve.png"
    fig.savefig(out)
    plt.close(fig)
    return out
