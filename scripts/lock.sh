#!/usr/bin/env bash
# Regenerate requirements.lock and requirements-dev.lock from requirements.txt and
# requirements-dev.txt: exact versions with their hashes, for every platform and Python 3.11+
# (uv pip compile --universal). Run it after changing either requirements file, then commit both
# locks; tests/unit/test_requirements.py fails while they disagree.
#
#   ./scripts/lock.sh            keep the locked versions that still satisfy the ranges
#   ./scripts/lock.sh --upgrade  take the newest versions the ranges allow
set -euo pipefail
source "$(dirname "$0")/_env.sh"
cd "$ROOT"

ensure_venv requirements-dev.lock
"$VENV/bin/python" -m uv --version >/dev/null 2>&1 || "$VENV/bin/python" -m pip install -q uv
compile() {
  "$VENV/bin/python" -m uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
    --no-header --annotation-style line "$@"
}
compile "${@}" requirements.txt -o requirements.lock
# The test tools on top of exactly the runtime versions: one venv serves both scripts.
compile "${@}" --constraint requirements.lock requirements-dev.txt -o requirements-dev.lock
echo "wrote requirements.lock and requirements-dev.lock"
