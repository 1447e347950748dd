#!/usr/bin/env bash
# Install (pinned) and run the two real services dicom-pipeline needs, without Docker:
#   broker      DP_BROKER=kafka (default): Apache Kafka 4.4.0, KRaft, one node that is both
#               broker and controller; jars fetched once from Maven Central into
#               $DP_TOOLS_DIR by scripts/dev/kafka/node.sh (settings explained there), data in
#               $DP_VAR_DIR/kafka           DP_KAFKA_HOST:DP_KAFKA_PORT (+ DP_KAFKA_CONTROLLER_PORT)
#               DP_BROKER=tansu: tansu 0.6.0 (a Kafka-protocol broker in Rust, for machines
#               without a JVM; built once from crates.io into $DP_TOOLS_DIR, 10-20 min),
#               sqlite storage in $DP_VAR_DIR/tansu                  DP_KAFKA_HOST:DP_KAFKA_PORT
#   clickhouse  ClickHouse 26.9 = PyPI chdb-core==26.9.0 in $DP_VAR_DIR/venv, run by
#               scripts/dev/clickhouse_server.py, data in $DP_VAR_DIR/clickhouse
#                                          DP_CLICKHOUSE_HOST:DP_CLICKHOUSE_HTTP_PORT (+ DP_CLICKHOUSE_TCP_PORT)
#
# Usage: scripts/dev/services.sh up|down|status|restart [broker|clickhouse]   (default: both)
#
#   up       install what is missing, start what is not running, wait until each service
#            answers (broker: a metadata request naming a controller; ClickHouse: GET /ping),
#            then print the client environment (KAFKA_BROKERS=..., CLICKHOUSE_URL=...).
#            Idempotent.
#   down     stop exactly the processes named in the pid files (SIGTERM, SIGKILL after 10 s).
#   status   one line per service; exit 0 only if every selected service answers.
#   tansu-bin print the path of the pinned tansu binary (building it if missing).
#   kafka-lib print the directory of the pinned Kafka jars (fetching them if missing).
#   pid      print the pid of the selected service (one of them), if this script started it
#            and it is running; exit 1 otherwise.
#
# Environment (defaults):
#   DP_VAR_DIR=<repo>/.var   all state: run/*.pid, log/*.log, kafka/, tansu/, clickhouse/, venv/
#   DP_TOOLS_DIR=~/.cache/dicom-pipeline/tools   shared tools (kafka-4.4.0/lib, tansu-0.6.0/bin)
#   DP_BROKER=kafka|tansu
#   DP_KAFKA_HOST=127.0.0.1 DP_KAFKA_PORT=9092 DP_KAFKA_CONTROLLER_PORT=9093
#   DP_TANSU_STORAGE=sqlite|memory
#   DP_CLICKHOUSE_HOST=127.0.0.1 DP_CLICKHOUSE_HTTP_PORT=8123 DP_CLICKHOUSE_TCP_PORT=9000
#   DP_PYTHON=python3        interpreter for the venv
# (every variable: docs/ENVIRONMENT.md)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VAR="${DP_VAR_DIR:-$ROOT/.var}"
TOOLS="${DP_TOOLS_DIR:-$HOME/.cache/dicom-pipeline/tools}"

TANSU_VERSION=0.6.0
TANSU_ROOT="$TOOLS/tansu-$TANSU_VERSION"
TANSU="$TANSU_ROOT/bin/tansu"
CHDB_VERSION=26.9.0

DP_BROKER="${DP_BROKER:-kafka}"
case "$DP_BROKER" in
  kafka | tansu) ;;
  *) printf '[services] DP_BROKER must be kafka or tansu, not %s\n' "$DP_BROKER" >&2; exit 1 ;;
esac
KAFKA_HOST="${DP_KAFKA_HOST:-127.0.0.1}"
KAFKA_PORT="${DP_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${DP_KAFKA_CONTROLLER_PORT:-9093}"
TANSU_STORAGE="${DP_TANSU_STORAGE:-sqlite}"
CLICKHOUSE_HOST="${DP_CLICKHOUSE_HOST:-127.0.0.1}"
CLICKHOUSE_HTTP_PORT="${DP_CLICKHOUSE_HTTP_PORT:-8123}"
CLICKHOUSE_TCP_PORT="${DP_CLICKHOUSE_TCP_PORT:-9000}"
PYTHON="${DP_PYTHON:-python3}"

RUN="$VAR/run"
LOG="$VAR/log"
VENV="$VAR/venv"
BROKER_PID="$RUN/$DP_BROKER.pid"
KAFKA_NODE="$ROOT/scripts/dev/kafka/node.sh"
CLICKHOUSE_PID="$RUN/clickhouse.pid"

say() { printf '[services] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$CLICKHOUSE_HTTP_PORT" "$CLICKHOUSE_TCP_PORT"; do
  if ! [[ "$p" =~ ^[0-9]+$ ]] || [ "$p" -lt 1 ] || [ "$p" -gt 65535 ]; then die "not a TCP port: '$p'"; fi
done

now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- processes, ports, locks

# Print the pid in a pid file if that process is alive *and* is still our service (the command
# line contains $2), so a pid recycled by an unrelated process is never reported or killed.
our_pid() { # pidfile cmdline-needle
  local pid
  [ -f "$1" ] || return 1
  pid=$(tr -dc '0-9' <"$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2" || return 1
  echo "$pid"
}
broker_pid() {
  case "$DP_BROKER" in
    # node.sh formats, then execs the JVM in the same process: its command line names the
    # data directory before and after the exec.
    kafka) our_pid "$BROKER_PID" "$VAR/kafka" ;;
    tansu) our_pid "$BROKER_PID" "tansu broker" ;;
  esac
}
clickhouse_pid() { our_pid "$CLICKHOUSE_PID" "clickhouse_server.py"; }

# Does anything accept TCP connections on host:port?
port_open() { # host port
  # shellcheck disable=SC2016 # $0/$1 are expanded by the inner shell
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# Who listens on a port (best effort, for error messages).
port_owner() { # port
  command -v ss >/dev/null 2>&1 || return 0
  ss -Hltnp "sport = :$1" 2>/dev/null |
    sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1, pid \2/p' | head -n 1
}

# Refuse to start next to a foreign listener. Otherwise the readiness probe could be answered by
# the other process while ours fails: tansu 0.6.0 does not report a taken port properly (its
# listener task panics, the process lingers 0.1-1 s, then exits with status 0).
require_free_port() { # what host port env-var
  if port_open "$2" "$3"; then
    die "$1: $2:$3 is already in use by another process ($(port_owner "$3")); stop it or set $4"
  fi
}

# Run "$@" holding an exclusive lock on $2, through file descriptor $1 (8 or 9: the two
# nesting levels, service lock 9 around install lock 8). Waits for other holders. Not called in
# a conditional context, so `set -e` still applies inside; the lock goes with the fd (on return
# or exit). Children that outlive us get both fds closed (see `spawn`).
with_lock() { # fd lockfile cmd...
  local fd=$1 lockfile=$2
  shift 2
  mkdir -p "$(dirname "$lockfile")"
  eval "exec $fd>\"\$lockfile\""
  flock "$fd"
  "$@"
  eval "exec $fd>&-"
}

# Start a long-running process detached from this script: own session (setsid), immune to
# hangups (nohup), stdin from /dev/null, output appended to a log, lock fds closed. Sets
# SPAWNED_PID. Not a process-group leader here (non-interactive shell), so setsid does not fork
# and $! is the service's own pid.
spawn() { # logfile cmd...
  local logfile=$1
  shift
  setsid nohup "$@" >>"$logfile" 2>&1 </dev/null 8>&- 9>&- &
  SPAWNED_PID=$!
}

# Poll until the service answers, for at most $secs seconds. Fails (printing the end of the
# log) if the process dies first or never answers (then it is stopped: no half-started leftovers).
wait_ready() { # name pidfile pid-fn ready-fn logfile secs
  local name=$1 pidfile=$2 pidfn=$3 ready=$4 logfile=$5 secs=$6 t0
  t0=$(now_ms)
  while :; do
    if ! "$pidfn" >/dev/null; then
      say "$name exited during start-up; last lines of $logfile:"
      tail -n 30 "$logfile" >&2 || true
      rm -f "$pidfile"
      return 1
    fi
    if "$ready"; then
      say "$name ready in $(( $(now_ms) - t0 )) ms (pid $("$pidfn"))"
      return 0
    fi
    if [ $(( $(now_ms) - t0 )) -ge $(( secs * 1000 )) ]; then
      say "$name not answering after ${secs} s; last lines of $logfile:"
      tail -n 30 "$logfile" >&2 || true
      stop_service "$name" "$pidfile" "$pidfn"
      return 1
    fi
    sleep 0.2
  done
}

# SIGTERM, wait up to 10 s, then SIGKILL. Only the pid from the pid file, only if it is ours.
stop_service() { # name pidfile pid-fn
  local name=$1 pidfile=$2 pidfn=$3 pid
  if ! pid=$("$pidfn"); then
    if [ -f "$pidfile" ]; then
      say "$name not running (removing stale pid file: pid $(cat "$pidfile") is not running, or not $name)"
      rm -f "$pidfile"
    else
      say "$name not running"
    fi
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name (pid $pid) still running 10 s after SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$pidfile"
  say "$name stopped (pid $pid)"
}

# If our process runs: keep it when it answers (waiting briefly, it may be starting), restart
# it when it does not. A pid file naming a dead or foreign process is removed.
# Returns 0 if the service is already up, 1 if it must be started.
check_running() { # name pidfile pid-fn ready-fn
  local name=$1 pidfile=$2 pidfn=$3 ready=$4 pid t0
  if pid=$("$pidfn"); then
    t0=$(now_ms)
    while [ $(( $(now_ms) - t0 )) -lt 5000 ] && "$pidfn" >/dev/null; do
      if "$ready"; then
        say "$name already running (pid $pid)"
        return 0
      fi
      sleep 0.2
    done
    say "$name (pid $pid) is not answering: restarting it"
    stop_service "$name" "$pidfile" "$pidfn"
  elif [ -f "$pidfile" ]; then
    say "$name: removing stale pid file (pid $(cat "$pidfile") is not running, or not $name)"
    rm -f "$pidfile"
  fi
  return 1
}

# ---------------------------------------------------------------- broker: tansu

install_tansu() {
  if [ ! -x "$TANSU" ]; then
    # A build started some other way (not under our lock) writes to the same root: wait for it.
    if pgrep -f "cargo install tansu" >/dev/null 2>&1; then
      say "a 'cargo install tansu' is already running; waiting for it to finish"
      while pgrep -f "cargo install tansu" >/dev/null 2>&1; do sleep 5; done
    fi
  fi
  if [ ! -x "$TANSU" ]; then
    command -v cargo >/dev/null || die "tansu is not installed at $TANSU and cargo is not on PATH"
    mkdir -p "$LOG"
    say "building tansu $TANSU_VERSION from crates.io into $TANSU_ROOT"
    say "(one-time: 10-20 min on 2 cores; log: $LOG/tansu-build.log)"
    local t0
    t0=$(now_ms)
    if ! cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql \
        --root "$TANSU_ROOT" >"$LOG/tansu-build.log" 2>&1 </dev/null 8>&- 9>&-; then
      tail -n 30 "$LOG/tansu-build.log" >&2 || true
      die "tansu build failed (full log: $LOG/tansu-build.log)"
    fi
    say "tansu built in $(( ($(now_ms) - t0) / 1000 )) s"
  fi
  # Default features cannot even start (`memory://` needs dynostore); sqlite needs libsql.
  "$TANSU" --help 2>/dev/null | grep -q 'Storage engines:.*dynostore.*libsql' ||
    die "$TANSU lacks the dynostore/libsql features; delete it and rerun to rebuild"
}

# Readiness: a real metadata request (prints the topics as JSON). The port probe first: the
# tansu client keeps retrying a refused connection until the timeout.
tansu_ready() {
  [ -x "$TANSU" ] && port_open "$KAFKA_HOST" "$KAFKA_PORT" &&
    timeout 3 "$TANSU" topic list --broker "tcp://$KAFKA_HOST:$KAFKA_PORT" \
    >/dev/null 2>&1
}

tansu_up() {
  local storage
  case "$TANSU_STORAGE" in
    sqlite) storage="sqlite://tansu.db" ;; # relative to the working directory, see below
    memory) storage="memory://tansu/" ;;
    *) die "DP_TANSU_STORAGE must be sqlite or memory, not '$TANSU_STORAGE'" ;;
  esac
  require_free_port broker "$KAFKA_HOST" "$KAFKA_PORT" DP_KAFKA_PORT
  # One build at a time, even across checkouts sharing $DP_TOOLS_DIR.
  with_lock 8 "$TOOLS/.tansu-$TANSU_VERSION.lock" install_tansu
  mkdir -p "$VAR/tansu"
  say "starting broker on $KAFKA_HOST:$KAFKA_PORT ($storage in $VAR/tansu)"
  # tansu resolves sqlite paths against its working directory (even sqlite:///abs: the leading
  # "/" is dropped), so it runs from the data directory.
  (
    cd "$VAR/tansu"
    NO_COLOR=1 spawn "$LOG/tansu.log" "$TANSU" broker \
      --listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
      --advertised-listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
      --storage-engine "$storage"
    echo "$SPAWNED_PID" >"$BROKER_PID"
  )
  wait_ready broker "$BROKER_PID" broker_pid broker_ready "$LOG/tansu.log" 30
}

# ---------------------------------------------------------------- broker: Apache Kafka

# Readiness: a Metadata request that names a controller (the node has joined its own quorum
# and registered as a broker), from a 60-line protocol probe: no JVM start per poll.
kafka_ready() {
  port_open "$KAFKA_HOST" "$KAFKA_PORT" &&
    "$PYTHON" "$ROOT/scripts/dev/kafka/probe.py" "$KAFKA_HOST" "$KAFKA_PORT" >/dev/null 2>&1
}

kafka_up() {
  require_free_port broker "$KAFKA_HOST" "$KAFKA_PORT" DP_KAFKA_PORT
  require_free_port "broker (controller listener)" "$KAFKA_HOST" "$KAFKA_CONTROLLER_PORT" DP_KAFKA_CONTROLLER_PORT
  # Fetch before starting, so a failed fetch is reported here and not as a start-up failure.
  "$KAFKA_NODE" lib >/dev/null 8>&- 9>&-
  mkdir -p "$VAR/kafka"
  say "starting Apache Kafka on $KAFKA_HOST:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT, data in $VAR/kafka)"
  spawn "$LOG/kafka.log" "$KAFKA_NODE" run "$VAR/kafka" --host "$KAFKA_HOST" \
    --port "$KAFKA_PORT" --controller-port "$KAFKA_CONTROLLER_PORT"
  echo "$SPAWNED_PID" >"$BROKER_PID"
  wait_ready broker "$BROKER_PID" broker_pid broker_ready "$LOG/kafka.log" 90
}

broker_ready() { "${DP_BROKER}_ready"; }

broker_up() {
  check_running broker "$BROKER_PID" broker_pid broker_ready && return 0
  "${DP_BROKER}_up"
}

# ---------------------------------------------------------------- ClickHouse: chdb-core

chdb_installed() {
  [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" -c 'import sys, importlib.metadata as m
sys.exit(m.version("chdb-core") != sys.argv[1])' "$CHDB_VERSION" 2>/dev/null
}

install_chdb() {
  chdb_installed && return 0
  local t0
  t0=$(now_ms)
  say "installing chdb-core==$CHDB_VERSION (ClickHouse 26.9, ~180 MB download) into $VENV"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    "chdb-core==$CHDB_VERSION" 8>&- 9>&-
  chdb_installed || die "chdb-core $CHDB_VERSION not importable from $VENV after install"
  say "chdb-core installed in $(( ($(now_ms) - t0) / 1000 )) s"
}

clickhouse_ready() {
  [ "$(curl -s --max-time 2 "http://$CLICKHOUSE_HOST:$CLICKHOUSE_HTTP_PORT/ping" 2>/dev/null)" = "Ok." ]
}

clickhouse_up() {
  check_running clickhouse "$CLICKHOUSE_PID" clickhouse_pid clickhouse_ready && return 0
  require_free_port clickhouse "$CLICKHOUSE_HOST" "$CLICKHOUSE_HTTP_PORT" DP_CLICKHOUSE_HTTP_PORT
  require_free_port clickhouse "$CLICKHOUSE_HOST" "$CLICKHOUSE_TCP_PORT" DP_CLICKHOUSE_TCP_PORT
  with_lock 8 "$VAR/.venv.lock" install_chdb
  mkdir -p "$VAR/clickhouse"
  say "starting clickhouse on http://$CLICKHOUSE_HOST:$CLICKHOUSE_HTTP_PORT (tcp $CLICKHOUSE_TCP_PORT, data in $VAR/clickhouse)"
  spawn "$LOG/clickhouse.log" "$VENV/bin/python" "$ROOT/scripts/dev/clickhouse_server.py" \
    --data-dir "$VAR/clickhouse" --pid-file "$CLICKHOUSE_PID" --host "$CLICKHOUSE_HOST" \
    --http-port "$CLICKHOUSE_HTTP_PORT" --tcp-port "$CLICKHOUSE_TCP_PORT"
  # The launcher writes the same pid itself; writing it here too closes the gap before it does.
  echo "$SPAWNED_PID" >"$CLICKHOUSE_PID"
  wait_ready clickhouse "$CLICKHOUSE_PID" clickhouse_pid clickhouse_ready "$LOG/clickhouse.log" 60
}

# ---------------------------------------------------------------- status

status_line() { # name pid-fn ready-fn address
  local name=$1 pidfn=$2 ready=$3 addr=$4 pid state
  if pid=$("$pidfn"); then state="running (pid $pid)"; else state="stopped"; fi
  if "$ready"; then
    if [ -n "$pid" ]; then
      echo "$name: $state, answering on $addr"
    else
      echo "$name: $state, but another process answers on $addr"
    fi
    return 0
  fi
  echo "$name: $state, not answering on $addr"
  return 1
}

# ---------------------------------------------------------------- main

cmd="${1:-}"
which="${2:-all}"
case "$which" in
  all | broker | clickhouse) ;;
  *) die "unknown service '$which' (broker|clickhouse)" ;;
esac
want() { [ "$which" = all ] || [ "$which" = "$1" ]; }
mkdir -p "$RUN" "$LOG"

case "$cmd" in
  up)
    if want broker; then with_lock 9 "$RUN/broker.lock" broker_up; fi
    if want clickhouse; then with_lock 9 "$RUN/clickhouse.lock" clickhouse_up; fi
    # What a client (the pipeline, the tests) needs; `eval "$(scripts/dev/services.sh up)"` works.
    if want broker; then
      echo "DP_BROKER=$DP_BROKER"
      echo "KAFKA_BROKERS=$KAFKA_HOST:$KAFKA_PORT"
    fi
    if want clickhouse; then echo "CLICKHOUSE_URL=http://$CLICKHOUSE_HOST:$CLICKHOUSE_HTTP_PORT"; fi
    ;;
  down)
    if want clickhouse; then
      with_lock 9 "$RUN/clickhouse.lock" stop_service clickhouse "$CLICKHOUSE_PID" clickhouse_pid
    fi
    if want broker; then with_lock 9 "$RUN/broker.lock" stop_service broker "$BROKER_PID" broker_pid; fi
    ;;
  restart)
    "$0" down "$which"
    "$0" up "$which"
    ;;
  tansu-bin)
    # Where the pinned broker binary is (installed if missing); fault tests start private
    # brokers from it so they can restart one without disturbing other tests.
    with_lock 8 "$TOOLS/.tansu-$TANSU_VERSION.lock" install_tansu >&2
    echo "$TANSU"
    ;;
  kafka-lib)
    "$KAFKA_NODE" lib
    ;;
  pid)
    case "$which" in
      broker) broker_pid ;;
      clickhouse) clickhouse_pid ;;
      *) die "pid: name one service (broker|clickhouse)" ;;
    esac
    ;;
  status)
    rc=0
    if want broker; then status_line "broker ($DP_BROKER)" broker_pid broker_ready "$KAFKA_HOST:$KAFKA_PORT" || rc=1; fi
    if want clickhouse; then
      status_line clickhouse clickhouse_pid clickhouse_ready \
        "http://$CLICKHOUSE_HOST:$CLICKHOUSE_HTTP_PORT" || rc=1
    fi
    exit "$rc"
    ;;
  *)
    echo "usage: $0 up|down|status|restart [broker|clickhouse] | pid broker|clickhouse | tansu-bin | kafka-lib" >&2
    exit 2
    ;;
esac
