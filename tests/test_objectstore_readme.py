"""README's "Try it on loopback" for `--out s3://`: its commands, run as written against
the session's moto server and the simulator it describes."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import anyio.from_thread
import pytest

from harvester.simulator import command
from harvester.simulator.server import Simulator
from tests.s3_helpers import S3Server
from tests.test_recipes import README

pytest.importorskip("aiobotocore")


def test_the_readme_s_loopback_try_out_works_as_written(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README's "Try it on loopback": its simulator, bucket, keys, harvest and verify, run
    as written against this session's moto (its port, and the simulator's, put in)."""
    section = README.split("**Try it on loopback**", 1)[1].split("```sh\n", 1)[1]
    lines = section.split("```", 1)[0].splitlines()
    [simulate] = [shlex.split(line.rstrip("&")) for line in lines if "harvester simulate" in line]
    [bucket_url] = [line.split()[3] for line in lines if line.startswith("curl -X PUT")]
    [exports] = [line for line in lines if line.startswith("export ")]
    env = dict(pair.split("=", 1) for pair in shlex.split(exports)[1:])
    commands = [shlex.split(line.split("#")[0]) for line in lines
                if line.startswith(("harvester harvest", "harvester verify"))]  # fmt: skip
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    cloud = command.build_cloud(parser.parse_args(simulate[2:]))
    s3.client().create_bucket(Bucket=bucket_url.rsplit("/", 1)[1])
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(
            Simulator(cloud, token=env["K6_CLOUD_TOKEN"])
        ) as sim:
            for argv in commands:
                argv = [sim.base_url if a == "http://127.0.0.1:8080" else a for a in argv]
                argv = [s3.url if a == "http://127.0.0.1:5000" else a for a in argv]
                if argv[1] == "verify":
                    argv += ["--output", "table"]  # as on the terminal the comment is of
                done = subprocess.run(
                    [sys.executable, "-m", "harvester", *argv[1:]], capture_output=True,
                    env={**os.environ, **env}, timeout=120, cwd=tmp_path,
                )  # fmt: skip
                assert done.returncode == 0, done.stderr.decode()
    said = lines[-1].split("# on a terminal: ", 1)[1]
    assert done.stdout.decode().splitlines()[-1] == said
