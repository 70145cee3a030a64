# Shared by dev.sh and test.sh: a virtual environment in .venv with the given requirements file.
# Sourced, not run. Re-installs only when the requirements files change.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GATEWAY_VENV:-$ROOT/.venv}"

find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "error: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

ensure_venv() {
  local requirements="$1" python stamp wanted
  if [ ! -x "$VENV/bin/python" ]; then
    python="$(find_python)" || exit 1
    if ! "$python" -m venv "$VENV" 2>/dev/null; then
      # Debian and Ubuntu ship venv separately.
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing python3-venv ..."
        apt-get update -qq >/dev/null && apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$VENV"
        "$python" -m venv "$VENV"
      else
        echo "error: '$python -m venv' failed; install your distribution's python3-venv package" >&2
        exit 1
      fi
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  fi
  stamp="$VENV/.installed-$(basename "$requirements")"
  wanted="$(cat "$ROOT/requirements.txt" "$ROOT/$requirements" | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "installing $requirements into $VENV ..."
    if ! "$VENV/bin/python" -m pip install -q -r "$ROOT/$requirements" >"$VENV/pip.log" 2>&1; then
      echo "error: pip install -r $requirements failed; the last lines of $VENV/pip.log:" >&2
      tail -n 20 "$VENV/pip.log" >&2
      exit 1
    fi
    echo "$wanted" >"$stamp"
  fi
}
