# Shared by scripts/demo and scripts/test: make .venv and install edgepack into it.
# Idempotent: pip runs only when pyproject.toml changed since the last install.
# shellcheck shell=bash
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
EXTRAS="${EDGEPACK_EXTRAS:-}"  # e.g. dev: the test tools

if [ ! -x .venv/bin/python ]; then
  echo "edgepack: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.edgepack-installed${EXTRAS:+-$EXTRAS}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "edgepack: installing edgepack${EXTRAS:+[$EXTRAS]} into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
  echo "$want" > "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
