"""`--format singer`: the harvest as a Singer tap's messages on stdout.

The stdout sink hands each run's encoded lines (`records.Lines`) here, and gets Singer
messages back: a SCHEMA for every stream before the first record, a RECORD per row, and a
STATE once runs are whole (see STATE bytes below; always at the end), so a Singer target
or a Meltano pipeline can resume. Streams (each row carries `test_run_id`):

- `runs`: one row per run, made from its summary (complete, reasons) and its run record.
- `metrics`: `metric`, `threshold_metric` and `metric_detail` records (`record_type`).
- `points`: the flat rows of `--format points` (`PointsSplitter`), exactly.
- `thresholds`, `overviews`, `checks` (v6): one row per record.
- `other`: any other record (`error`), raw, so nothing the harvest wrote is lost.

A row is the record's key columns and the API's object unchanged in `data` (the points
and checks are flat). A STATE names every run finished, those of the state the job was
given included (`singer_state`: how).

STATE bytes: each STATE names every run done, so one after every run would make a job of
N runs send O(N²) bytes of state (50,000 runs of 7-digit ids: ~10 GB) for a target to
parse. A STATE is sent only once the other messages since the last one are at least as
many bytes as it (then STATEs are never more bytes than the records, whatever N), and
always at the end, a signal's stop included.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import orjson

from ..errors import ConfigError
from .points import PointsSplitter, Serie, read_meta
from .singer_state import DoneRuns

NEWLINE = orjson.OPT_APPEND_NEWLINE
INTEGER, TEXT, NUMBER = {"type": "integer"}, {"type": "string"}, {"type": "number"}
OBJECT = {"type": "object"}


def _nullable(kind: str, **more: Any) -> dict[str, Any]:
    return {"type": ["null", kind], **more}


def _schema(**columns: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"test_run_id": INTEGER, **columns}}


#: Each stream's JSON Schema (draft 4, which every Singer target reads) and key.
STREAMS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "runs": (
        _schema(test_id=_nullable("integer"), project_id=_nullable("integer"),
                complete={"type": "boolean"}, incomplete_reason=_nullable("string"),
                error=_nullable("string"), run=_nullable("object"), summary=OBJECT),
        ["test_run_id"],
    ),
    "metrics": (
        _schema(record_type=TEXT, metric_id=TEXT, name=_nullable("string"),
                type=_nullable("string"), data=OBJECT),
        ["test_run_id", "record_type", "metric_id"],
    ),
    # No key: a point is unique only with its tags, an object no SQL target keys on.
    "points": (
        _schema(test_id=_nullable("integer"), project_id=_nullable("integer"),
                metric=_nullable("string"), metric_type=_nullable("string"),
                tags={"type": "object", "additionalProperties": {"type": "string"}},
                method=_nullable("string"), time=_nullable("string", format="date-time"),
                value=_nullable("number")),
        [],
    ),
    "thresholds": (_schema(threshold_id=TEXT, data=OBJECT), ["test_run_id", "threshold_id"]),
    "overviews": (_schema(data=OBJECT), ["test_run_id"]),
    "checks": (_schema(check=TEXT, passes=NUMBER, fails=NUMBER), ["test_run_id", "check"]),
    "other": (_schema(record_type=TEXT, data=OBJECT), []),
}  # fmt: skip
METRIC_TYPES = ("metric", "threshold_metric", "metric_detail")


def message(kind: str, **fields: Any) -> bytes:
    return orjson.dumps({"type": kind, **fields}, option=NEWLINE)


def record(stream: str, row: dict[str, Any]) -> bytes:
    return message("RECORD", stream=stream, record=row)


class SingerEncoder:
    """Raw lines of interleaved runs in, Singer messages out (whole lines each time).
    `done`: the runs a Singer state said were done, carried into every STATE."""

    def __init__(self, done: DoneRuns | None = None, streams: Iterable[str] = ()) -> None:
        self.done = done if done is not None else DoneRuns()
        #: The streams sent (`--singer-stream`, a catalog's selection); none said: all.
        self.streams = set(streams) or set(STREAMS)
        self._splitters: dict[int, PointsSplitter] = {}
        self._runs: dict[int, Any] = {}  # each run's run record, for its `runs` row
        self._schemas_sent = False
        self._unsaid = False  # runs done that no STATE named yet
        self._since_state = 0  # bytes of the messages since the last STATE
        # At least the next STATE's size, kept without writing it: the last one's, and
        # each run done since at its most.
        self._state_bound = len(self._state())

    def begin(self, run_id: int) -> bytes:
        self._splitters[run_id] = PointsSplitter(run_id)
        if self._schemas_sent:
            return b""
        self._schemas_sent = True
        return self._counted(
            b"".join(
                message("SCHEMA", stream=name, schema=schema, key_properties=keys)
                for name, (schema, keys) in STREAMS.items()
                if name in self.streams
            )
        )

    def feed(self, run_id: int, data: bytes) -> bytes:
        splitter = self._splitters[run_id]
        out = io.BytesIO()
        points = "points" in self.streams
        for item in splitter.split(data):
            if isinstance(item, Serie):
                for row in item.rows() if points else ():
                    out.write(record("points", row))
                continue
            for line in item.splitlines():
                stream, row = self._row(splitter, read_meta(line))
                if stream in self.streams:
                    out.write(record(stream, row))
        return self._counted(out.getvalue()) + self._due()

    def _counted(self, messages: bytes) -> bytes:
        self._since_state += len(messages)
        return messages

    def _row(self, splitter: PointsSplitter, line: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(stream, row) of a record (stream "" for the run record, only remembered)."""
        kind, run_id, data = line["type"], line["test_run_id"], line.get("data")
        data = data if isinstance(data, dict) else {"value": data}
        if kind == "run":
            self._runs[run_id] = data
            return "", {}
        if kind == "summary":
            return "runs", self._run_row(splitter, data)
        if kind in METRIC_TYPES:
            metric_id = str(data.get("id", data.get("name")))
            return "metrics", {"test_run_id": run_id, "record_type": kind,
                               "metric_id": metric_id, "name": data.get("name"),
                               "type": data.get("type"), "data": data}  # fmt: skip
        if kind == "threshold":
            key = data.get("id", f"{data.get('metric')} {data.get('expression')}")
            return "thresholds", {"test_run_id": run_id, "threshold_id": str(key), "data": data}
        if kind == "overview":
            return "overviews", {"test_run_id": run_id, "data": data}
        if kind == "check":
            return "checks", {"test_run_id": run_id, **data}
        return "other", {"test_run_id": run_id, "record_type": kind, "data": data}

    def _run_row(self, splitter: PointsSplitter, summary: dict[str, Any]) -> dict[str, Any]:
        return {
            "test_run_id": splitter.run_id,
            "test_id": splitter.test_id,
            "project_id": splitter.project_id,
            "complete": bool(summary.get("complete")),
            "incomplete_reason": summary.get("incomplete_reason"),
            "error": summary.get("error"),
            "run": self._runs.get(splitter.run_id),
            "summary": summary,
        }

    def commit(self, run_id: int) -> bytes:
        """The run is whole (its records are all out): it is done, in the next STATE."""
        self._forget(run_id)
        if run_id not in self.done:
            self.done.add(run_id)
            self._unsaid = True
            # (the most a run id adds to a STATE: its own text, a comma, a range's [ , ])
            self._state_bound += len(str(run_id)) + 4
        return self._due()

    def abort(self, run_id: int) -> bytes:
        """A failed run: its records are out (stdout cannot take them back) but it is not
        done, so no STATE names it and a resumed pipeline harvests it again. Its records
        count: a STATE held back for want of them may be due now."""
        self._forget(run_id)
        return self._due()

    def close(self) -> bytes:
        """The last message: the state, so a target that emits only a final STATE (as
        target-jsonl does when records follow the last one) still has it."""
        return self._state()

    def _due(self) -> bytes:
        """A STATE if a run is done that none named yet and the messages since the last
        STATE are at least as many bytes as this one will be; else nothing."""
        if self._unsaid and self._since_state >= self._state_bound:
            return self._state()
        return b""

    def _state(self) -> bytes:
        state = message("STATE", value=self.done.value())
        self._unsaid, self._since_state, self._state_bound = False, 0, len(state)
        return state

    def _forget(self, run_id: int) -> None:
        self._splitters.pop(run_id, None)
        self._runs.pop(run_id, None)


def catalog() -> dict[str, Any]:
    """The Singer catalog of the streams (`tap-harvester --discover`): every one selected
    by default, so `meltano select` can leave some out."""
    return {
        "streams": [
            {"tap_stream_id": name, "stream": name, "schema": schema, "key_properties": keys,
             "metadata": [{"breadcrumb": [], "metadata": {
                 "inclusion": "available", "selected-by-default": True,
                 "table-key-properties": keys}}]}
            for name, (schema, keys) in STREAMS.items()
        ]
    }  # fmt: skip


def selected_streams(doc: Any, where: str) -> list[str]:
    """The streams a catalog (`--catalog`, or the older `--properties`) selects: by the
    stream's own metadata (`selected`, else `selected-by-default`) or its schema's
    `selected` (the older form)."""
    chosen: list[str] = []
    streams = doc.get("streams") if isinstance(doc, dict) else None
    for stream in streams if isinstance(streams, list) else []:
        if not isinstance(stream, dict) or stream.get("tap_stream_id") not in STREAMS:
            continue
        top = [m.get("metadata", {}) for m in stream.get("metadata", []) if not m.get("breadcrumb")]
        marks = top[0] if top else {}
        schema = stream.get("schema") or {}
        if marks.get("selected", marks.get("selected-by-default", schema.get("selected"))):
            chosen.append(stream["tap_stream_id"])
    if not chosen:
        raise ConfigError(f"{where} selects none of the streams {', '.join(STREAMS)}")
    return chosen
