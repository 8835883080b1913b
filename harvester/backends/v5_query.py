"""The v5 metrics API's URLs and the methods the harvester asks it for.

URLs follow v6.md to the letter: arguments in the path as an OData function call,
strings single-quoted with `''` for a quote, no space after the commas, and the path
percent-encoded by us (the HTTP library gets it already encoded, so it neither encodes
`%` again nor splits at `(`). Encoded: space, `"`, `{`, `}`, `|`, `\\`, `^`, backtick,
every non-ASCII byte, and `%`, `?`, `#` (which would otherwise end the path or start an
escape); `( ) [ ] ' = , :` travel as they are.

Methods: without `--method`, each metric type gets the set that lets a reader recompute
every total and mean exactly (`DEFAULT_METHODS`). `--method` takes v2's names, mapped per
type (`V2_NAMES`, from the docs' "previous method" column), or a raw v5 method.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ..errors import ConfigError

V5 = "/cloud/v5/test_runs"
_ENCODE = frozenset(' "{}|\\^`%?#')

#: The aggregations a reader needs to recompute totals and means, per metric type.
DEFAULT_METHODS: dict[str, tuple[str, ...]] = {
    "counter": ("increase",),
    "rate": ("increase_nz", "increase_z"),
    "gauge": ("last",),
    "trend": ("histogram_avg", "histogram_count_increase"),
}
#: Every documented v5 method per type (histogram_quantile(q) besides).
V5_METHODS: dict[str, frozenset[str]] = {
    "counter": frozenset({"increase", "rate", "value", "cumrate"}),
    "gauge": frozenset({"last", "min", "max", "avg"}),
    "rate": frozenset(
        f"{kind}_{part}" for kind in ("increase", "rate", "value") for part in ("total", "nz", "z")
    )
    | {"ratio"},
    "trend": frozenset(
        {"histogram_avg", "histogram_min", "histogram_max", "histogram_stddev"}
        | {"histogram_count_increase", "histogram_count_value"}
    ),
}
#: v2 `method` names -> the v5 method of each type they fit.
V2_NAMES: dict[str, dict[str, str]] = {
    "trend": {"mean": "histogram_avg", "avg": "histogram_avg", "min": "histogram_min",
              "max": "histogram_max", "stddev": "histogram_stddev", "stdev": "histogram_stddev",
              "median": "histogram_quantile(0.5)", "med": "histogram_quantile(0.5)",
              "count": "histogram_count_increase"},
    "counter": {"sum": "increase", "count": "increase", "rps": "rate", "rate": "rate",
                "value": "value"},
    "rate": {"rate": "ratio", "mean": "ratio", "passes": "increase_nz", "fails": "increase_z",
             "count": "increase_total"},
    "gauge": {"last": "last", "value": "last", "min": "min", "max": "max", "mean": "avg",
              "avg": "avg"},
}  # fmt: skip
_PERCENTILE = re.compile(r"p\(?(\d{1,2}(?:\.\d+)?)\)?")
_FRACTION = re.compile(r"0?\.\d+")
_QUANTILE = re.compile(r"histogram_quantile\((0?\.\d+)\)")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9_]")
#: A label name as a query's `by (...)` can hold: v6.md's syntax has no quoting for one.
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def encode_path(text: str) -> str:
    """Percent-encode what a path cannot carry as it is (see the module docstring)."""
    out: list[str] = []
    for char in text:
        if char in _ENCODE or ord(char) > 127:
            out.extend(f"%{byte:02X}" for byte in char.encode())
        else:
            out.append(char)
    return "".join(out)


def label_name(key: str) -> str:
    """A k6 tag key as the v5 API's label name: characters outside [A-Za-z0-9_] become
    `_` (`région` -> `r_gion`); the simulator sanitizes its tags with this too."""
    return _NOT_LABEL.sub("_", key)


def unwritable(labels: Sequence[str]) -> list[str]:
    """The label names no `by (...)` can hold as they are (`my-tag`, `1st`): v5 refuses a
    query naming one (HTTP 400), and the syntax has no quoting that would make it fit."""
    return [name for name in labels if not _LABEL_NAME.fullmatch(name)]


def quote(text: str) -> str:
    """A v5 string literal: single quotes, a quote inside doubled."""
    return "'" + text.replace("'", "''") + "'"


def range_path(run_id: int, query: str, metric: str, step: int) -> str:
    call = f"query_range_k6(query={quote(query)},metric={quote(metric)},step={step})"
    return f"{V5}/{run_id}/{encode_path(call)}"


def aggregate_path(run_id: int, query: str, metric: str) -> str:
    call = f"query_aggregate_k6(query={quote(query)},metric={quote(metric)})"
    return f"{V5}/{run_id}/{encode_path(call)}"


def by_labels(method: str, labels: Sequence[str]) -> str:
    """`<method> by (<l1>,<l2>)`, or the method alone without labels."""
    return f"{method} by ({','.join(labels)})" if labels else method


def selector(name: str, labels: Iterable[tuple[str, str]]) -> str:
    """`name{l1="v1",l2="v2"}`: equality matchers, `"` and `\\` escaped."""
    pairs = [f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
             for k, v in labels]  # fmt: skip
    return name + ("{" + ",".join(pairs) + "}" if pairs else "")


def quantile_method(q: float) -> str:
    """`histogram_quantile(q)`, q in plain decimals, as many as it has: `{q:g}` wrote
    0.9999999 (`p99.99999`) as `1` and 0.00000001 as `1e-08`, which v5 refuses."""
    return f"histogram_quantile({_decimals(q)})"


def _decimals(q: float) -> str:
    return f"{q:.15f}".rstrip("0").rstrip(".")


def _fitting_quantile(q: float) -> str | None:
    """The method of quantile `q` when v5 has one: 0 < q < 1 as written (`p0` is none,
    nor a q that rounds to 1), else None: refused at start, not by the API run by run."""
    return quantile_method(q) if 0 < float(_decimals(q)) < 1 else None


def v5_method(name: str, metric_type: str) -> str | None:
    """The v5 method `name` (a v2 name or a raw v5 method) means for a metric type, or
    None when it does not fit that type."""
    text = name.strip()
    if text in V5_METHODS.get(metric_type, ()):
        return text
    if metric_type == "trend":
        if match := _QUANTILE.fullmatch(text):
            return text if float(match.group(1)) > 0 else None
        if match := _PERCENTILE.fullmatch(text.lower()):
            return _fitting_quantile(float(match.group(1)) / 100)
        if _FRACTION.fullmatch(text):
            return _fitting_quantile(float(text))
    return V2_NAMES.get(metric_type, {}).get(text.lower())


def check_methods(names: Sequence[str], origin: str = "--method") -> None:
    """Refuse at start-up a `--method` that fits no metric type at all (exit 2); `origin`
    says where it was written."""
    for name in names:
        if name != "default" and not any(v5_method(name, t) for t in V5_METHODS):
            raise ConfigError(
                f"{origin} {name!r} fits no metric type of the v6 API; use a v2 name (mean, "
                "p95, 0.99, count, sum, rate ...) or a v5 method (histogram_quantile(0.999))"
            )


def methods_of(metric_type: str, asked: Sequence[str]) -> list[str]:
    """The v5 methods to query for a metric of `metric_type`: the defaults without
    `--method` (or for `default`), else each asked name that fits the type, once."""
    chosen: list[str] = []
    for name in asked or ("default",):
        if name == "default":
            chosen += DEFAULT_METHODS.get(metric_type, ())
        elif method := v5_method(name, metric_type):
            chosen.append(method)
    return list(dict.fromkeys(chosen))
