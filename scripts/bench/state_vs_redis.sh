#!/usr/bin/env bash
# sessdb's ASP.NET state server against redis-server on loopback; see state_vs_redis.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python scripts/bench/state_vs_redis.py "$@"
