"""The facts of one run in words: its header, and the rows of its thresholds and checks."""

from __future__ import annotations

from typing import Any

from ..archive import Record
from ..runstatus import RUN_STATUS_NAMES


def metric_name(metric: Record | None) -> str:
    """k6's name of a (sub)metric: `http_req_duration{status:200}`."""
    if not metric:
        return "?"
    tags = ",".join(f"{k}:{v}" for k, v in (metric.get("tags") or {}).items())
    return str(metric.get("name", "?")) + (f"{{{tags}}}" if tags else "")


def threshold_rows(thresholds: list[Record], metrics: list[Record]) -> list[dict[str, Any]]:
    """One row per threshold, the crossed ones first: a v2 threshold names its metric by
    id (`metrics`: the `threshold_metric` records), a v6 one (computed by the harvester
    from v5 aggregates) by its key, and says `crossed` None when it could not be computed."""
    on = {m.get("id"): m for m in metrics}
    rows = []
    for t in thresholds:
        if "expression" in t:  # v6
            row = {"metric": str(t.get("metric", "?")), "expression": str(t["expression"]),
                   "value": t.get("value"), "crossed": t.get("crossed")}  # fmt: skip
            if t.get("crossed") is None:
                row["reason"] = t.get("reason") or "not evaluated"
        else:
            row = {"metric": metric_name(on.get(t.get("metric_id"))),
                   "expression": t.get("name", ""), "value": t.get("calculated_value"),
                   "crossed": bool(t.get("tainted"))}  # fmt: skip
        rows.append(row)
    return sorted(rows, key=lambda row: (row["crossed"] is not True, row["metric"],
                                         row["expression"]))  # fmt: skip


def check_rows(
    checks: dict[tuple[str, str], dict[str, list[float]]], records: list[Record]
) -> list[dict[str, Any]]:
    """Passes and fails of each check (name, group): from its passes (sum) and samples
    (count) or fails series; a check they do not give from the v6 `check` records (the
    whole run, by name), else its pass rate from the series' shares."""
    rows = [_check_row(name, group, methods) for (name, group), methods in sorted(checks.items())]
    counted = {row["check"] for row in rows if row["passes"] is not None}
    for record in records:
        name = str(record.get("check", "")) if isinstance(record, dict) else ""
        if not name or name in counted:
            continue
        passes, fails = float(record.get("passes") or 0), float(record.get("fails") or 0)
        rows = [row for row in rows if row["check"] != name]
        group = next((g for n, g in checks if n == name), "")
        total = passes + fails
        rows.append({"check": name, "group": group, "passes": passes, "fails": fails,
                     "rate": passes / total if total else None})  # fmt: skip
    return sorted(rows, key=lambda row: (row["check"], row["group"]))


def _check_row(name: str, group: str, methods: dict[str, list[float]]) -> dict[str, Any]:
    row: dict[str, Any] = {"check": name, "group": group, "passes": None, "fails": None}
    if "sum" in methods and ("count" in methods or "fails" in methods):
        passes = methods["sum"][0]
        total = methods["count"][0] if "count" in methods else passes + methods["fails"][0]
        row.update(passes=passes, fails=total - passes)
        row["rate"] = passes / total if total else None
    else:
        shares = methods.get("mean") or methods.get("avg") or methods.get("rate")
        row["rate"] = shares[0] / shares[1] if shares else None
    return row


def header_of(
    run_id: int,
    small: dict[str, list[Record]],
    totals: dict[str, tuple[float | None, bool]],
    thresholds: list[dict[str, Any]],
) -> tuple[dict[str, Any], list[str]]:
    """The header's facts, and what the archive cannot say."""
    run = small["run"][0] if small["run"] else None
    metric = small["metric"][0] if small["metric"] else {}
    summary = small["summary"][-1] if small["summary"] else {}
    header: dict[str, Any] = {
        "run": run_id,
        "project": (run or {}).get("project_id") or metric.get("project_id"),
        "http_reqs": totals["http_reqs"][0],
        "iterations": totals["iterations"][0],
        "complete": summary.get("complete"),
        "methods": (summary.get("harvest") or {}).get("methods"),
    }
    unknown = []
    crossed = any(row["crossed"] is True for row in thresholds)
    if run is None:
        unknown.append(
            "test, dates and status: the archive has no run record "
            "(harvest with --run-record, or discover runs with --project/--test)"
        )
        header["result"] = (
            ("failed: a threshold was crossed" if crossed else "passed: no threshold crossed")
            + " (from the thresholds)"
            if thresholds
            else None
        )
        return header, unknown
    header.update(
        test=run.get("test_id"),
        test_name=run.get("test_name"),
        created=run.get("created"),
        started=run.get("started") or _entered(run, "running"),
        ended=run.get("ended"),
    )
    if isinstance(run.get("status"), str):  # v6: status and result in words
        header.update(status=run["status"], result=_v6_result(run.get("result"), crossed))
        return header, unknown
    status = run.get("run_status")
    header.update(
        status=RUN_STATUS_NAMES.get(status, f"status {status}") if status is not None else None,
        result=_result(run.get("result_status"), crossed),
    )
    return header, unknown


def _entered(run: Record, status: str) -> str | None:
    """When a v6 run entered a status (v6 has no `started`: it entered `running`)."""
    for entry in run.get("status_history") or ():
        if isinstance(entry, dict) and entry.get("type") == status:
            return str(entry.get("entered"))
    return None


def _v6_result(result: Any, crossed: bool) -> str | None:
    if result == "failed":
        return _result(1, crossed)
    if result == "error":
        return "error: the run did not complete"
    return str(result) if result is not None else None


def _result(result_status: Any, crossed: bool) -> str | None:
    if result_status == 1:
        return "failed: a threshold was crossed" if crossed else "failed"
    if result_status == 0:
        return "passed"
    return None
