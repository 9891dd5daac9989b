"""The stored predictions with their outcome: what `regimed predictions` shows.

The live scorer writes one row per (symbol, day, model version) in the batch that stores the
row (`Store.write_batch`), and the batch that completes the row's label fills in `label`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from daemon.store.sqlite import Store

__all__ = ["StoredPrediction", "read_predictions"]


@dataclass(frozen=True)
class StoredPrediction:
    """One stored prediction; `label` is None until `label.horizon_bars` bars have passed."""

    symbol: str
    ts: str
    regime: str | None
    model_version: str
    probability: float
    prediction: int
    label: int | None

    @property
    def correct(self) -> bool | None:
        """Whether the prediction matched its label; None while the label is not known."""
        return None if self.label is None else self.prediction == self.label


def read_predictions(
    store: Store, *, symbol: str | None = None, since: dt.date | None = None
) -> list[StoredPrediction]:
    """The stored predictions, oldest day first (then symbol, then model version); only those
    of `symbol`, and only from `since` on, when given."""
    where, params = [], []
    if symbol is not None:
        where.append("symbol = ?")
        params.append(symbol)
    if since is not None:
        where.append("ts >= ?")
        params.append(since.isoformat())
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    with store.transaction("read predictions", write=False) as conn:
        rows = conn.execute(
            "SELECT symbol, ts, regime, model_version, proba, prediction, label "  # noqa: S608
            f"FROM predictions{clause} ORDER BY ts, symbol, model_version",
            params,
        ).fetchall()
    return [
        StoredPrediction(
            str(s), str(t), None if r is None else str(r), str(v), float(p), int(y_hat),
            None if y is None else int(y),
        )
        for s, t, r, v, p, y_hat, y in rows
    ]  # fmt: skip
