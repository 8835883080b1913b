# Sourced by scripts/*: create the virtual environment if it is missing, with the project in it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
stamp="$VENV/.installed-$(sha1sum "$ROOT/pyproject.toml" | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setting up $VENV (one time) ..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev,fast,parquet]" >&2
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
# Tools of tests/test_singer.py whose pins clash with dev's (target-jsonl pins jsonschema
# 2.6.0): each a pyproject extra installed alone into a venv of its own, by scripts/test
# only (scripts/demo and scripts/bench need neither: Meltano's install is minutes).
side_venv() {  # DIR EXTRA
  local reqs stamp
  reqs="$(python3 -c 'import tomllib, sys
print(" ".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"][sys.argv[2]]))' \
    "$ROOT/pyproject.toml" "$2")"
  stamp="$1/.installed-$(echo "$reqs" | sha1sum | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    echo "setting up $1 (one time) ..." >&2
    python3 -m venv "$1"
    # shellcheck disable=SC2086  # one word per requirement
    "$1/bin/python" -m pip install --quiet $reqs >&2
    rm -f "$1"/.installed-*
    touch "$stamp"
  fi
}
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
