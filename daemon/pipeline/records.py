"""The records of the output topics (docs/outputs.md): key and JSON value of a stored bar's
regime and of a live prediction, serialised once.

The bytes built here are the bytes the outbox stores and the publisher sends, so a record sent
twice (after a crash between the broker's acknowledgement and the outbox's delete) is an
identical copy: same key, same value.

>>> from daemon.domain import BarRow
>>> [(topic, key, value)] = regime_records("regimes", [
...     BarRow("SPY", "2020-03-23", 1, 2, 0.5, 1.5, 10, "crash", 61.59, "vix")])
>>> key, value
(b'SPY', b'{"symbol":"SPY","ts":"2020-03-23","regime":"crash","vix":61.59,"vix_source":"vix"}')
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from daemon.domain import BarRow, OutboxRow, PredictionRow

__all__ = ["TARGET", "prediction_records", "regime_records"]

#: The prediction target every model predicts today: is the log return over
#: `label.horizon_bars` above `label.threshold`.
TARGET = "direction"


def regime_records(
    topic: str, bars: Iterable[BarRow], block_bars: Iterable[tuple[Any, ...]] = ()
) -> list[OutboxRow]:
    """One record per bar: the row objects', then the bank's (`RowBlock.bars` tuples, in
    `BarRow` field order); key = symbol."""
    dumps = orjson.dumps
    records = [
        (topic, b.symbol.encode(), dumps({
            "symbol": b.symbol, "ts": b.ts, "regime": b.regime, "vix": b.vix,
            "vix_source": b.vix_source,
        }))
        for b in bars
    ]  # fmt: skip
    records += [
        (topic, symbol.encode(), dumps({
            "symbol": symbol, "ts": ts, "regime": regime, "vix": vix, "vix_source": vix_source,
        }))
        for symbol, ts, _, _, _, _, _, regime, vix, vix_source in block_bars
    ]  # fmt: skip
    return records


def prediction_records(
    topic: str, predictions: Iterable[PredictionRow], horizon_bars: int
) -> list[OutboxRow]:
    """One record per prediction of a live row; key = symbol."""
    dumps = orjson.dumps
    return [
        (topic, p.symbol.encode(), dumps({
            "symbol": p.symbol, "ts": p.ts, "regime": p.regime, "target": TARGET,
            "probability": float(p.proba), "prediction": int(p.prediction),
            "model_version": p.model_version, "horizon_bars": horizon_bars,
        }))
        for p in predictions
    ]  # fmt: skip
