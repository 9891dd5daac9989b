"""Offline labeling: the regime of every trading day of a CSV history (`regimed regimes`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TextIO

import pandas as pd

from daemon.config import RegimeConfig
from daemon.data.history import read_bars_csv, read_vix_csv
from daemon.domain import REGIMES
from daemon.pipeline.regime import label_history

OUTPUT_COLUMNS = ("date", "close", "vix", "vix_source", "regime")


def label_csv(rules: RegimeConfig, bars: str | Path, vix: str | Path | None) -> pd.DataFrame:
    """Read a bars CSV (and optionally a VIX CSV) and label every day with the batch path."""
    history = read_bars_csv(bars)
    vix_series = read_vix_csv(vix) if vix is not None else None
    labels = label_history(rules, history["close"], vix_series)
    out = labels.reset_index()
    out["date"] = out["date"].dt.strftime("%Y-%m-%d")
    return out[list(OUTPUT_COLUMNS)]


def write_labels(frame: pd.DataFrame, handle: TextIO) -> None:
    """Write the labels as CSV: date, close, vix (4 decimals), vix_source, regime."""
    out = frame.copy()
    out["close"] = out["close"].map(repr)
    out["vix"] = out["vix"].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    out["regime"] = out["regime"].fillna("")
    out.to_csv(handle, index=False, lineterminator="\n")


def summary(frame: pd.DataFrame, source: str) -> str:
    """A short human summary: days per regime and where the VIX readings came from."""
    n = len(frame)
    first, last = frame["date"].iloc[0], frame["date"].iloc[-1]
    counts = Counter(frame["regime"].fillna("(undecided)"))
    lines = [f"Regimes of {n} trading days, {first} to {last} ({source})", ""]
    lines.append(f"  {'regime':<16} {'days':>6} {'share':>7}")
    for regime in (*REGIMES, "(undecided)"):
        if regime == "(undecided)" and not counts[regime]:
            continue
        lines.append(f"  {regime:<16} {counts[regime]:>6} {counts[regime] / n:>7.1%}")
    sources = Counter(frame["vix_source"])
    lines.append("")
    lines.append(
        "  VIX reading: "
        + ", ".join(f"{name} {sources[name]} days" for name in ("vix", "proxy", "none"))
    )
    if counts["(undecided)"]:
        lines.append(
            "  (undecided: no VIX and too few bars yet for the proxy, and no price rule fired)"
        )
    return "\n".join(lines) + "\n"
