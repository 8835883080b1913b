"""Bad input of every kind, from flags, environment, config file or runs file: exit 2 and
one line on stderr that names where the value came from, before any request is made."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harvester.cli import main

INT64_PAST = str(2**63)
UTF16 = "\ufeff101\n102\n".encode("utf-16-le")
BASE = ["--token", "t", "--base-url", "http://127.0.0.1:9"]
WORKER = ("worker", "--project", "1", "--out", "{tmp}")

# Each case: its id, the command line ("{tmp}" is a folder holding `files`), what stderr
# says; optional files and environment. Every case must stop before the first request.


def case(
    name: str,
    args: list[str],
    message: str,
    files: dict[str, bytes] | None = None,
    env: dict[str, str] | None = None,
) -> Any:
    return pytest.param(args, message, files or {}, env or {}, id=name)


def config_case(
    name: str, toml: bytes, message: str, args: tuple[str, ...] = ("harvest", "--run", "1")
) -> Any:
    return case(name, [*args, "--config", "{tmp}/h.toml"], message, files={"h.toml": toml})


CASES = [
    # URLs urlsplit or yarl raise ValueError for (an internal error before: exit 1).
    *[
        case(
            f"base URL {url}",
            ["harvest", "--run", "1", "--base-url", url],
            f"base URL {url!r} is not an http(s) URL",
        )
        for url in ("http://[::1", "http://127.0.0.1:99999", "http://127.0.0.1:abc")
    ],
    case(
        "stack URL unclosed IPv6",
        ["harvest", "--run", "1", "--api", "v6", "--stack-url", "https://[x"],
        "stack URL 'https://[x' is not an https URL",
    ),
    case(
        "S3 endpoint unclosed IPv6",
        ["harvest", "--run", "1", "--out", "s3://b/p", "--s3-endpoint-url", "http://[::1"],
        "S3 endpoint 'http://[::1' is not an http(s) URL",
    ),
    case(
        "s3 out unclosed IPv6",
        ["harvest", "--run", "1", "--out", "s3://[b/p"],
        "--out 's3://[b/p' is not an s3:// URL",
    ),
    case(
        "run id past int64",
        ["harvest", "--run", INT64_PAST],
        f"--run '{INT64_PAST}' is not a run id",
    ),
    case("superscript two as a run id", ["harvest", "--run", "²"], "--run '²' is not a run id"),
    case("arabic digits as a run id", ["harvest", "--run", "١٢٣"], "is not a run id"),
    case(
        "a test's URL as a run",
        ["harvest", "--run", "https://app.k6.io/tests/5"],
        "is the URL of a test, not of a run",
    ),
    case(
        "project id not whole",
        ["harvest", "--project", "1.5"],
        "--project '1.5' is not a project id",
    ),
    case("rate nan", ["harvest", "--run", "1", "--rate", "nan"], "--rate 'nan' is not a number"),
    # A mode its owner cannot read: the archive made, then unreadable to the harvester.
    *(
        case(
            f"file mode {mode}",
            ["harvest", "--run", "1", "--out", "{tmp}/o", "--file-mode", mode],
            f"--file-mode '{mode}' leaves the archive's files unreadable to their owner (the "
            "harvester reads them back: resume, verify, report); give 0600, 0640 or umask",
        )
        for mode in ("0000", "0200", "044")
    ),
    config_case(
        "file mode in the file",
        b'[harvest]\nfile_mode = "0040"\n',
        "file_mode = '0040' leaves the archive's files unreadable to their owner",
    ),
    case("rate inf", ["harvest", "--run", "1", "--rate", "inf"], "--rate 'inf' is not a number"),
    *[
        case(
            f"rate {rate}",
            ["harvest", "--run", "1", f"--rate={rate}"],
            f"--rate '{rate}' must be at least 0.01 (requests a second; 0.01 is one every 100 s)",
        )
        for rate in ("1e-300", "0", "-5", "0.001")
    ],
    case(
        "worker rate tiny",
        [*WORKER, "--rate", "1e-300"],
        "--rate '1e-300' must be at least 0.01",
    ),
    case(
        "rate huge",
        ["harvest", "--run", "1", "--rate", "1e999"],
        "--rate '1e999' must be a finite number",
    ),
    # Below 10 ms no calm is waited for (a 429's halving undone at once), past a day never.
    *[
        case(
            f"rate recovery {value}",
            ["harvest", "--run", "1", f"--rate-recovery={value}"],
            f"--rate-recovery '{value}' must be at {bound} (seconds without a 429 before the"
            " rate steps up: 0.01 to 86400)",
        )
        for value, bound in (
            ("1e-300", "least 0.01"),
            ("0.001", "least 0.01"),
            ("1e300", "most 86400"),
            ("86401", "most 86400"),
        )  # fmt: skip
    ],
    case(
        "rate recovery tiny in the environment",
        ["harvest", "--run", "1"],
        "HARVESTER_RATE_RECOVERY = '1e-9' must be at least 0.01",
        env={"HARVESTER_RATE_RECOVERY": "1e-9"},
    ),
    case(
        "read timeout nan",
        ["harvest", "--run", "1", "--read-timeout", "nan"],
        "--read-timeout 'nan' is not a number",
    ),
    case(
        "retry budget nan",
        ["harvest", "--run", "1", "--retry-budget", "NaN"],
        "--retry-budget 'NaN' is not a number",
    ),
    case(
        "concurrency past int64",
        ["harvest", "--run", "1", "--concurrency", INT64_PAST],
        "must be at most 9223372036854775807",
    ),
    case("since nan", ["harvest", "--test", "1", "--since", "nan"], "--since 'nan' is not a date"),
    case(
        "since too far back",
        ["harvest", "--test", "1", "--since", "99999999999w"],
        "--since '99999999999w' is too long a duration",
    ),
    case(
        "interval nan",
        ["worker", "--project", "1", "--out", "{tmp}", "--interval", "nan"],
        "--interval 'nan' is not a duration",
    ),
    case(
        "interval inf",
        ["worker", "--project", "1", "--out", "{tmp}", "--interval", "1e999"],
        "--interval '1e999' is too long a duration",
    ),
    case(
        "listen port 70000",
        ["worker", "--project", "1", "--out", "{tmp}", "--listen-port", "70000"],
        "--listen-port '70000' must be at most 65535",
    ),
    case(
        "listen port negative",
        ["worker", "--project", "1", "--out", "{tmp}", "--listen-port=-1"],
        "--listen-port '-1' must be at least 0",
    ),
    case(
        "runs file with ²",
        ["harvest", "--runs-file", "{tmp}/runs.txt"],
        "runs.txt:2: '²' is not a run id",
        files={"runs.txt": "101\n²\n".encode()},
    ),
    case(
        "runs file past int64",
        ["harvest", "--runs-file", "{tmp}/runs.txt"],
        "runs.txt:1: '9223372036854775808' is not a run id",
        files={"runs.txt": f"{INT64_PAST}\n".encode()},
    ),
    case(
        "runs file in UTF-16",
        ["harvest", "--runs-file", "{tmp}/runs.txt"],
        "runs.txt is UTF-16 text; save it as UTF-8",
        files={"runs.txt": UTF16},
    ),
    case(
        "runs file in UTF-16 without a byte-order mark",
        ["harvest", "--runs-file", "{tmp}/runs.txt"],
        "runs.txt is UTF-16 text; save it as UTF-8",
        files={"runs.txt": "101\n102\n".encode("utf-16-be")},
    ),
    # Any NUL was taken for UTF-16: a gzipped runs file was told to go through iconv.
    case(
        "runs file gzipped",
        ["harvest", "--runs-file", "{tmp}/runs.txt.gz"],
        "runs.txt.gz is not text (a NUL byte at offset 3); give a text file",
        files={"runs.txt.gz": gzip.compress(b"101\n102\n", mtime=0)},
    ),
    case(
        "runs file in Latin-1",
        ["harvest", "--runs-file", "{tmp}/runs.txt"],
        "is not UTF-8 text (byte 9)",
        files={"runs.txt": "101 # caf\xe9\n".encode("latin-1")},
    ),
    config_case("config in UTF-16", "[api]\nrate = 2\n".encode("utf-16"), "h.toml is UTF-16 text"),
    config_case(
        "config out = false",
        b"[harvest]\nout = false\n",
        "h.toml: [harvest] out = false must be text in quotes",
    ),
    config_case(
        "config state = 5",
        b"[harvest]\nstate = 5\n",
        "h.toml: [harvest] state = 5 must be text in quotes",
    ),
    config_case(
        "config rate = nan",
        b"[api]\nrate = nan\n",
        "h.toml: [api] rate = nan must be a finite number",
    ),
    config_case(
        "config rate = 0", b"[api]\nrate = 0\n", "h.toml: [api] rate = 0 must be at least 0.01"
    ),
    # A rate so low that the second request waits for ever (it was accepted, the job hung).
    config_case(
        "config rate = 1e-300",
        b"[api]\nrate = 1e-300\n",
        "h.toml: [api] rate = 1e-300 must be at least 0.01 (requests a second",
        WORKER,
    ),
    config_case(
        "config details = 2",
        b"[harvest]\ndetails = 2\n",
        "h.toml: [harvest] details = 2 must be true or false",
    ),
    config_case(
        "config runs = [1.5]",
        b"[harvest]\nruns = [1.5]\n",
        "h.toml: [harvest] runs = '1.5' is not a run id",
        ("harvest",),
    ),
    config_case(
        "config runs, one of three past 64 bits",
        b"[harvest]\nruns = [1, 99999999999999999999, 3]\n",
        "runs = '1 99999999999999999999 3' holds 99999999999999999999, which is not a run id",
        ("harvest",),
    ),
    case(
        "env runs, one of two not a number",
        ["harvest"],
        "HARVESTER_RUNS = '1,abc' holds 'abc', which is not a run id",
        env={"HARVESTER_RUNS": "1,abc"},
    ),
    config_case(
        "config interval nan",
        b'[worker]\ninterval = "nan"\n',
        "h.toml: [worker] interval = 'nan' is not a duration",
        WORKER,
    ),
    config_case(
        "config listen_port",
        b"[worker]\nlisten_port = 70000\n",
        "h.toml: [worker] listen_port = 70000 must be at most 65535",
        WORKER,
    ),
    config_case(
        "config misspelt key",
        b"[harvest]\nruns_fil = 'x'\n",
        "unknown key 'runs_fil' in [harvest] (did you mean runs_file?)",
    ),
    case(
        "env rate nan",
        ["harvest", "--run", "1"],
        "HARVESTER_RATE = 'nan' is not a number",
        env={"HARVESTER_RATE": "nan"},
    ),
    case(
        "env rate tiny",
        [*WORKER],
        "HARVESTER_RATE = '1e-300' must be at least 0.01",
        env={"HARVESTER_RATE": "1e-300"},
    ),
    case(
        "env listen port",
        ["worker", "--project", "1", "--out", "{tmp}"],
        "HARVESTER_LISTEN_PORT = '70000' must be at most 65535",
        env={"HARVESTER_LISTEN_PORT": "70000"},
    ),
    case(
        "env run ²", ["harvest"], "HARVESTER_RUN = '²' is not a run id", env={"HARVESTER_RUN": "²"}
    ),
    case(
        "env interval nan",
        ["worker", "--project", "1", "--out", "{tmp}"],
        "HARVESTER_INTERVAL = 'nan' is not a duration",
        env={"HARVESTER_INTERVAL": "nan"},
    ),
    # `--out $'o\xff'`: argv as Python gets it. The path would go into the state, the
    # manifests and the JSON log as text (it ended in an internal error, run published).
    case(
        "out not UTF-8",
        ["harvest", "--run", "1", "--out", "{tmp}/o\udcff"],
        "is not UTF-8: the state file, the manifests and the log keep it as text",
    ),
    case(
        "env state not UTF-8",
        ["harvest", "--run", "1", "--out", "{tmp}"],
        "HARVESTER_STATE = '/s\\udcff' is not UTF-8",
        env={"HARVESTER_STATE": "/s\udcff"},
    ),
]


@pytest.mark.parametrize(("args", "message", "files", "env"), CASES)
def test_bad_input_is_exit_2_and_one_line_naming_its_origin(
    args: list[str],
    message: str,
    files: dict[str, bytes],
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    command, *rest = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    assert main([command, *BASE, *rest]) == 2
    err = capfd.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1 and err.startswith("harvester: "), err
    assert "Traceback" not in err and "internal error" not in err


def test_runs_from_a_closed_stdin_is_exit_2_and_one_line() -> None:
    """`harvester harvest --runs-file - <&-`: Python starts with no sys.stdin at all."""
    done = subprocess.run(
        [sys.executable, "-m", "harvester", "harvest", *BASE, "--runs-file", "-"],
        preexec_fn=lambda: os.close(0),  # the child starts with no fd 0
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.decode() == (
        "harvester: --runs-file - reads stdin, which is closed; pipe the run ids in\n"
    )
