"""The Singer state of --format singer: consecutive run ids written as ranges, states of
the first versions (a plain list of ids) still read, STATE bytes bounded by the records'
(one STATE after every run made a job of N runs send O(N²) bytes of state), and the last
STATE, a signal's stop included, naming exactly the runs finished."""

from __future__ import annotations

import io
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from harvester.cli import main
from harvester.formats.singer_state import DoneRuns, read_state
from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.harvest_helpers import parse_lines, settings_for
from tests.process_helpers import ROOT, cli_command, cli_env


def state_of(done: list[Any]) -> dict[str, Any]:
    return {"bookmarks": {"runs": {"done": done}}}


def sparse(count: int) -> list[int]:
    """`count` run ids done, no two consecutive (as one account's are in k6 Cloud, whose
    ids every account shares), below the simulator's (100001 on)."""
    return list(range(1, 2 * count, 2))


def test_consecutive_ids_are_written_as_ranges_and_read_back() -> None:
    done = DoneRuns()
    for run_id in [12, 3, 1, 2, 5, 7, 8, 10, 11, 13]:
        done.add(run_id)
    value = done.value()
    assert value == state_of([[1, 3], 5, 7, 8, [10, 13]])  # three or more: a range
    assert sorted(done.ids()) == [1, 2, 3, 5, 7, 8, 10, 11, 12, 13]
    assert 4 not in done and 9 not in done and 14 not in done and 0 not in done
    # A state of the first versions (every id, any order, repeats) is the same set.
    assert DoneRuns([(i, i) for i in [13, 1, 2, 3, 3, 5, 7, 8, 10, 11, 12]]).value() == value


def test_a_whole_state_message_is_read_as_its_value(tmp_path: Path) -> None:
    """The last STATE line as a target prints it: it was read as a state of no run, and
    every run was harvested again (twice in a target that appends)."""
    path = tmp_path / "state.json"
    path.write_bytes(orjson.dumps({"type": "STATE", "value": state_of([[1, 3], 7])}))
    assert list(read_state(str(path)).ids()) == [1, 2, 3, 7]


def test_a_range_is_never_held_one_entry_an_id(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(orjson.dumps(state_of([[1, 10**15], 10**15 + 2])))
    started = time.monotonic()
    done = read_state(str(path))
    assert 10**12 in done and 10**15 + 1 not in done and 10**15 + 2 in done
    done.add(10**15 + 1)
    assert done.value() == state_of([[1, 10**15 + 2]])
    assert time.monotonic() - started < 1  # (a set of 10**15 ids would never be built)


def test_runs_added_one_by_one_are_the_set_and_each_adds_at_most_its_text_and_4_bytes() -> None:
    """The set as a set of ints has it, read back the same; and the bound on a STATE's growth
    the encoder keeps instead of writing the state after every run."""
    rng = random.Random(11)
    for _ in range(300):
        model = set(rng.sample(range(95, 130), rng.randrange(30)))
        done = DoneRuns([(i, i) for i in model])
        before = len(orjson.dumps(done.value()))
        run_id = rng.randrange(90, 135)
        done.add(run_id)
        model.add(run_id)
        assert len(orjson.dumps(done.value())) - before <= len(str(run_id)) + 4
        assert list(done.ids()) == sorted(model)
        assert all((i in done) == (i in model) for i in range(85, 140))
        assert DoneRuns(_ranges(done.value()["bookmarks"]["runs"]["done"])).value() == done.value()


def states_and_records(out: bytes) -> tuple[list[bytes], list[dict[str, Any]], int]:
    """(each STATE line, every message parsed, the bytes of the messages not STATE)."""
    lines = out.splitlines(keepends=True)
    states = [line for line in lines if line.startswith(b'{"type":"STATE"')]
    return states, parse_lines(out), len(out) - sum(map(len, states))


def runs_rows(messages: list[dict[str, Any]]) -> dict[int, bool]:
    """Each run with a `runs` row: complete or not."""
    return {m["record"]["test_run_id"]: m["record"]["complete"] for m in messages
            if m["type"] == "RECORD" and m["stream"] == "runs"}  # fmt: skip


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        # The first versions' state, a plain list of ids, resumes as it did.
        (lambda r: [r[0], r[2], r[4]], lambda r: [[r[0], r[5]]]),
        # This version's: ranges, a plain id beside them.
        (lambda r: [9, [r[0], r[2]]], lambda r: [9, [r[0], r[5]]]),
    ],
    ids=["old-plain-list", "ranges"],
)
async def test_a_state_of_either_form_resumes_with_no_run_harvested_twice(
    tmp_path: Path, given: Any, expected: Any
) -> None:
    cloud = generate_cloud(runs=6, metrics=3, points=2)
    runs = sorted(cloud.runs)
    state = tmp_path / "state.json"
    state.write_bytes(orjson.dumps(state_of(given(runs))))
    listed = set(read_state(str(state)).ids())
    async with Simulator(cloud) as sim:
        out = io.BytesIO()
        settings = settings_for(sim, "-", format="singer", singer_state=str(state))
        result = await harvest_job(settings, [RunTarget(r) for r in runs], stdout=out)
        asked = {r.run_id for r in sim.requests_for("metrics")}
    assert not result.report.failed
    _, messages, _ = states_and_records(out.getvalue())
    assert set(runs_rows(messages)) == set(runs) - listed  # the others were not harvested
    assert asked == set(runs) - listed  # ... nor asked for
    assert messages[-1] == {"type": "STATE", "value": state_of(expected(runs))}


async def test_state_bytes_of_many_runs_are_bounded_by_the_records(tmp_path: Path) -> None:
    """200 small runs (the `runs` stream only) after a state of 2,000 runs that are not
    consecutive: a STATE after each run sent 1.9 MB of state for 84 KB of records; now
    the STATEs are no more bytes than the records but the last, every one names only runs
    finished, and the last names them all."""
    cloud = generate_cloud(runs=200, metrics=1, points=1)
    given = sparse(2000)
    state = tmp_path / "state.json"
    state.write_bytes(orjson.dumps(state_of(given)))
    async with Simulator(cloud) as sim:
        out = io.BytesIO()
        settings = settings_for(sim, "-", format="singer", singer_state=str(state),
                                singer_streams=["runs"])  # fmt: skip
        targets = [RunTarget(r) for r in sorted(cloud.runs)]
        assert not (await harvest_job(settings, targets, stdout=out)).report.failed
    states, messages, other_bytes = states_and_records(out.getvalue())
    assert sum(map(len, states)) <= other_bytes + len(states[-1])
    assert len(states) > 2  # (and not only one at the end: a pipeline stopped resumes)
    finished: set[int] = set()
    for message in messages:
        if message["type"] == "RECORD":
            finished.add(message["record"]["test_run_id"])
        elif message["type"] == "STATE":
            named = set(DoneRuns(_ranges(message["value"]["bookmarks"]["runs"]["done"])).ids())
            assert named - set(given) <= finished
    assert messages[-1]["value"] == state_of([*given, [min(cloud.runs), max(cloud.runs)]])


def _ranges(done: list[Any]) -> list[tuple[int, int]]:
    return [(i[0], i[1]) if isinstance(i, list) else (i, i) for i in done]


async def test_sigterm_mid_way_ends_with_a_state_of_exactly_the_runs_finished(
    tmp_path: Path,
) -> None:
    """A job stopped by SIGTERM while runs are left: its last message is a STATE naming
    the runs of the state given and exactly those whose `runs` row came out complete,
    though the STATEs between, held back (each bigger than the records since), named
    fewer."""
    cloud = generate_cloud(runs=30, metrics=2, points=2)
    given = sparse(3000)
    state = tmp_path / "state.json"
    state.write_bytes(orjson.dumps(state_of(given)))
    slow = FaultPlan(p_delay=1.0, delay_seconds=0.2, fault_endpoints=frozenset({"overview"}))
    runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
    async with Simulator(cloud, faults=slow) as sim:
        flags = ["--format", "singer", "--quiet", "--runs-in-flight", "1"]
        command = cli_command(sim, "harvest", *flags, "--singer-state", str(state), *runs)
        async with await anyio.open_process(command, env=cli_env(sim), cwd=ROOT) as process:
            assert process.stdout is not None
            stream, lines = BufferedByteReceiveStream(process.stdout), list[bytes]()
            with anyio.fail_after(30):
                while sum(b'"stream":"runs"' in line for line in lines) < 8:
                    lines.append(await stream.receive_until(b"\n", 1 << 24))
                process.send_signal(signal.SIGTERM)
                lines += (b"".join([chunk async for chunk in stream])).splitlines()
                status = await process.wait()
    assert status == 128 + signal.SIGTERM
    messages = [orjson.loads(line) for line in lines]
    finished = {run for run, complete in runs_rows(messages).items() if complete}
    assert 8 <= len(finished) < len(cloud.runs)
    assert messages[-1]["type"] == "STATE"
    last = set(DoneRuns(_ranges(messages[-1]["value"]["bookmarks"]["runs"]["done"])).ids())
    assert last == set(given) | finished
    assert sum(m["type"] == "STATE" for m in messages) < len(finished)


@pytest.mark.parametrize(
    ("done", "said"),
    [
        (b"[[3, 1]]", "[3,1] in `done` is neither a run id nor a [first, last] range"),
        (b"[[1, 2, 3]]", "[1,2,3] in `done` is neither"),
        (b'[[1, "2"]]', '[1,"2"] in `done` is neither'),
        (b"[true]", "true in `done` is neither"),
        (b"[1.5]", "1.5 in `done` is neither"),
        (b"[123456789012345678901234567890]", "in `done` is neither"),
        (b"5", "is not a harvester state: expected"),
    ],
)
def test_a_bad_state_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], done: bytes, said: str
) -> None:
    state = tmp_path / "s.json"
    state.write_bytes(b'{"bookmarks": {"runs": {"done": ' + done + b"}}}")
    argv = ["harvest", "--run", "1", "--token", "t", "--base-url", "http://127.0.0.1:9",
            "--format", "singer", "--singer-state", str(state)]  # fmt: skip
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2 and said in err and err.count("\n") == 1, err
    assert f"--singer-state {state} is not a harvester state" in err


def test_the_readme_s_jq_makes_a_state_of_ranges_the_plain_list_of_earlier_versions(
    tmp_path: Path,
) -> None:
    from tests.process_helpers import find_tool
    from tests.test_recipes import RECIPES

    find_tool("jq", "apt-get install jq")
    (tmp_path / "state.json").write_bytes(orjson.dumps(state_of([7, 9, 10, [12, 15]])))
    done = subprocess.run(["bash", "-c", RECIPES["singer-state-plain"]], cwd=tmp_path,
                          capture_output=True, check=True, timeout=30)  # fmt: skip
    assert orjson.loads(done.stdout) == state_of([7, 9, 10, 12, 13, 14, 15])
