"""What a job skips: the runs already archived, in either --layout (the files, or the
objects under an object-store prefix, are the truth; the state adds where a run given by
id was published), sealed on the way when a crash left one without its manifest, and
which of them lack what this job asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from pathlib import Path

from .compression import published_run
from .config import Settings
from .errors import ConfigError
from .export import run_archived
from .layout import Places
from .manifest import manifest_path, seal
from .provenance import describe_runs, from_file, lacking
from .scheduler import RunTarget
from .sinks import current_umask, writing_to
from .state import HarvestState

#: Where a job says what the user should know: `Reporter.event(event, message, **fields)`.
Notify = Callable[..., None]


def places_for(settings: Settings) -> Places:
    """Where the job's runs go (--layout), under --out DIR (or an object store's prefix)."""
    return Places(settings.layout, Path(settings.out) if settings.on_disk else None)


def split_done(
    settings: Settings,
    targets: Sequence[RunTarget],
    state: HarvestState | None,
    stored: set[int] | None = None,
    places: Places | None = None,
    resumed: Container[int] | None = None,
) -> tuple[list[RunTarget], list[int]]:
    """(runs to harvest, runs already archived). The files (or the objects `stored` under
    an object-store prefix) are the truth, in either --layout (`Places.locate`); on
    stdout, the state (and the Singer state's `resumed` runs)."""
    places = places if places is not None else places_for(settings)
    if settings.force:
        if settings.on_disk:  # where each run was, so its new files replace it there
            for target in targets:
                places.locate(target.run_id, target.run)
        return list(targets), []
    done_in_state = state.done_runs(t.run_id for t in targets) if state else set()
    if resumed is not None:  # (a Singer state's ranges, looked up: never one entry an id)
        done_in_state |= {t.run_id for t in targets if t.run_id in resumed}
    todo: list[RunTarget] = []
    skipped: list[int] = []
    for target in targets:
        if settings.to_stdout:
            archived = target.run_id in done_in_state
        elif stored is not None:
            archived = target.run_id in stored
            if not archived and target.run_id in done_in_state and state is not None:
                state.forget(target.run_id)
        else:
            where = places.locate(target.run_id, target.run, _recorded(state, target))
            archived = where is not None and run_archived(where, target.run_id, settings.export_csv)
            if where is not None and archived:
                seal_if_unsealed(settings, target.run_id, where)
            if not archived and target.run_id in done_in_state and state is not None:
                state.forget(target.run_id)  # done, says the state; the file says otherwise
        if archived:
            skipped.append(target.run_id)
        else:
            todo.append(target)
    return todo, skipped


def _recorded(state: HarvestState | None, target: RunTarget) -> str | None:
    """Where the state says a run given by id was published (--layout date finds it
    there without walking the archive); None when its run object dates it anyway."""
    if state is None or target.run is not None:
        return None
    found = state.get(target.run_id)
    return found.path if found is not None and found.status == "done" else None


def seal_if_unsealed(settings: Settings, run_id: int, out: Path) -> None:
    """An archived run without its manifest (a crash between the two, or an archive from
    before manifests) gets one now, made from its files in `out`, its directory (see
    `manifest`)."""
    if not manifest_path(out, run_id).exists():
        data = published_run(out, run_id)
        if data is not None and not data.is_file():
            # (A directory, say: reading it to seal it ended the job as "cannot write to
            # DIR", naming neither it nor what to do.)
            kind = "a directory" if data.is_dir() else "not a regular file"
            raise ConfigError(
                f"{data} is {kind}, not run {run_id}'s file, where that file goes: move it "
                "out of the archive, then run again"
            )
        mode = settings.file_mode_bits
        with writing_to(out):
            seal(out, run_id, mode if mode is not None else 0o666 & ~current_umask())


def archived_short(
    settings: Settings,
    archived: Sequence[int],
    state: HarvestState | None,
    places: Places | None = None,
) -> dict[int, list[str]]:
    """Archived runs that lack what this job asks for (another method, details), and
    what. How a run was harvested comes from the state, else from its file's summary
    (in the directory `places` found it in)."""
    recorded = state.harvested_how(archived) if state and archived else {}
    found = places.found if places is not None else {}
    short: dict[int, list[str]] = {}
    for run_id in archived:
        how = recorded.get(run_id)
        where = found.get(run_id, Path(settings.out))
        path = published_run(where, run_id) if settings.on_disk else None
        if how is None and path is not None:
            how = from_file(path)
        missing = lacking(how, settings) if how is not None else []
        if missing:
            short[run_id] = missing
    return short


def warn_short(short: dict[int, list[str]], notify: Notify) -> None:
    """One line naming the archived runs that lack what was asked."""
    if not short:
        return
    what = ", ".join(sorted({item for missing in short.values() for item in missing}))
    notify(
        "archived_differently",
        f"{describe_runs(short)} archived without what this job asks ({what}) and skipped; "
        "--force harvests them again",
        run_ids=sorted(short),
        lacking=what,
    )
