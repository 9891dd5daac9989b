"""The outbox: records for the output topics that the store holds until the broker has them.

`Store.write_batch` inserts a batch's records (`outbox=`) in the batch's own transaction, so a
record exists exactly when the rows it describes are stored. The publisher reads the oldest
records (`Outbox.oldest`), sends them as stored and, once the broker has acknowledged all of
them, deletes them (`Outbox.published`): the rows left are the records still to publish, and a
crash between the acknowledgement and the delete only sends the same bytes again.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.store.sqlite import Store

__all__ = ["Outbox", "OutboxRecord"]


@dataclass(frozen=True)
class OutboxRecord:
    """One stored record: its position in the outbox, topic, key and value, as published."""

    id: int
    topic: str
    key: bytes
    value: bytes


class Outbox:
    """The outbox table of one open `Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        #: The ids the last `oldest` read (what `published` may forget on a shared store).
        self._read: list[int] = []

    def oldest(self, limit: int) -> list[OutboxRecord]:
        """Up to `limit` records not yet published, oldest first."""
        with self.store.transaction("read the outbox", write=False) as conn:
            rows = conn.execute(
                "SELECT id, topic, key, value FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        records = [OutboxRecord(int(i), str(t), bytes(k), bytes(v)) for i, t, k, v in rows]
        self._read = [r.id for r in records]
        return records

    def published(self, last_id: int) -> int:
        """Forget every record up to `last_id` (the broker acknowledged them); how many.

        On a store several daemons share, batches commit out of id order: a record with a
        smaller id can commit after `oldest` read past it. There only the records `oldest`
        read are forgotten, so such a late record stays to be published."""
        with self.store.transaction("mark outbox records published", write=True) as conn:
            if not self.store.shared:
                return int(conn.execute("DELETE FROM outbox WHERE id <= ?", (last_id,)).rowcount)
            read = [i for i in self._read if i <= last_id]
            return int(conn.execute("DELETE FROM outbox WHERE id = ANY(?)", (read,)).rowcount)

    def pending(self) -> int:
        """How many records wait to be published. On SQLite the ids left form one range
        (records are deleted oldest first, and a rolled-back insert gives its ids back), so two
        index lookups count them; PostgreSQL counts the rows (`Dialect.outbox_pending`)."""
        with self.store.transaction("count the outbox", write=False) as conn:
            (count,) = conn.execute(self.store.dialect.outbox_pending).fetchone()
        return 0 if count is None else int(count)
