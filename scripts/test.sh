#!/usr/bin/env bash
# The test command: ruff, then the suite on SQLite (embedded defaults) and on a throwaway PostgreSQL server.
# The two passes run side by side (one per core), each with its own temp dirs; the PostgreSQL pass's output is
# printed when it ends. Extra arguments go to pytest, e.g. `scripts/test.sh -m "not labelstudio"`.
# SEQUENTIAL=1 runs the passes one after the other instead.
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

WORK=$(mktemp -d /tmp/intelrouter-ci.XXXXXX)
PGROOT=$(mktemp -d /tmp/intelrouter-ci-pg.XXXXXX)  # apart from WORK: the server runs as `postgres`
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  [ -f "$PGROOT/data/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGROOT/data" -m fast -w stop >/dev/null
  rm -rf "$WORK" "$PGROOT"
}
trap cleanup EXIT

# one pass: its own pytest temp root and PREFECT_HOME, so the two passes share no files
run_pass() {  # name, then extra environment as VAR=value, then "--", then pytest arguments
  local name=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  mkdir -p "$WORK/$name/prefect"
  env "${envs[@]}" PREFECT_HOME="$WORK/$name/prefect" \
    "$PY" -m pytest -p no:cacheprovider --basetemp="$WORK/$name/tmp" "$@"
}

echo "== PostgreSQL server for the PostgreSQL pass"
[ "$(id -u)" = 0 ] && chown postgres "$PGROOT"
PGPORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg "$PG_BIN/initdb" -D "$PGROOT/data" -A trust -U postgres >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$PGROOT/data" -l "$PGROOT/log" -w \
  -o "-p $PGPORT -k $PGROOT -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
PG_PASS=(run_pass postgres "INTELROUTER_TEST_PG_URL=postgresql+psycopg://postgres@127.0.0.1:$PGPORT/postgres" --)

if [ "${SEQUENTIAL:-0}" = 1 ]; then
  echo "== pass 1 of 2: SQLite"
  run_pass sqlite -- "$@"
  echo "== pass 2 of 2: PostgreSQL"
  "${PG_PASS[@]}" "$@"
  exit 0
fi

echo "== PostgreSQL pass started in the background (log: printed when it ends)"
"${PG_PASS[@]}" "$@" > "$WORK/postgres.log" 2>&1 &
pg_pid=$!
echo "== SQLite pass"
sqlite_rc=0
run_pass sqlite -- "$@" || sqlite_rc=$?
pg_rc=0
wait "$pg_pid" || pg_rc=$?
echo "== PostgreSQL pass"
cat "$WORK/postgres.log"
echo "== SQLite pass exit $sqlite_rc, PostgreSQL pass exit $pg_rc"
[ "$sqlite_rc" = 0 ] && [ "$pg_rc" = 0 ]
