#!/usr/bin/env bash
# Install (pinned) and run the two real services dicom-pipeline needs, all state under one
# git-ignored folder ($DP_VAR_DIR, default .var/):
#   broker      tansu 0.6.0 (crates.io), sqlite storage in .var/tansu      KAFKA_HOST:KAFKA_PORT
#   clickhouse  ClickHouse 26.9 from PyPI chdb-core==26.9.0, data in .var/clickhouse
#                                                  CLICKHOUSE_HOST:CLICKHOUSE_HTTP_PORT (+ TCP port)
# Usage: scripts/services.sh up|down|status|restart [broker|clickhouse]
# Pid files: .var/run/*.pid, logs: .var/log/*.log. `down` stops exactly those pids.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VAR="${DP_VAR_DIR:-$ROOT/.var}"
TOOLS="${DP_TOOLS_DIR:-$HOME/.cache/dicom-pipeline/tools}"
TANSU_VERSION=0.6.0
CHDB_VERSION=26.9.0
TANSU_ROOT="$TOOLS/tansu-$TANSU_VERSION"
TANSU="$TANSU_ROOT/bin/tansu"

KAFKA_HOST="${KAFKA_HOST:-127.0.0.1}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
TANSU_STORAGE="${TANSU_STORAGE:-sqlite}"
CLICKHOUSE_HOST="${CLICKHOUSE_HOST:-127.0.0.1}"
CLICKHOUSE_HTTP_PORT="${CLICKHOUSE_HTTP_PORT:-8123}"
CLICKHOUSE_TCP_PORT="${CLICKHOUSE_TCP_PORT:-9000}"

RUN="$VAR/run"
LOG="$VAR/log"
VENV="$VAR/venv"
mkdir -p "$RUN" "$LOG"

say() { printf '[services] %s\n' "$*" >&2; }

pid_alive() { # pidfile
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# ---------------------------------------------------------------- broker (tansu)
install_tansu() {
  [ -x "$TANSU" ] && return 0
  mkdir -p "$TOOLS"
  # One build at a time, even across concurrent `up`s.
  exec 9>"$TOOLS/.tansu.lock"
  flock 9
  if [ ! -x "$TANSU" ]; then
    say "building tansu $TANSU_VERSION from crates.io (once; 10-20 min on 2 cores) -> $TANSU_ROOT"
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql \
      --root "$TANSU_ROOT" >"$LOG/tansu-build.log" 2>&1 || {
        tail -n 30 "$LOG/tansu-build.log" >&2
        say "tansu build failed (full log: $LOG/tansu-build.log)"
        return 1
      }
  fi
  flock -u 9
}

broker_ready() {
  "$TANSU" topic list --broker "tcp://$KAFKA_HOST:$KAFKA_PORT" >/dev/null 2>&1
}

broker_up() {
  local pidfile="$RUN/tansu.pid"
  if pid_alive "$pidfile" && broker_ready; then
    say "broker already running (pid $(cat "$pidfile"))"
    return 0
  fi
  rm -f "$pidfile"
  install_tansu
  local storage
  case "$TANSU_STORAGE" in
    sqlite) storage="sqlite://tansu.db" ;;   # relative to the working directory (below)
    memory) storage="memory://tansu/" ;;
    *) say "TANSU_STORAGE must be sqlite or memory, not '$TANSU_STORAGE'"; return 1 ;;
  esac
  mkdir -p "$VAR/tansu"
  (
    cd "$VAR/tansu"
    # sqlite paths are taken relative to the working directory, so start from the data dir.
    setsid nohup "$TANSU" broker \
      --listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
      --advertised-listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
      --storage-engine "$storage" >>"$LOG/tansu.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
  )
  wait_for "broker" broker_ready "$pidfile" "$LOG/tansu.log" 30
}

# ---------------------------------------------------------------- ClickHouse (chdb-core)
install_chdb() {
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$CHDB_VERSION" <<'PY' 2>/dev/null
import sys, importlib.metadata as m
sys.exit(0 if m.version("chdb-core") == sys.argv[1] else 1)
PY
  then
    return 0
  fi
  say "installing chdb-core==$CHDB_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "chdb-core==$CHDB_VERSION"
}

clickhouse_ready() {
  [ "$(curl -s --max-time 2 "http://$CLICKHOUSE_HOST:$CLICKHOUSE_HTTP_PORT/ping" 2>/dev/null)" = "Ok." ]
}

clickhouse_up() {
  local pidfile="$RUN/clickhouse.pid"
  if pid_alive "$pidfile" && clickhouse_ready; then
    say "clickhouse already running (pid $(cat "$pidfile"))"
    return 0
  fi
  rm -f "$pidfile"
  install_chdb
  mkdir -p "$VAR/clickhouse"
  CLICKHOUSE_HOST="$CLICKHOUSE_HOST" CLICKHOUSE_HTTP_PORT="$CLICKHOUSE_HTTP_PORT" \
  CLICKHOUSE_TCP_PORT="$CLICKHOUSE_TCP_PORT" \
    setsid nohup "$VENV/bin/python" "$ROOT/scripts/clickhouse_server.py" \
      --data-dir "$VAR/clickhouse" --pid-file "$pidfile" >>"$LOG/clickhouse.log" 2>&1 </dev/null &
  # The launcher writes its own pid file; wait for it before polling readiness.
  for _ in $(seq 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
  [ -s "$pidfile" ] || echo $! >"$pidfile"
  wait_for "clickhouse" clickhouse_ready "$pidfile" "$LOG/clickhouse.log" 60
}

# ---------------------------------------------------------------- common
wait_for() { # name ready_fn pidfile log seconds
  local name=$1 ready=$2 pidfile=$3 log=$4 secs=$5 i
  for i in $(seq $((secs * 10))); do
    if "$ready"; then
      say "$name ready (pid $(cat "$pidfile"), $(awk "BEGIN{print $i/10}") s)"
      return 0
    fi
    if ! pid_alive "$pidfile"; then
      say "$name exited during start; last log lines:"
      tail -n 30 "$log" >&2 || true
      rm -f "$pidfile"
      return 1
    fi
    sleep 0.1
  done
  say "$name not ready after ${secs}s; last log lines:"
  tail -n 30 "$log" >&2 || true
  return 1
}

stop() { # name pidfile
  local name=$1 pidfile=$2 pid i
  if [ ! -f "$pidfile" ]; then
    say "$name not running (no pid file)"
    return 0
  fi
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name (pid $pid) ignored SIGTERM for 10 s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    say "$name stopped (pid $pid)"
  else
    say "$name: stale pid file (pid $pid not running)"
  fi
  rm -f "$pidfile"
}

status_one() { # name pidfile ready_fn
  local name=$1 pidfile=$2 ready=$3 state
  if pid_alive "$pidfile"; then state="running (pid $(cat "$pidfile"))"; else state="stopped"; fi
  if "$ready"; then echo "$name: $state, answering"; return 0; fi
  echo "$name: $state, not answering"
  return 1
}

broker_status() { [ -x "$TANSU" ] || { echo "broker: not installed"; return 1; }; status_one broker "$RUN/tansu.pid" broker_ready; }
clickhouse_status() { status_one clickhouse "$RUN/clickhouse.pid" clickhouse_ready; }

cmd="${1:-}"
which="${2:-all}"
case "$which" in all|broker|clickhouse) ;; *) echo "unknown service '$which' (broker|clickhouse)" >&2; exit 2 ;; esac
want() { [ "$which" = all ] || [ "$which" = "$1" ]; }

case "$cmd" in
  up)
    if want broker; then broker_up; fi
    if want clickhouse; then clickhouse_up; fi
    echo "KAFKA_BROKERS=$KAFKA_HOST:$KAFKA_PORT"
    echo "CLICKHOUSE_URL=http://$CLICKHOUSE_HOST:$CLICKHOUSE_HTTP_PORT"
    ;;
  down)
    if want clickhouse; then stop clickhouse "$RUN/clickhouse.pid"; fi
    if want broker; then stop broker "$RUN/tansu.pid"; fi
    ;;
  restart)
    "$0" down "$which"
    "$0" up "$which"
    ;;
  status)
    rc=0
    if want broker; then broker_status || rc=1; fi
    if want clickhouse; then clickhouse_status || rc=1; fi
    exit $rc
    ;;
  *)
    echo "usage: $0 up|down|status|restart [broker|clickhouse]" >&2
    exit 2
    ;;
esac
