# Sourced by scripts/up and scripts/test: a project virtualenv from the lock file, with uv.
# Usage: . scripts/bootstrap.sh [--dev]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
if command -v uv >/dev/null 2>&1; then
  UV="$(command -v uv)"
else
  # uv is not on this machine: keep a private copy under .tools/ (ignored by git).
  if [ ! -x .tools/bin/uv ]; then
    "$PYTHON" -m venv .tools
    .tools/bin/pip install --quiet --disable-pip-version-check uv
  fi
  UV="$ROOT/.tools/bin/uv"
fi

if [ "${1:-}" = "--dev" ]; then
  "$UV" sync --frozen --quiet --python "$PYTHON"
else
  # --inexact: running the system after the tests leaves their tools (pytest, ruff) installed.
  "$UV" sync --frozen --quiet --no-dev --inexact --python "$PYTHON"
fi
export PATH="$ROOT/.venv/bin:$PATH"

# Compile the virtualenv and the package to bytecode once. Where PYTHONDONTWRITEBYTECODE is set
# Python never caches what it compiles, so every hub, agent and CLI process would recompile
# every module it imports (seconds per process start); compileall writes the .pyc files
# regardless and skips those already up to date.
"$ROOT/.venv/bin/python" -m compileall -q -j 0 "$ROOT/.venv/lib" "$ROOT/src" >/dev/null 2>&1 || true
