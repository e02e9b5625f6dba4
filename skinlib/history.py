"""`fit`'s history: one row per epoch (what metrics.json keeps) and the line printed for it."""
from __future__ import annotations

from typing import Any


def epoch_row(epoch: int, train: dict[str, Any], val: dict[str, Any], seconds: float) -> dict[str, Any]:
    """One epoch's row of the history, from `train_one_epoch`'s and `evaluate`'s results."""
    return {
        "epoch": epoch,
        "train_loss": train["loss"], "train_accuracy": train["accuracy"],
        "train_balanced_accuracy": train["balanced_accuracy"],
        "val_loss": val["loss"], "val_accuracy": val["accuracy"],
        "val_balanced_accuracy": val["balanced_accuracy"],
        "lr": train["lr"], "lr_first": train["lr_first"], "lr_peak": train["lr_peak"],
        "seconds": seconds, "images_per_s": train["images_per_s"],
    }


def format_epoch(row: dict[str, Any], epochs: int) -> str:
    """The one summary line printed per epoch."""
    width = len(str(epochs))
    return (f"epoch {row['epoch']:>{width}}/{epochs}  "
            f"train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f} "
            f"bal {row['train_balanced_accuracy']:.3f}  |  "
            f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f} "
            f"bal {row['val_balanced_accuracy']:.3f}  |  "
            f"{_rates(row)}  {row['seconds']:.0f}s  "
            f"{row['images_per_s']:.{0 if row['images_per_s'] >= 10 else 1}f} img/s")


def _rates(row: dict[str, Any]) -> str:
    """The epoch's learning rate: one value if it stayed the same, else first→last, and the peak
    when it rose and fell within the epoch (a one-epoch one-cycle run ends near 0)."""
    last = row["lr"]
    first, peak = row.get("lr_first", last), row.get("lr_peak", last)  # a history saved before they were kept
    if first == last == peak:
        return f"lr {last:.2e}"
    return f"lr {first:.2e}→{last:.2e}" + (f" (peak {peak:.2e})" if peak > max(first, last) else "")
