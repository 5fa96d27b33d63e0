#!/usr/bin/env bash
# Print the URL of a real Redis for the test suite, starting one if needed.
# Order: a redis-server we start on a private port (so tests never touch a
# user's data on 6379), else an already running 127.0.0.1:6379, else install
# redis-server from Debian's packages (CI runs as root) and start it.
set -euo pipefail
port=${TRADETREE_TEST_REDIS_PORT:-6391}
dir=${TRADETREE_TEST_REDIS_DIR:-$PWD/.tradetree/test-redis}
pong() { redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }
start_own() {
  mkdir -p "$dir"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$dir" \
    --save "" --appendonly no --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" >/dev/null
  for _ in $(seq 1 50); do pong "$port" && return 0; sleep 0.1; done
  echo "redis-server did not answer on port $port (see $dir/redis.log)" >&2; return 1
}
if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
  pong "$port" || start_own
  echo "redis://127.0.0.1:$port/0"; exit 0
fi
if command -v redis-cli >/dev/null && pong 6379; then
  echo "redis://127.0.0.1:6379/0"; exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing redis-server for the integration tests" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >&2
  start_own; echo "redis://127.0.0.1:$port/0"; exit 0
fi
echo "no Redis: install redis-server or set TRADETREE_TEST_REDIS_URL" >&2
exit 1
