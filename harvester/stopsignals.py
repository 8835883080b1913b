"""The signals that stop a job or a worker gracefully: SIGINT, SIGTERM and SIGHUP.

SIGHUP is what a job gets when its terminal or ssh session closes: by default it killed
the job outright, files half written and runs left `running`. It now stops the job as
SIGTERM does (finished runs kept, runs in flight given their grace, the others recorded
cut short). Unless it was ignored when the process started: `nohup harvester ...` asks to
outlive the session, and watching SIGHUP would undo that (asyncio replaces an ignored
disposition with its handler), so it stays ignored.

Read once, at import: asyncio sets a signal back to SIG_DFL (not to what it was) when a
receiver closes, so after discovery's receiver nohup's SIG_IGN could not be seen again.
"""

from __future__ import annotations

import signal

#: SIGHUP ignored from the start (nohup): it is not ours to watch.
_HANGUP_IGNORED = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN

STOP_SIGNALS: tuple[signal.Signals, ...] = (
    signal.SIGINT,
    signal.SIGTERM,
    *(() if _HANGUP_IGNORED else (signal.SIGHUP,)),
)
