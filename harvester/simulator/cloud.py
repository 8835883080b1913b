"""The simulated k6 Cloud account: organizations, projects, tests and their test runs.

The web app reads it on every discovery request, so runs added while the server is running
(`add_run`) show up at once; it all lives on the event loop's thread, so no locking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harvester.simulator.model import JsonObject, RunData

#: `created` of entries made up for a run that arrives without them.
_EPOCH_TEXT = "2024-01-01T00:00:00Z"

_SCRIPT = """import http from 'k6/http';
import { check, sleep } from 'k6';

export default function () {
  const res = http.get('https://test.k6.io/');
  check(res, { 'status is 200': (r) => r.status === 200 });
  sleep(1);
}
"""


@dataclass
class SimCloud:
    """Everything the simulated API knows, keyed by id."""

    organizations: dict[int, JsonObject] = field(default_factory=dict)
    projects: dict[int, JsonObject] = field(default_factory=dict)
    tests: dict[int, JsonObject] = field(default_factory=dict)
    runs: dict[int, RunData] = field(default_factory=dict)

    def add_organization(self, org_id: int, name: str | None = None) -> JsonObject:
        """Register an organization (or return the existing one)."""
        if org_id not in self.organizations:
            self.organizations[org_id] = {
                "id": org_id,
                "name": name or f"organization {org_id}",
                "owner_id": 1,
                "description": "",
                "created": _EPOCH_TEXT,
                "updated": _EPOCH_TEXT,
                "is_default": not self.organizations,
            }
        return self.organizations[org_id]

    def add_project(
        self, project_id: int, organization_id: int, name: str | None = None
    ) -> JsonObject:
        """Register a project of an organization (created too if missing)."""
        self.add_organization(organization_id)
        if project_id not in self.projects:
            is_first = not any(
                p["organization_id"] == organization_id for p in self.projects.values()
            )
            self.projects[project_id] = {
                "id": project_id,
                "name": name or f"project {project_id}",
                "description": "",
                "organization_id": organization_id,
                "is_default": is_first,
                "created": _EPOCH_TEXT,
                "updated": _EPOCH_TEXT,
            }
        return self.projects[project_id]

    def add_test(
        self,
        test_id: int,
        project_id: int,
        name: str | None = None,
        *,
        created: str = _EPOCH_TEXT,
        organization_id: int | None = None,
    ) -> JsonObject:
        """Register a test of a project; a missing project joins `organization_id`."""
        if project_id not in self.projects:
            self.add_project(project_id, organization_id if organization_id is not None else 1)
        if test_id not in self.tests:
            self.tests[test_id] = {
                "id": test_id,
                "project_id": project_id,
                "user_id": 1,
                "name": name or f"test {test_id}",
                "created": created,
                "updated": created,
                "last_test_run_id": None,
                "test_run_ids": [],
                "script": _SCRIPT,
            }
        return self.tests[test_id]

    def add_run(self, run: RunData) -> None:
        """Register (or replace) a run, creating its test, project and organization if new."""
        meta = run.run
        test = self.add_test(
            int(meta["test_id"]),
            int(meta["project_id"]),
            created=str(meta.get("created") or _EPOCH_TEXT),
            organization_id=int(meta["organization_id"]),
        )
        self.runs[run.run_id] = run
        run_ids: list[int] = test["test_run_ids"]
        if run.run_id not in run_ids:
            run_ids.append(run.run_id)
            run_ids.sort()
        test["last_test_run_id"] = run_ids[-1]
        test["updated"] = meta.get("created") or test["updated"]

    def update_run(self, run_id: int, **fields: Any) -> JsonObject:
        """Change fields of a run's `k6-run` object in place, e.g. `run_status=3`.

        For runs whose `run` property returns the same dict each time (generated runs do).
        """
        meta = self.runs[run_id].run
        meta.update(fields)
        return meta

    def projects_of(self, organization_id: int) -> list[JsonObject]:
        return sorted(
            (p for p in self.projects.values() if p["organization_id"] == organization_id),
            key=lambda p: int(p["id"]),
        )

    def tests_of(self, project_id: int | None) -> list[JsonObject]:
        """Tests of one project (all tests when None), by id."""
        return [
            self.tests[test_id]
            for test_id in sorted(self.tests)
            if project_id is None or self.tests[test_id]["project_id"] == project_id
        ]

    def runs_of(self, test_id: int | None) -> list[JsonObject]:
        """The `k6-run` objects of one test (all runs when None), by id."""
        return [
            self.runs[run_id].run
            for run_id in sorted(self.runs)
            if test_id is None or self.runs[run_id].run["test_id"] == test_id
        ]
