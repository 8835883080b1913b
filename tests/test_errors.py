"""Errors out of nested task groups come out as the error that tells the user most."""

from __future__ import annotations

from harvester.errors import AuthRejected, NotFound, OutputError, unwrap


def test_unwrap_prefers_a_rejected_token_then_job_enders_then_ours_then_the_first_leaf() -> None:
    auth, missing, disk, bug = AuthRejected("a"), NotFound("n"), OutputError("o"), KeyError("k")
    assert unwrap(ExceptionGroup("g", [missing, ExceptionGroup("h", [bug, auth])])) is auth
    assert unwrap(ExceptionGroup("g", [missing, disk])) is disk
    assert unwrap(ExceptionGroup("g", [bug, ExceptionGroup("h", [missing])])) is missing
    assert unwrap(ExceptionGroup("g", [ExceptionGroup("h", [bug])])) is bug
    assert unwrap(bug) is bug
