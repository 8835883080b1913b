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
    """One row per threshold, the crossed ones first."""
    on = {m.get("id"): m for m in metrics}
    rows = [
        {
            "metric": metric_name(on.get(t.get("metric_id"))),
            "expression": t.get("name", ""),
            "value": t.get("calculated_value"),
            "crossed": bool(t.get("tainted")),
        }
        for t in thresholds
    ]
    return sorted(rows, key=lambda row: (not row["crossed"], row["metric"], row["expression"]))


def check_rows(checks: dict[tuple[str, str], dict[str, list[float]]]) -> list[dict[str, Any]]:
    """Passes and fails of each check from its sum and count series, else its pass rate."""
    rows = []
    for (name, group), methods in sorted(checks.items()):
        row: dict[str, Any] = {"check": name, "group": group, "passes": None, "fails": None}
        if "sum" in methods and "count" in methods:
            passes, total = methods["sum"][0], methods["count"][0]
            row.update(passes=passes, fails=total - passes)
            row["rate"] = passes / total if total else None
        else:
            shares = methods.get("mean") or methods.get("avg") or methods.get("rate")
            row["rate"] = shares[0] / shares[1] if shares else None
        rows.append(row)
    return rows


def header_of(
    run_id: int,
    small: dict[str, list[Record]],
    totals: dict[str, float | None],
    thresholds: list[dict[str, Any]],
) -> tuple[dict[str, Any], list[str]]:
    """The header's facts, and what the archive cannot say."""
    run = small["run"][0] if small["run"] else None
    metric = small["metric"][0] if small["metric"] else {}
    summary = small["summary"][-1] if small["summary"] else {}
    header: dict[str, Any] = {
        "run": run_id,
        "project": (run or {}).get("project_id") or metric.get("project_id"),
        "http_reqs": totals.get("http_reqs"),
        "iterations": totals.get("iterations"),
        "complete": summary.get("complete"),
        "methods": (summary.get("harvest") or {}).get("methods"),
    }
    unknown = []
    crossed = any(row["crossed"] for row in thresholds)
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
    status = run.get("run_status")
    header.update(
        test=run.get("test_id"),
        test_name=run.get("test_name"),
        created=run.get("created"),
        started=run.get("started"),
        ended=run.get("ended"),
        status=RUN_STATUS_NAMES.get(status, f"status {status}") if status is not None else None,
        result=_result(run.get("result_status"), crossed),
    )
    return header, unknown


def _result(result_status: Any, crossed: bool) -> str | None:
    if result_status == 1:
        return "failed: a threshold was crossed" if crossed else "failed"
    if result_status == 0:
        return "passed"
    return None
