"""The simulated account's objects in v6 shapes (`v6-openapi.yaml`), from the v2 data.

A v2 run's `run_status`/`processing_status` become v6's `status`: finished and processed
is `completed`; finished but still processing is `processing_metrics`; a run whose metrics
could not be processed, and the v2 abort statuses (4-9), are `aborted` with
`status_details.extra` saying why; earlier states map one to one. `result` is `passed` or
`failed` from `result_status` (`error` for aborts other than by a threshold), null until
final. `options.thresholds` holds the run's thresholds as configured, keyed by the k6
metric with its submetric (`http_req_duration{status:200}`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from harvester.simulator.model import JsonObject, RunData

_EARLY = {-2: "created", -1: "created", 0: "queued", 1: "initializing", 2: "running"}
#: v2 run_status of aborts -> (extra.code, message).
_ABORTS = {
    4: (4, "The test run timed out."),
    5: (5, "Aborted by user."),
    6: (6, "Aborted by system."),
    7: (7, "Aborted by a script error."),
    8: (8, "Aborted by a threshold."),
    9: (9, "Aborted by a limit."),
}
_PROCESSING_FAILED = (10, "Metrics processing failed.")


def _when(text: Any, fallback: str = "2024-01-01T00:00:00Z") -> str:
    return str(text) if text else fallback


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def metric_key(name: str, tags: dict[str, Any]) -> str:
    """k6's name of a (sub)metric: `http_req_duration{status:200,method:GET}`."""
    if not tags:
        return name
    return name + "{" + ",".join(f"{k}:{v}" for k, v in tags.items()) + "}"


def option_thresholds(data: RunData) -> dict[str, list[str]]:
    metrics, thresholds = data.thresholds()
    by_id = {m["id"]: metric_key(m["name"], m.get("tags") or {}) for m in metrics}
    out: dict[str, list[str]] = {}
    for threshold in thresholds:
        out.setdefault(by_id[threshold["metric_id"]], []).append(threshold["name"])
    return out


def status_of(meta: JsonObject) -> tuple[str, tuple[int, str] | None]:
    """(v6 status, (extra code, message) for an abort)."""
    run_status, processing = int(meta.get("run_status", 3)), int(meta.get("processing_status", 2))
    if run_status in _EARLY:
        return _EARLY[run_status], None
    if processing in (0, 1):
        return "processing_metrics", None
    if processing == 3:
        return "aborted", _PROCESSING_FAILED
    if run_status in _ABORTS:
        return "aborted", _ABORTS[run_status]
    return "completed", None


def ended_of(data: RunData) -> datetime | None:
    """When the run ended: `created` + the test run's duration when the data knows it
    exactly (a recorded k6 run), else v2's `ended`."""
    meta = data.run
    seconds = getattr(data, "seconds", None)
    if meta.get("ended") is None:
        return None
    if isinstance(seconds, float | int):
        return _moment(_when(meta.get("created"))) + timedelta(seconds=seconds)
    return _moment(str(meta["ended"]))


def v6_run(data: RunData, *, stack_email: str = "user@example.com") -> JsonObject:
    meta = data.run
    status, abort = status_of(meta)
    created = _when(meta.get("created"))
    started = _when(meta.get("started"), created)
    ended_at = ended_of(data)
    final = status in ("completed", "aborted")
    ended = _iso(ended_at) if ended_at is not None and final else None
    history: list[JsonObject] = [{"type": "created", "entered": created, "extra": None}]
    if status not in ("created", "queued", "initializing"):
        history.append({"type": "running", "entered": started, "extra": None})
    if status in ("processing_metrics", "completed"):
        history.append({"type": "processing_metrics", "entered": ended or started, "extra": None})
    extra = None
    if abort is not None:
        extra = {"by_user": None, "code": abort[0], "message": abort[1]}
    if final:
        history.append({"type": status, "entered": ended or started, "extra": extra})
    elif status != "running" and history[-1]["type"] != status:
        history.append({"type": status, "entered": created, "extra": None})
    result = None
    if final:
        failed = bool(meta.get("result_status"))
        result = "failed" if failed or (abort and abort[0] == 8) else "passed"
        if abort is not None and abort[0] != 8:
            result = "error"
    seconds = int(meta.get("duration") or 0)
    return {
        "id": data.run_id,
        "test_id": int(meta["test_id"]),
        "project_id": int(meta["project_id"]),
        "started_by": stack_email,
        "created": created,
        "ended": ended,
        "note": str(meta.get("note") or ""),
        "retention_expiry": None,
        "cost": None,
        "status": status,
        "status_details": history[-1],
        "status_history": history,
        "distribution": [{"load_zone": "amazon:us:ashburn", "percent": 100}],
        "result": result,
        "result_details": {"type": result, "message": None, "code": None} if result else None,
        "options": {"thresholds": option_thresholds(data)},
        "k6_dependencies": {},
        "k6_versions": {"k6": "v1.0.0"},
        "max_vus": int(meta.get("vus") or 0),
        "max_browser_vus": 0,
        "estimated_duration": seconds,
        "execution_duration": seconds if final else 0,
        "is_starred": False,
    }


def v6_project(project: JsonObject) -> JsonObject:
    return {
        "id": project["id"],
        "name": project["name"],
        "is_default": bool(project.get("is_default")),
        "grafana_folder_uid": f"folder{project['id']}",
        "created": _when(project.get("created")),
        "updated": _when(project.get("updated")),
        "labels": {},
    }


def v6_load_test(test: JsonObject) -> JsonObject:
    return {
        "id": test["id"],
        "project_id": test["project_id"],
        "name": test["name"],
        "baseline_test_run_id": None,
        "k6_version": None,
        "created": _when(test.get("created")),
        "updated": _when(test.get("updated")),
    }


def parse_moment(text: str) -> datetime | None:
    """An RFC 3339 date-time with a zone, else None."""
    try:
        moment = _moment(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def epoch_of(text: str) -> float:
    return _moment(text).timestamp()


@dataclass
class V6Knobs:
    """How the simulator's v6/v5 side behaves (`SimState.v6`)."""

    #: The stack the token belongs to: `X-Stack-Id` must say it.
    stack_id: int = 1
    #: The stack's URL, for `GET /cloud/v6/auth` with `X-Stack-Url`.
    stack_url: str = "https://harvester-sim.grafana.net"
    #: The status for a missing or wrong `X-Stack-Id` (v6.md: undocumented; 401 or 403).
    stack_status: int = 401
    #: Whether v5 requests must carry `X-Stack-Id` too (they may anyway).
    v5_requires_stack: bool = False
    #: At most this many rows per v6 page whatever `$top` says (None: as asked).
    page_cap: int | None = None
