#!/usr/bin/env bash
# Provide PostgreSQL and MariaDB on 127.0.0.1 for Berth's SQL store tests, then print the
# environment the tests read:
#
#   eval "$(hack/sql-test-env.sh)"     # exports BERTH_TEST_POSTGRES_DSN and BERTH_TEST_MYSQL_DSN
#   hack/sql-test-env.sh -- cargo test -p berth-store-sql   # runs a command with them set
#
# For each server: if it answers, use it; if it is installed but stopped, start it
# (pg_ctlcluster / start-stop-daemon); if it is missing, install it with apt-get and initialise
# it (trust authentication for 127.0.0.1, a `test` database). Only `export …` lines go to
# stdout; progress goes to stderr. Exits non-zero with a message naming the server that could
# not be provided.
#
# Environment: BERTH_SQL_PG_PORT (5432), BERTH_SQL_PG_CLUSTER (main), BERTH_SQL_MYSQL_PORT (3306).
set -euo pipefail

PG_PORT=${BERTH_SQL_PG_PORT:-5432}
PG_CLUSTER=${BERTH_SQL_PG_CLUSTER:-main}
MY_PORT=${BERTH_SQL_MYSQL_PORT:-3306}
CMD=()
while [ $# -gt 0 ]; do
  case $1 in
    --) shift; CMD=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

say() { echo "[sql-test-env] $*" >&2; }
die() { echo "sql-test-env: $*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  say "installing $* with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq >&2 || die "apt-get update failed while installing $*"
  as_root apt-get install -y -qq "$@" >&2 || die "apt-get install $* failed"
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2; shift 2
  for _ in $(seq 1 $((secs * 2))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  return 1
}

# === PostgreSQL ===

pg_answers() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d test -Atqc 'SELECT 1' >/dev/null 2>&1; }

pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n1; }

pg_start() {
  local v; v=$(pg_version)
  [ -n "$v" ] || die "PostgreSQL is installed but has no cluster under /etc/postgresql"
  say "starting PostgreSQL $v cluster $PG_CLUSTER"
  as_root pg_ctlcluster --skip-systemctl-redirect "$v" "$PG_CLUSTER" start >&2 2>&1 || true
  wait_for 30 "PostgreSQL" pg_isready -h 127.0.0.1 -p "$PG_PORT" \
    || die "PostgreSQL $v did not start on 127.0.0.1:$PG_PORT (see /var/log/postgresql/)"
}

pg_initialise() {
  local v hba; v=$(pg_version)
  hba=/etc/postgresql/$v/$PG_CLUSTER/pg_hba.conf
  if ! grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    say "allowing trust authentication for 127.0.0.1 in $hba"
    as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$v" "$PG_CLUSTER" reload >&2 2>&1 || true
    sleep 1
  fi
  if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atqc \
      "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null | grep -q 1; then
    say "creating database test"
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc 'CREATE DATABASE test' >&2 \
      || die "could not create the PostgreSQL database test"
  fi
}

provide_postgres() {
  if pg_answers; then say "PostgreSQL answers on 127.0.0.1:$PG_PORT"; return; fi
  if ! command -v psql >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    apt_install postgresql postgresql-client
  fi
  command -v pg_isready >/dev/null || die "pg_isready missing after installing PostgreSQL"
  if ! pg_isready -h 127.0.0.1 -p "$PG_PORT" >/dev/null 2>&1; then pg_start; fi
  pg_initialise
  pg_answers || die "PostgreSQL on 127.0.0.1:$PG_PORT does not accept postgres@test with trust auth"
}

# === MariaDB ===

my_answers() { mysql -h 127.0.0.1 -P "$MY_PORT" -uroot -e 'SELECT 1' test >/dev/null 2>&1; }
my_up() { mysqladmin -h 127.0.0.1 -P "$MY_PORT" -uroot --connect-timeout=2 ping 2>&1 | grep -q alive \
  || mysqladmin --connect-timeout=2 ping 2>&1 | grep -qE 'alive|denied'; }

my_start() {
  as_root mkdir -p /run/mysqld
  as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
  if [ ! -d /var/lib/mysql/mysql ]; then
    say "initialising the MariaDB data directory"
    as_root mariadb-install-db --user=mysql --datadir=/var/lib/mysql >&2 2>&1 \
      || as_root mysql_install_db --user=mysql --datadir=/var/lib/mysql >&2 2>&1 \
      || die "could not initialise /var/lib/mysql"
  fi
  say "starting MariaDB"
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql >&2
  wait_for 30 "MariaDB" my_up || die "MariaDB did not start (see /var/log/mysql/ or journal)"
}

my_initialise() {
  # Over the local socket root authenticates as the unix user root.
  local sql="CREATE DATABASE IF NOT EXISTS test;
    CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
    GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
    FLUSH PRIVILEGES;"
  if mysql -h 127.0.0.1 -P "$MY_PORT" -uroot -e 'SELECT 1' >/dev/null 2>&1; then
    mysql -h 127.0.0.1 -P "$MY_PORT" -uroot -e "CREATE DATABASE IF NOT EXISTS test" >&2
  else
    say "granting root@127.0.0.1 without a password and creating database test"
    as_root mysql -uroot -e "$sql" >&2 || die "could not initialise MariaDB over its local socket"
  fi
}

provide_mysql() {
  if my_answers; then say "MariaDB answers on 127.0.0.1:$MY_PORT"; return; fi
  if [ ! -x /usr/sbin/mariadbd ] || ! command -v mysql >/dev/null; then
    apt_install mariadb-server mariadb-client
  fi
  if ! my_up; then my_start; fi
  my_initialise
  my_answers || die "MariaDB on 127.0.0.1:$MY_PORT does not accept root without a password on database test"
}

provide_postgres
provide_mysql

PG_DSN="postgres://postgres@127.0.0.1:$PG_PORT/test"
MY_DSN="mysql://root@127.0.0.1:$MY_PORT/test"
if [ ${#CMD[@]} -gt 0 ]; then
  export BERTH_TEST_POSTGRES_DSN=$PG_DSN BERTH_TEST_MYSQL_DSN=$MY_DSN
  exec "${CMD[@]}"
fi
echo "export BERTH_TEST_POSTGRES_DSN=$PG_DSN"
echo "export BERTH_TEST_MYSQL_DSN=$MY_DSN"
