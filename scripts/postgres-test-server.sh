# Starts a private PostgreSQL server for kiln's tests, if it is not running yet, and exports
# KILN_TEST_POSTGRES_URL. Source it: `source scripts/postgres-test-server.sh`. Needs Debian's
# `postgresql` package (.ci/run installs it). The cluster lives in its own directory on its own
# port, so it never touches a system cluster; it trusts connections from 127.0.0.1 only.
KILN_PG_PORT="${KILN_PG_PORT:-55432}"
KILN_PG_DIR="${KILN_PG_DIR:-/tmp/kiln-test-postgres-$KILN_PG_PORT}"
kiln_pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
kiln_as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ ! -f "$KILN_PG_DIR/PG_VERSION" ]; then
  mkdir -p "$KILN_PG_DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres "$KILN_PG_DIR"; fi
  kiln_as_postgres "$kiln_pg_bin/initdb" -D "$KILN_PG_DIR" -U kiln --auth=trust >/dev/null
fi
if ! kiln_as_postgres "$kiln_pg_bin/pg_ctl" -D "$KILN_PG_DIR" status >/dev/null 2>&1; then
  kiln_as_postgres "$kiln_pg_bin/pg_ctl" -D "$KILN_PG_DIR" -l "$KILN_PG_DIR/server.log" -w \
    -o "-p $KILN_PG_PORT -k $KILN_PG_DIR -c listen_addresses=127.0.0.1" start >/dev/null
fi
export KILN_TEST_POSTGRES_URL="postgres://kiln@127.0.0.1:$KILN_PG_PORT/postgres"
echo "PostgreSQL for tests: $KILN_TEST_POSTGRES_URL"
