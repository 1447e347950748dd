#!/usr/bin/env bash
# One Apache Kafka node (KRaft: broker and controller in one JVM), from Maven Central.
#
#   scripts/dev/kafka/node.sh lib                print the directory holding the broker's jars,
#                                            fetching them once (pinned by scripts/dev/kafka/pom.xml)
#   scripts/dev/kafka/node.sh run DIR [options]  write DIR/server.properties, format DIR/data on
#                                            first use, then exec the broker (stays in the
#                                            foreground, logs to stdout; its pid is this pid)
#
# `run` options (defaults for a single dev node):
#   --node-id N            1
#   --host H               127.0.0.1   listeners bind and advertise H
#   --port P               9092        the client listener (PLAINTEXT)
#   --controller-port C    9093        the KRaft controller listener
#   --voters SPEC          N@H:C       controller quorum, e.g. 1@127.0.0.1:9093,2@127.0.0.1:9193
#   --cluster-id ID        generated once per DIR (every node of a cluster needs the same one)
#   --replication R        1           replication of internal topics and created topics;
#                                      min.insync.replicas becomes 2 when R >= 3
#   --heap SIZE            768m        JVM heap (-Xms256m -Xmx SIZE)
#
# Used by scripts/dev/services.sh (the dev broker under .var/kafka) and by the fault tests
# (private nodes and a three-node cluster in temporary directories). Every setting that
# differs from Kafka's default is explained where it is set, below.
#
# Environment: DP_TOOLS_DIR (~/.cache/dicom-pipeline/tools) holds the jars, JAVA (java),
# MVN (mvn).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS="${DP_TOOLS_DIR:-$HOME/.cache/dicom-pipeline/tools}"
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")
LIB="$TOOLS/kafka-$KAFKA_VERSION/lib"
JAVA="${DP_JAVA:-java}"
MVN="${DP_MVN:-mvn}"

say() { printf '[kafka] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# The jars, fetched once into $LIB (under a lock: tests and services.sh may ask at once).
# A fetch that stops half-way leaves no $LIB/.complete and is redone.
ensure_lib() {
  [ -f "$LIB/.complete" ] && return 0
  mkdir -p "$TOOLS"
  exec 7>"$TOOLS/.kafka-$KAFKA_VERSION.lock"
  flock 7
  if [ ! -f "$LIB/.complete" ]; then
    command -v "$MVN" >/dev/null || die "mvn not found: Apache Kafka $KAFKA_VERSION is fetched from Maven Central with Maven (apt-get install maven)"
    command -v "$JAVA" >/dev/null || die "java not found: Apache Kafka needs a JDK 17 or newer (apt-get install openjdk-17-jdk-headless)"
    local t0 tmp
    t0=$(date +%s)
    tmp="$LIB.tmp.$$"
    rm -rf "$tmp"
    say "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $LIB (one-time, ~45 MB)"
    if ! "$MVN" -B -Dstyle.color=never -f "$HERE/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$tmp" -DincludeScope=runtime >"$TOOLS/kafka-fetch.log" 2>&1 </dev/null; then
      grep -E 'ERROR|BUILD' "$TOOLS/kafka-fetch.log" | tail -n 20 >&2
      die "fetching Kafka's jars failed (mvn dependency:copy-dependencies on $HERE/pom.xml; log: $TOOLS/kafka-fetch.log)"
    fi
    rm -rf "$LIB"
    mv "$tmp" "$LIB"
    touch "$LIB/.complete"
    say "fetched in $(( $(date +%s) - t0 )) s"
  fi
  exec 7>&-
}

java_major() {
  "$JAVA" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1
}

run_node() {
  local dir=$1
  shift
  local node_id=1 host=127.0.0.1 port=9092 cport=9093 voters="" cluster_id="" replication=1 heap=768m
  while [ $# -gt 0 ]; do
    case "$1" in
      --node-id) node_id=$2 ;;
      --host) host=$2 ;;
      --port) port=$2 ;;
      --controller-port) cport=$2 ;;
      --voters) voters=$2 ;;
      --cluster-id) cluster_id=$2 ;;
      --replication) replication=$2 ;;
      --heap) heap=$2 ;;
      *) die "unknown option '$1'" ;;
    esac
    shift 2
  done
  [ -n "$voters" ] || voters="$node_id@$host:$cport"
  local v
  v=$(java_major)
  [ -n "$v" ] && [ "$v" -ge 17 ] || die "Apache Kafka $KAFKA_VERSION needs Java 17 or newer; '$JAVA -version' says ${v:-nothing}"
  ensure_lib
  mkdir -p "$dir/data"
  dir="$(cd "$dir" && pwd)"
  if [ -z "$cluster_id" ]; then
    [ -s "$dir/cluster.id" ] ||
      head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$dir/cluster.id"
    cluster_id=$(cat "$dir/cluster.id")
  fi
  local min_isr=1
  [ "$replication" -ge 3 ] && min_isr=2
  cat >"$dir/server.properties" <<EOF
# Written by scripts/dev/kafka/node.sh at every start; edit the script, not this file.
process.roles=broker,controller
node.id=$node_id
controller.quorum.voters=$voters
listeners=PLAINTEXT://$host:$port,CONTROLLER://$host:$cport
advertised.listeners=PLAINTEXT://$host:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data

# Replication: one node keeps one copy of everything; a three-node cluster keeps three and
# acknowledges acks=all writes once two have them.
offsets.topic.replication.factor=$replication
transaction.state.log.replication.factor=$replication
transaction.state.log.min.isr=$min_isr
default.replication.factor=$replication
min.insync.replicas=$min_isr

# A new consumer group waits group.initial.rebalance.delay.ms (3 s) for more members before
# its first assignment. On a dev box every test and every run is a new group: no wait.
group.initial.rebalance.delay.ms=0
# The consumer offsets and transaction state topics are created on first use with 50
# partitions each; 8 is plenty for one machine and makes the first group start faster.
offsets.topic.num.partitions=8
transaction.state.log.num.partitions=8
# dicom-pipeline creates its topics itself (schema / run); a typo in a topic name must fail
# loudly, as it does on a hospital's broker, not create an empty topic.
auto.create.topics.enable=false
# KIP-848 groups (group.protocol=consumer): the broker owns the session timeout and the
# heartbeat interval (clients cannot set them). Kafka's defaults are 45 s and 5 s, with the
# same values as lower bounds; a dev box uses the classic groups' test values (6 s session,
# 500 ms heartbeat) so both protocols are measured alike. Production brokers keep theirs.
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=500
# Retention: a dev box fills its disk with benchmark topics otherwise (Kafka keeps 7 days).
log.retention.hours=24
log.segment.bytes=268435456
# Two cores: Kafka's 3 network and 8 I/O threads only contend with each other here.
num.network.threads=2
num.io.threads=4
EOF
  if [ ! -f "$dir/data/meta.properties" ]; then
    "$JAVA" -cp "$LIB/*" -Dlog4j2.configurationFile="$HERE/log4j2.yaml" \
      kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" >&2 ||
      die "formatting $dir/data failed"
  fi
  # The JVM flags of Kafka's own kafka-server-start.sh (G1, short pauses), a small heap, and
  # exit on OOM rather than limp on. exec: the caller's pid is the broker's (kill -9 works).
  exec "$JAVA" -Xms256m "-Xmx$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$HERE/log4j2.yaml" -Dkafka.logs.dir="$dir" \
    -cp "$LIB/*" kafka.Kafka "$dir/server.properties"
}

case "${1:-}" in
  lib)
    ensure_lib
    echo "$LIB"
    ;;
  run)
    [ $# -ge 2 ] || die "usage: $0 run DIR [options]"
    shift
    run_node "$@"
    ;;
  *)
    echo "usage: $0 lib | run DIR [--node-id N] [--host H] [--port P] [--controller-port C] [--voters SPEC] [--cluster-id ID] [--replication R] [--heap SIZE]" >&2
    exit 2
    ;;
esac
