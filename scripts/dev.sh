#!/usr/bin/env bash
# Set up and start the gateway: a virtual environment in .venv, the dependencies, a .env copied
# from .env.example when there is none, then `python -m gateway` on API_PORT (default 5050).
#
#   ./scripts/dev.sh          start the gateway in front of the vLLM servers named in .env
#   ./scripts/dev.sh --fake   also start the FAKE vLLM server (scripts/fake_vllm.py) on port 8000,
#                             for frontend work without a GPU
#
# No Redis and no GPU are needed to start it: without an upstream, /health says "unavailable".
set -euo pipefail
source "$(dirname "$0")/_env.sh"
cd "$ROOT"

fake=false
for arg in "$@"; do
  case "$arg" in
    --fake) fake=true ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $arg (see --help)" >&2; exit 2 ;;
  esac
done

ensure_venv requirements.lock
if [ ! -f .env ]; then
  cp .env.example .env
  echo "created .env from .env.example: edit MODEL_ROUTE_* and DEFAULT_MODEL_* to point at your vLLM servers"
fi

if $fake; then
  # The fake stands in for the vLLM server that .env.example's MODEL_ROUTE_tiny points at.
  port="${FAKE_VLLM_PORT:-8000}"
  model="${FAKE_VLLM_MODEL:-TinyLlama/TinyLlama-1.1B-Chat-v1.0}"
  if "$VENV/bin/python" -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.5)" 2>/dev/null; then
    echo "error: port $port is already in use: is a real vLLM running there? Then start without --fake." >&2
    exit 1
  fi
  "$VENV/bin/python" scripts/fake_vllm.py --host 127.0.0.1 --port "$port" --model "$model" \
    --chunks 24 --chunk-interval 0.05 --quiet &
  fake_pid=$!
  cat <<BANNER
******************************************************************************
*  FAKE vLLM on http://127.0.0.1:$port/v1 serving "$model".
*  Its answers are canned text from scripts/fake_vllm.py, NOT a language model.
*  Point a route at it (.env.example's MODEL_ROUTE_tiny already does).
******************************************************************************
BANNER
  "$VENV/bin/python" -m gateway &
  gateway_pid=$!
  # Both run in the background so that this script can hear a stop signal at once (a shell waiting
  # on a foreground child defers its traps) and pass it on: stopping this script by its PID, as a
  # Procfile manager or `kill` does, stops the gateway (which drains its workers) and the fake, and
  # returns once both have exited. If either exits on its own, the other is stopped too.
  stop_both() {
    trap - TERM INT HUP
    kill -TERM "$gateway_pid" "$fake_pid" 2>/dev/null || true
    wait "$gateway_pid" "$fake_pid" 2>/dev/null || true
  }
  trap 'stop_both; exit 0' TERM INT HUP
  status=0
  wait -n "$gateway_pid" "$fake_pid" || status=$?
  stop_both
  exit "$status"
else
  exec "$VENV/bin/python" -m gateway
fi
