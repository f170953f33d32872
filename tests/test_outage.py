"""A PostgreSQL outage under load, kept short here (tests/outage.py; bench/pg_outage.py
runs the 30 s one): turns that end while the database is down are kept in each bridge's
spool, both bridges are ready again within seconds of its return, and every turn is
stored, its reasoning handed back by the other bridge."""

from __future__ import annotations

import os

import pytest

from tests.outage import READY_WITHIN, NoPostgres, run_outage

# A few seconds here: longer than write_timeout, as a database restart is.
OUTAGE_SECONDS = 3.0
STREAMS = 6


async def test_turns_ending_in_an_outage_are_kept_and_both_bridges_recover() -> None:
    try:
        result = await run_outage(OUTAGE_SECONDS, streams=STREAMS, write_timeout=1.0)
    except NoPostgres as exc:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    assert result.problems == []
    assert result.completed == result.spooled == STREAMS
    assert all(seconds < READY_WITHIN for seconds in result.ready_after), result.ready_after
    assert result.retrievable == result.reasoning_replayed == STREAMS
