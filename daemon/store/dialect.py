"""The SQL that differs between the store's two engines, SQLite and PostgreSQL.

The store's logic (what a batch writes, what a read returns) is written once, in the mixins of
`Store`; a `Dialect` holds only the statements and fragments that the engines spell
differently. Both take the same placeholders (`?`, `?N`, `:name`): the PostgreSQL connection
translates them (daemon.store.postgres).

SQLite upserts row by row (`executemany` of an INSERT, then of an UPDATE for the rows that were
there); PostgreSQL stages a batch's rows with COPY and upserts them in two set-based statements
(`staged_upserts`), one round trip each instead of one per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["POSTGRES", "SQLITE", "Dialect"]

_BAR_VALUES = ("open", "high", "low", "close", "volume", "regime", "vix", "vix_source")


@dataclass(frozen=True)
class Dialect:
    """The statements of one engine that the other spells differently."""

    name: Literal["sqlite", "postgresql"]
    #: Upserts of bars and samples read their rows from a staging table loaded by COPY
    #: (`StagingConnection.stage`) instead of taking them as parameters.
    staged_upserts: bool
    bar_insert: str
    bar_correct: str
    sample_insert: str
    sample_replace: str
    label_set: str
    prediction_label_set: str
    dead_letter_insert: str
    pending_samples: str
    #: How many outbox records wait: SQLite's ids left form one range, PostgreSQL's may not
    #: (a sequence never gives back the ids of a rolled-back insert).
    outbox_pending: str
    #: The aggregate of `read_samples`: `{expr}` joined with `{sep}` in ts order, per group.
    concat: str
    #: The feature blobs of a group joined in ts order, as bytes.
    concat_features: str
    #: A sample's weight as text that parses back to the same double.
    weight_text: str
    #: A sample's label as one character ('0', '1'), or '-' when missing.
    label_char: str
    #: The GROUP BY of `read_samples` (PostgreSQL names every non-aggregated column).
    samples_group_by: str


SQLITE = Dialect(
    name="sqlite",
    staged_upserts=False,
    bar_insert=(
        "INSERT INTO bars (symbol, ts, open, high, low, close, volume, regime, vix, vix_source) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING"
    ),
    bar_correct="""
UPDATE bars SET open = ?3, high = ?4, low = ?5, close = ?6, volume = ?7, regime = ?8, vix = ?9,
    vix_source = ?10
WHERE symbol = ?1 AND ts = ?2 AND (open IS NOT ?3 OR high IS NOT ?4 OR low IS NOT ?5
    OR close IS NOT ?6 OR volume IS NOT ?7 OR regime IS NOT ?8 OR vix IS NOT ?9
    OR vix_source IS NOT ?10)
""",
    # A sample records the label target its source is labelled for now (`label_targets`).
    sample_insert=(
        "INSERT INTO samples (source, symbol, ts, regime, weight, label, event, feature_version, "
        "features, target) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
        "(SELECT target FROM label_targets WHERE source = ?1)) ON CONFLICT DO NOTHING"
    ),
    # A NULL label never clears a known one: replaying a pending row must not forget its label.
    sample_replace="""
UPDATE samples SET regime = ?4, weight = ?5, label = coalesce(?6, label), event = ?7,
    feature_version = ?8, features = ?9,
    target = (SELECT target FROM label_targets WHERE source = ?1)
WHERE source = ?1 AND symbol = ?2 AND ts = ?3 AND (regime IS NOT ?4 OR weight IS NOT ?5
    OR label IS NOT coalesce(?6, label) OR event IS NOT ?7 OR feature_version IS NOT ?8
    OR features IS NOT ?9 OR target IS NOT (SELECT target FROM label_targets WHERE source = ?1))
""",
    label_set=(
        "UPDATE samples SET label = ?4 WHERE source = ?1 AND symbol = ?2 AND ts = ?3 "
        "AND label IS NOT ?4"
    ),
    prediction_label_set=(
        "UPDATE predictions SET label = ?3 WHERE symbol = ?1 AND ts = ?2 AND label IS NOT ?3"
    ),
    dead_letter_insert="""
INSERT OR IGNORE INTO dead_letters (source_topic, source_partition, source_offset, reason, key,
    value, headers, parked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
""",
    # The planner, without statistics, would scan every sample of the source.
    pending_samples=(
        "SELECT symbol, ts, source, regime, weight, label, event FROM samples "
        "INDEXED BY samples_pending WHERE source = ? AND label IS NULL "
        "ORDER BY symbol, ts"
    ),
    outbox_pending="SELECT max(id) - min(id) + 1 FROM outbox",
    # The WITHOUT ROWID key (source, symbol, ts) hands each group its rows in ts order.
    concat="group_concat({expr}, {sep})",
    concat_features="CAST(group_concat(features, '') AS BLOB)",
    # 21 significant digits: SQLite 3.40 prints some doubles wrongly at 17 (e.g. 1.2e266).
    weight_text="printf('%!.20e', weight)",
    label_char="coalesce(label, '-')",
    samples_group_by="symbol",
)

POSTGRES = Dialect(
    name="postgresql",
    staged_upserts=True,
    bar_insert=("INSERT INTO bars SELECT * FROM stage_bars ON CONFLICT DO NOTHING"),
    bar_correct=(
        "UPDATE bars AS b SET "  # noqa: S608 - constant column names
        + ", ".join(f"{c} = s.{c}" for c in _BAR_VALUES)
        + " FROM stage_bars AS s WHERE b.symbol = s.symbol AND b.ts = s.ts AND ("
        + " OR ".join(f"b.{c} IS DISTINCT FROM s.{c}" for c in _BAR_VALUES)
        + ")"
    ),
    sample_insert="""
INSERT INTO samples (source, symbol, ts, regime, weight, label, event, feature_version, features,
    target)
SELECT s.source, s.symbol, s.ts, s.regime, s.weight, s.label, s.event, s.feature_version,
    s.features, t.target
FROM stage_samples AS s LEFT JOIN label_targets AS t ON t.source = s.source
ON CONFLICT DO NOTHING
""",
    sample_replace="""
UPDATE samples AS b SET regime = s.regime, weight = s.weight, label = coalesce(s.label, b.label),
    event = s.event, feature_version = s.feature_version, features = s.features,
    target = t.target
FROM stage_samples AS s LEFT JOIN label_targets AS t ON t.source = s.source
WHERE b.source = s.source AND b.symbol = s.symbol AND b.ts = s.ts
    AND (b.regime IS DISTINCT FROM s.regime OR b.weight IS DISTINCT FROM s.weight
    OR b.label IS DISTINCT FROM coalesce(s.label, b.label) OR b.event IS DISTINCT FROM s.event
    OR b.feature_version IS DISTINCT FROM s.feature_version
    OR b.features IS DISTINCT FROM s.features OR b.target IS DISTINCT FROM t.target)
""",
    label_set=(
        "UPDATE samples SET label = ?4 WHERE source = ?1 AND symbol = ?2 AND ts = ?3 "
        "AND label IS DISTINCT FROM ?4"
    ),
    prediction_label_set=(
        "UPDATE predictions SET label = ?3 WHERE symbol = ?1 AND ts = ?2 "
        "AND label IS DISTINCT FROM ?3"
    ),
    dead_letter_insert="""
INSERT INTO dead_letters (source_topic, source_partition, source_offset, reason, key,
    value, headers, parked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING
""",
    pending_samples=(
        "SELECT symbol, ts, source, regime, weight, label, event FROM samples "
        "WHERE source = ? AND label IS NULL ORDER BY symbol, ts"
    ),
    outbox_pending="SELECT count(*) FROM outbox",
    concat="string_agg({expr}, {sep} ORDER BY ts)",
    concat_features="string_agg(features, ''::bytea ORDER BY ts)",
    # PostgreSQL prints a double in the shortest text that reads back as the same double.
    weight_text="weight::text",
    label_char="coalesce(label::text, '-')",
    samples_group_by="source, symbol",
)
