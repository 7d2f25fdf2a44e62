#!/usr/bin/env bash
# The test command: ruff, then the whole suite twice, on SQLite (embedded defaults) and on a throwaway
# PostgreSQL server. Extra arguments go to pytest, e.g. `scripts/test.sh -m "not labelstudio"`.
set -euo pipefail
cd "$(dirname "$0")/.."
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
export LABEL_STUDIO_VENV=${LABEL_STUDIO_VENV:-$PWD/.venv-labelstudio}
PY=.venv/bin/python
[ -x "$PY" ] || { echo "no .venv here: run 'bash .ci/run' once (it installs everything)"; exit 1; }
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
export PG_BIN PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
"$PY" -m ruff check .

echo "== pass 1 of 2: SQLite"
"$PY" -m pytest -p no:cacheprovider "$@"

echo "== pass 2 of 2: PostgreSQL"
PGROOT=$(mktemp -d /tmp/intelrouter-ci-pg.XXXXXX)
PGPORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$PGROOT"
as_pg "$PG_BIN/initdb" -D "$PGROOT/data" -A trust -U postgres >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$PGROOT/data" -l "$PGROOT/log" -w \
  -o "-p $PGPORT -k $PGROOT -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
trap 'as_pg "$PG_BIN/pg_ctl" -D "$PGROOT/data" -m fast -w stop >/dev/null; rm -rf "$PGROOT"' EXIT
INTELROUTER_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:$PGPORT/postgres" \
  "$PY" -m pytest -p no:cacheprovider "$@"
