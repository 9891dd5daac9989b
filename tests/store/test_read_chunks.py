"""`Store.read_samples` fetches and decodes the samples a chunk of symbols at a time, into
arrays allocated once: whatever the chunk size, the result is the one the rows call for, on
both backends."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from daemon.domain import REGIMES, SampleRow
from daemon.errors import StoreError
from daemon.store.samples import READ_CHUNK_ROWS

EVENTS = ("2008 Financial Crisis", "2020 Covid Crash", "2018 Volmageddon")


def rows(per_sample_weights: bool) -> list[SampleRow]:
    """Seven symbols of 1 to 7 samples in both sources; archive events first seen in later
    symbols, some archive samples without one; labels missing here and there."""
    rng = np.random.default_rng(3)
    made = []
    for s in range(7):
        for source in ("live", "archive"):
            for d in range(s + 1):
                i = len(made)
                regime = REGIMES[i % len(REGIMES)]
                event = None
                if source == "archive" and (s + d) % 3:
                    event = EVENTS[min(s // 2, len(EVENTS) - 1) if d % 2 else 0]
                made.append(
                    SampleRow(
                        symbol=f"S{6 - s}",  # written out of symbol order
                        ts=(dt.date(2001, 1, 1) + dt.timedelta(days=7 * d + s)).isoformat(),
                        source=source,
                        regime=regime,
                        weight=(1 + i / 7) if per_sample_weights else 1 + REGIMES.index(regime),
                        label=None if i % 5 == 0 else i % 2,
                        features=rng.standard_normal(4).astype(np.float32),
                        feature_version=1,
                        event=event,
                    )
                )
    return made


@pytest.mark.parametrize("weights", ["per regime", "per sample"])
def test_a_read_in_chunks_of_any_size_gives_the_rows_written(backend_store, weights):
    written = rows(weights == "per sample")
    backend_store.write_batch(samples=written)
    expected = sorted(written, key=lambda r: (r.source, r.symbol, r.ts))  # archive first
    reads = {
        chunk: backend_store.read_samples(labelled=None, chunk_rows=chunk)
        for chunk in (1, 2, 5, 13, READ_CHUNK_ROWS)
    }
    for chunk, (meta, X) in reads.items():
        assert meta["symbol"].tolist() == [r.symbol for r in expected], chunk
        assert meta["ts"].dt.strftime("%Y-%m-%d").tolist() == [r.ts for r in expected]
        assert meta["source"].tolist() == [r.source for r in expected]
        assert meta["regime"].tolist() == [r.regime for r in expected]
        assert meta["weight"].tolist() == [r.weight for r in expected]
        assert [None if pd.isna(x) else int(x) for x in meta["label"]] == [
            r.label for r in expected
        ]
        assert [None if pd.isna(x) else x for x in meta["event"]] == [r.event for r in expected]
        wanted = np.vstack([r.features for r in expected])
        assert np.array_equal(X.view(np.uint32), wanted.view(np.uint32))
        assert X.flags.writeable and X.flags.c_contiguous
    whole_meta, whole_X = reads[READ_CHUNK_ROWS]
    for meta, X in reads.values():  # dtypes and categories (their order too) alike
        pd.testing.assert_frame_equal(meta, whole_meta)
        assert X.dtype == whole_X.dtype == np.float32
    seen = list(dict.fromkeys(r.event for r in expected if r.event))  # in order of appearance
    assert list(whole_meta["event"].cat.categories) == seen
    assert sorted(seen) == sorted(EVENTS)


def test_filters_apply_to_every_chunk(backend_store):
    written = rows(False)
    backend_store.write_batch(samples=written)
    meta, X = backend_store.read_samples(source="archive", labelled=True, chunk_rows=3)
    expected = sorted(
        (r for r in written if r.source == "archive" and r.label is not None),
        key=lambda r: (r.symbol, r.ts),
    )
    assert list(zip(meta["symbol"], meta["ts"].dt.strftime("%Y-%m-%d"), strict=True)) == [
        (r.symbol, r.ts) for r in expected
    ]
    assert meta["label"].dtype == np.int8
    assert X.shape == (len(expected), 4)
    pending, _ = backend_store.read_samples(labelled=False, chunk_rows=1)
    assert len(pending) == sum(r.label is None for r in written)
    assert pending["label"].isna().all()


@pytest.mark.parametrize("chunk", [0, -1, 2.5, True, None])
def test_a_chunk_size_that_is_not_a_positive_integer_is_refused(backend_store, chunk):
    with pytest.raises(StoreError, match=rf"read_samples\(chunk_rows={chunk!r}\)"):
        backend_store.read_samples(chunk_rows=chunk)
