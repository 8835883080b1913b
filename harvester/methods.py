"""The series `method` spellings the harvester sends, checked once where settings are read.

The v2 docs page of `GET /loadtests/v2/series` documents only `test_run_id` and `ids[]`;
its example serie says `"method": "mean"`. Grafana's k6 Cloud datasource passes `method`
as well: `avg` by default, quantiles as fractions (`0.95`). The v6 docs name the v2 methods
each v6 query replaces: mean, min, max, stdev, median, p95, count, sum, rps, rate, passes,
fails, last. Any other spelling is refused before a request is made: the API would refuse
it for every metric of every run.
"""

from __future__ import annotations

import re

from .errors import ConfigError

#: The `--method` value that asks for the API's default aggregation (no `method` sent).
DEFAULT_METHOD = "default"
#: Seen in the docs' example (`mean`) and in Grafana's datasource (`avg`, fractions).
SEEN = ("mean", "avg")
#: Named in the v6 docs as the v2 methods their queries replace.
NAMED = ("min", "max", "stdev", "median", "count", "sum", "rps", "rate", "passes", "fails", "last")
_PERCENTILE = re.compile(r"p(?:100|[1-9]?\d(?:\.\d+)?)")  # p95, p99.9
_FRACTION = re.compile(r"0\.\d*[1-9]\d*")  # 0 < q < 1: 0.95, 0.999


def check_method(method: str, origin: str = "--method") -> None:
    """ConfigError unless `method` is a spelling the API is known to accept; `origin` says
    where it was written (a flag, or a config file's key)."""
    if method in (DEFAULT_METHOD, *SEEN, *NAMED):
        return
    if _PERCENTILE.fullmatch(method) or _FRACTION.fullmatch(method):
        return
    raise ConfigError(
        f"{origin} {method!r} is not an aggregation the series API is known to accept; use "
        f"{', '.join((*SEEN, *NAMED))}, a percentile (p95, p99.9), a quantile (0.95) or "
        f"{DEFAULT_METHOD}"
    )
