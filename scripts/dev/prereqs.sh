#!/usr/bin/env bash
# Check, in the first seconds, everything the README's commands need from the machine, and
# print the one command that installs what is missing (Debian/Ubuntu package names).
#
#   scripts/dev/prereqs.sh quickstart   # build + Kafka + ClickHouse + samples
#   scripts/dev/prereqs.sh test         # the same, and DCMTK (read-back test)
#
# Exit 0 when everything is there; 1 (with the install command) otherwise. With
# DP_INSTALL_PREREQS=1 and root, it runs that command itself.
set -euo pipefail

what="${1:-quickstart}"
broker="${DP_BROKER:-kafka}"
missing=() # Debian packages
have() { command -v "$1" >/dev/null 2>&1; }

have cargo || {
  echo "prereqs: cargo is not installed: install Rust from https://rustup.rs (rustup, stable)" >&2
  exit 1
}
# rdkafka's bundled librdkafka and the JPEG-LS / JPEG 2000 codecs build from source.
for cmd in cc g++ make perl; do have "$cmd" || missing+=(build-essential); done
have cmake || missing+=(cmake)
have curl || missing+=(curl)
have python3 || missing+=(python3)
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
if [ "$broker" = kafka ]; then
  # Apache Kafka runs on a JDK >= 17 and is fetched from Maven Central with Maven.
  if have java; then
    v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
    [ -n "$v" ] && [ "$v" -ge 17 ] || missing+=(openjdk-17-jdk-headless)
  else
    missing+=(openjdk-17-jdk-headless)
  fi
  have mvn || missing+=(maven)
fi
if [ "$what" = test ]; then
  have dcmconv || missing+=(dcmtk)
fi

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
cmd="apt-get install -y ${missing[*]}"
if [ "${DP_INSTALL_PREREQS:-0}" = 1 ] && [ "$(id -u)" = 0 ]; then
  echo "prereqs: installing ${missing[*]}" >&2
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo "
echo "prereqs: missing ${missing[*]}. Install with:" >&2
echo "  ${sudo}${cmd}" >&2
echo "(or run with DP_INSTALL_PREREQS=1 as root to install them)" >&2
exit 1
