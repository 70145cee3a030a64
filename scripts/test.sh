#!/usr/bin/env bash
# Run the test suite: a virtual environment in .venv with requirements-dev.lock, Redis on
# 127.0.0.1:6379 (started, and installed with apt-get if missing), then pytest.
#
#   ./scripts/test.sh              unit and integration tests (fake vLLM servers, real Redis)
#   ./scripts/test.sh -m e2e       the end-to-end suite against real vLLM (scripts/start_vllm.sh)
#   ./scripts/test.sh ARGS...      any other pytest arguments
set -euo pipefail
source "$(dirname "$0")/_env.sh"
cd "$ROOT"

redis_up() {
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG
  else
    "$VENV/bin/python" -c 'import socket; socket.create_connection(("127.0.0.1", 6379), 1).close()' 2>/dev/null
  fi
}

ensure_redis() {
  redis_up && return 0
  if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing redis-server ..."
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
      echo "error: Redis is needed on 127.0.0.1:6379 and redis-server is not installed" >&2
      exit 1
    fi
  fi
  echo "starting redis-server on 127.0.0.1:6379 ..."
  mkdir -p /tmp/gateway-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/gateway-redis --logfile /tmp/gateway-redis/redis.log
  for _ in $(seq 1 50); do
    redis_up && return 0
    sleep 0.1
  done
  echo "error: redis-server did not answer on 127.0.0.1:6379 (see /tmp/gateway-redis/redis.log)" >&2
  exit 1
}

ensure_venv requirements-dev.lock
ensure_redis
exec "$VENV/bin/python" -m pytest "$@"
