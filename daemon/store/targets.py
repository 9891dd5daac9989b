"""Which `label.target` labelled the stored samples, and what happens when the configuration
names another.

Each sample records the key of the target that labelled it (`LabelConfig.key`, e.g.
`direction:h=5:threshold=0`); new samples take the key of their source in the table
`label_targets`. When the daemon or a retrain starts, `use_target` brings the store to the
configured key:

- live samples of another key are relabelled from the stored bars, all in one transaction, or
  the start is refused (`RelabelRefused`) when a live sample has no stored bar on its day;
- archive samples (built from the bundled history, no bars stored) of another key stay as they
  are and are left out of every fit, which reads only the configured key's samples, with a
  warning: `regimed archive build` rebuilds them for the configured target.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import pandas as pd

from daemon.config import LabelConfig
from daemon.errors import RelabelRefused, StoreBusyError
from daemon.pipeline.labels import future_labels
from daemon.store.connected import SqlConnection
from daemon.store.locks import daemon_lock
from daemon.store.sqlite import Store

__all__ = ["TargetCheck", "retrain_target", "set_target", "use_target"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetCheck:
    """What `use_target` found: the configured key, the live samples it relabelled (and from
    which key), and the archive samples of another key that fits leave out."""

    target: str
    relabelled: int = 0
    previous: str | None = None
    archive_left_out: int = 0


def set_target(store: Store, source: str, label: LabelConfig) -> None:
    """Make `label`'s key the one that new samples of `source` record (`regimed archive build`
    sets it before it rebuilds the archive samples)."""
    with store.transaction("set the label target", write=True) as conn:
        conn.execute("UPDATE label_targets SET target = ? WHERE source = ?", (label.key, source))


def use_target(store: Store, label: LabelConfig) -> TargetCheck:
    """Relabel the live samples when they were labelled for another target (one transaction,
    logged), and count the archive samples of another target; see the module docstring."""
    key = label.key
    with store.transaction("relabel the live samples", write=True) as conn:
        stored = dict(conn.execute("SELECT source, target FROM label_targets").fetchall())
        previous = stored.get("live")
        relabelled = 0
        if previous != key:
            relabelled = _relabel(conn, store.path, label, previous)
            conn.execute("UPDATE label_targets SET target = ? WHERE source = 'live'", (key,))
        other = conn.execute(
            "SELECT target, count(*) FROM samples "
            "WHERE source = 'archive' AND (target IS NULL OR target <> ?) "
            "GROUP BY target",
            (key,),
        ).fetchall()
    if previous != key:
        logger.warning(
            "relabelled %d live samples from the stored bars: they were labelled for %s, "
            "label.target is now %s",
            relabelled,
            previous,
            key,
        )
    left_out = sum(int(n) for _, n in other)
    if left_out:
        logger.warning(
            "%d archive samples were labelled for %s, not for %s: every fit leaves them out "
            "until `regimed archive build` rebuilds them for this target",
            left_out,
            ", ".join(str(t) for t, _ in other),
            key,
        )
    return TargetCheck(key, relabelled, None if previous == key else previous, left_out)


def retrain_target(store: Store, label: LabelConfig) -> TargetCheck:
    """`use_target` for a retrain, which relabels only while no daemon runs on the store: a
    running daemon goes on labelling for its own configuration, so the retrain refuses
    (RelabelRefused) and restarting the daemon with the new target relabels instead."""
    with store.transaction("read the label targets", write=False) as conn:
        (live,) = conn.execute("SELECT target FROM label_targets WHERE source = 'live'").fetchone()
    if live == label.key:
        return use_target(store, label)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(daemon_lock(store.path))
        except StoreBusyError:
            raise RelabelRefused(
                f"{store.path}: the live samples are labelled for {live} by the daemon running "
                f"on this store, and label.target here is {label.key}: restart the daemon with "
                "this configuration (it relabels them), then retrain"
            ) from None
        return use_target(store, label)


def _relabel(conn: SqlConnection, path: str, label: LabelConfig, previous: str | None) -> int:
    """Give every live sample the label of `label` from its symbol's stored closes (the batch
    path of the pipeline over the stored bars, as a restart sees them); how many."""
    key = label.key
    symbols = [s for (s,) in conn.execute("SELECT DISTINCT symbol FROM bars").fetchall()]
    total = 0
    for symbol in symbols:
        samples = [
            ts
            for (ts,) in conn.execute(
                "SELECT ts FROM samples WHERE source = 'live' AND symbol = ? ORDER BY ts",
                (symbol,),
            ).fetchall()
        ]
        if not samples:
            continue
        bars = conn.execute(
            "SELECT ts, close FROM bars WHERE symbol = ? ORDER BY ts", (symbol,)
        ).fetchall()
        days = [ts for ts, _ in bars]
        close = pd.Series([c for _, c in bars], index=pd.to_datetime(days, format="%Y-%m-%d"))
        known = dict(zip(days, future_labels(label, close).tolist(), strict=True))
        missing = [ts for ts in samples if ts not in known]
        if missing:
            raise _refused(path, key, previous, f"{len(missing)} of {symbol}'s ({missing[0]})")
        conn.executemany(
            "UPDATE samples SET label = ?, target = ? "
            "WHERE source = 'live' AND symbol = ? AND ts = ?",
            [(None if pd.isna(known[ts]) else int(known[ts]), key, symbol, ts) for ts in samples],
        )
        total += len(samples)
    orphans = conn.execute(
        "SELECT count(*), min(symbol) FROM samples "
        "WHERE source = 'live' AND (target IS NULL OR target <> ?)",
        (key,),
    ).fetchone()
    if orphans[0]:
        raise _refused(path, key, previous, f"{orphans[0]} (of {orphans[1]} and others)")
    return total


def _refused(path: str, key: str, previous: str | None, which: str) -> RelabelRefused:
    return RelabelRefused(
        f"{path}: cannot relabel the live samples for label.target {key}: {which} live samples "
        f"have no stored bar on their day, so their future closes are unknown; keep the "
        f"target they were labelled for ({previous}) or point store.path at a new store"
    )
