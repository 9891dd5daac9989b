"""Rejected records are logged at INFO with their reason, a few a minute, the rest summed up."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from consumers._rejections import RejectionLog
from daemon.errors import EventRejected


def record(offset: int) -> SimpleNamespace:
    return SimpleNamespace(topic="market.bars", partition=2, offset=offset)


def test_rejections_are_logged_at_info_with_their_reason_and_rate_limited(caplog):
    now = [0.0]
    log = RejectionLog(lines=3, window_s=60.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="consumers.rejected")
    for offset in range(1000):  # a flood within one minute
        reason = "not_json" if offset % 4 else "missing_field"
        log.log(record(offset), EventRejected(reason, f"detail of {offset}"))
    lines = [r for r in caplog.records if r.name == "consumers.rejected"]
    assert [r.levelno for r in lines] == [logging.INFO] * 3
    assert lines[0].getMessage() == "rejected market.bars[2]@0: missing_field: detail of 0"
    assert lines[1].getMessage() == "rejected market.bars[2]@1: not_json: detail of 1"
    now[0] = 61.0  # the next minute: first the summary of what was left out, then in full
    log.log(record(1000), EventRejected("bad_type", "field 'close' = 'x'"))
    summary, first = [r.getMessage() for r in caplog.records][3:]
    assert summary.startswith("rejected 997 more records within 60 s of the lines above")
    assert "(not_json 748, missing_field 249)" in summary
    assert first == "rejected market.bars[2]@1000: bad_type: field 'close' = 'x'"
