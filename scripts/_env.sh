# Shared by dev.sh and test.sh: a virtual environment in .venv with the exact versions of a lock
# file (requirements.lock, or requirements-dev.lock with the test tools), checked against their
# hashes. Sourced, not run. Re-installs only when the lock file changes.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GATEWAY_VENV:-$ROOT/.venv}"

# The interpreters to build .venv from, best first, one per line. $PYTHON alone when set; otherwise
# every python3.13, python3.12, python3.11 and python3 on PATH (3.11 or newer), the fastest first:
# builds of one version differ by up to a fifth in the gateway's CPU per request (see
# scripts/pick_python.py), and the one taken is printed.
find_pythons() {
  local candidates=() runner ranked=""
  if [ -n "${PYTHON:-}" ]; then
    if command -v "$PYTHON" >/dev/null 2>&1 &&
      "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$PYTHON"
      return 0
    fi
    echo "error: PYTHON=$PYTHON is not Python 3.11 or newer" >&2
    return 1
  fi
  mapfile -t candidates < <(type -ap python3.13 python3.12 python3.11 python3 2>/dev/null || true)
  for runner in "${candidates[@]}"; do # any Python 3 can run the ranking
    "$runner" -c '' >/dev/null 2>&1 || continue # pyenv's shim of a version it has not enabled, say
    ranked="$("$runner" "$ROOT/scripts/pick_python.py" "${candidates[@]}")" && [ -n "$ranked" ] && break
    ranked=""
  done
  if [ -z "$ranked" ]; then
    echo "error: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
    return 1
  fi
  echo "$ranked"
}

# `python -m venv "$VENV"`, leaving nothing behind when it fails.
make_venv() {
  "$1" -m venv "$VENV" 2>/dev/null && return 0
  rm -rf "$VENV"
  return 1
}

ensure_venv() {
  local lock="$1" pythons=() python stamp wanted
  if [ ! -x "$VENV/bin/python" ]; then
    mapfile -t pythons < <(find_pythons)
    [ "${#pythons[@]}" -gt 0 ] || exit 1 # find_pythons said why
    # Debian and Ubuntu ship venv apart from Python: installed for the fastest interpreter when
    # it is theirs, rather than falling back to a slower one.
    if ! make_venv "${pythons[0]}" && [[ ${pythons[0]} == /usr/bin/* ]] &&
      [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing python3-venv ..."
      apt-get update -qq >/dev/null && apt-get install -y -qq python3-venv >/dev/null || true
    fi
    for python in "${pythons[@]}"; do
      [ -x "$VENV/bin/python" ] || make_venv "$python" || continue
      [ "$python" = "${pythons[0]}" ] ||
        echo "note: '${pythons[0]} -m venv' failed (its python3-venv package is missing?); using $python" >&2
      break
    done
    if [ ! -x "$VENV/bin/python" ]; then
      echo "error: '${pythons[0]} -m venv' failed; install your distribution's python3-venv package" >&2
      exit 1
    fi
    echo "created $VENV with $python ($("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])'))"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  fi
  stamp="$VENV/.installed-$lock"
  wanted="$(sha256sum "$ROOT/$lock" | cut -d' ' -f1)"
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && return 0
  # The dev lock pins the runtime lock's versions (scripts/lock.sh), so a venv made for the tests
  # also serves dev.sh.
  if [ "$lock" = requirements.lock ] && [ -f "$VENV/.installed-requirements-dev.lock" ] &&
    [ "$(cat "$VENV/.installed-requirements-dev.lock")" = "$(sha256sum "$ROOT/requirements-dev.lock" | cut -d' ' -f1)" ]; then
    return 0
  fi
  echo "installing $lock into $VENV ..."
  # --no-deps: the lock already names every package, so pip resolves nothing of its own.
  if ! "$VENV/bin/python" -m pip install -q --require-hashes --no-deps -r "$ROOT/$lock" >"$VENV/pip.log" 2>&1; then
    echo "error: pip install -r $lock failed; the last lines of $VENV/pip.log:" >&2
    tail -n 20 "$VENV/pip.log" >&2
    exit 1
  fi
  echo "$wanted" >"$stamp"
}
