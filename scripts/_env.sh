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
# The Singer target of tests/test_singer.py: pyproject's singer-target extra (alone: its
# pins clash with dev's), in a venv of its own.
SINGER_VENV="$ROOT/.venv-singer"
singer_reqs="$(python3 -c 'import tomllib, sys
print(" ".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["singer-target"]))' \
  "$ROOT/pyproject.toml")"
singer_stamp="$SINGER_VENV/.installed-$(echo "$singer_reqs" | sha1sum | cut -c1-12)"
if [ ! -f "$singer_stamp" ]; then
  echo "setting up $SINGER_VENV (one time) ..." >&2
  python3 -m venv "$SINGER_VENV"
  # shellcheck disable=SC2086  # one word per requirement
  "$SINGER_VENV/bin/python" -m pip install --quiet $singer_reqs >&2
  rm -f "$SINGER_VENV"/.installed-*
  touch "$singer_stamp"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
