"""Run a ClickHouse 26.9 server from PyPI's chdb-core (ClickHouse's own engine, embedded).

chdb has no server binary. Its local engine can open real HTTP/TCP listeners with
`SYSTEM START LISTEN HTTP/TCP`, but they stay up only while a query runs, so this launcher runs
one endless keep-alive query. The listen address and ports are read only from ./config.xml in
the working directory, so the launcher writes that file into the data directory and chdirs
there. No authentication: keep it on loopback.

Started by scripts/dev/services.sh (which passes --host / --http-port / --tcp-port; by hand
they default to DP_CLICKHOUSE_HOST / DP_CLICKHOUSE_HTTP_PORT / DP_CLICKHOUSE_TCP_PORT):

    .var/venv/bin/python scripts/dev/clickhouse_server.py --data-dir .var/clickhouse \
        --pid-file .var/run/clickhouse.pid

Stopping: SIGTERM or SIGINT cancels the keep-alive query (KILL QUERY over the server's own HTTP
port), the engine returns normally and the process exits 0 in about a second. A Python signal
handler would never run here (the main thread sits inside the blocking C++ call), so the
signals are blocked in every thread and received by a helper thread with sigwait() instead.
Exit status: 0 after a requested stop, 1 if the server could not start or stopped on its own
(for example: a port already in use).
"""

import argparse
import os
import signal
import sys
import threading
import time
import urllib.request
from xml.sax.saxutils import escape

# The keep-alive query. The KILL below finds it by this exact prefix (the KILL statement itself
# starts with "KILL", so it never matches itself).
KEEPALIVE = "SELECT sleepEachRow(1) FROM system.numbers"
SERVE = (
    "SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; "
    f"{KEEPALIVE} SETTINGS max_block_size=1 FORMAT Null"
)


def log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} clickhouse_server: {msg}", flush=True)


def port(value: str) -> int:
    p = int(value)
    if not 0 < p < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value}")
    return p


def write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def remove_pid_file(path: str) -> None:
    """Remove the pid file if it still names this process (never someone else's)."""
    try:
        with open(path) as f:
            if f.read().strip() == str(os.getpid()):
                os.remove(path)
    except OSError:
        pass


def main() -> int:
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True, help="config.xml and the database (db/) live here")
    ap.add_argument("--pid-file", required=True)
    ap.add_argument("--host", default=env("DP_CLICKHOUSE_HOST", "127.0.0.1"))
    ap.add_argument("--http-port", type=port, default=env("DP_CLICKHOUSE_HTTP_PORT", "8123"))
    ap.add_argument("--tcp-port", type=port, default=env("DP_CLICKHOUSE_TCP_PORT", "9000"))
    args = ap.parse_args()

    data_dir = os.path.abspath(args.data_dir)
    pid_file = os.path.abspath(args.pid_file)
    os.makedirs(data_dir, exist_ok=True)

    # 1. pid file first, so the caller knows whom to stop even while the engine starts.
    write_atomically(pid_file, f"{os.getpid()}\n")
    # 2. The engine takes listen address and ports only from ./config.xml.
    write_atomically(
        os.path.join(data_dir, "config.xml"),
        "<clickhouse>\n"
        f"  <listen_host>{escape(args.host)}</listen_host>\n"
        f"  <http_port>{args.http_port}</http_port>\n"
        f"  <tcp_port>{args.tcp_port}</tcp_port>\n"
        "  <timezone>UTC</timezone>\n"
        "</clickhouse>\n",
    )
    # 3. ... and reads it from the working directory.
    os.chdir(data_dir)

    # 4. Stop requests. Block the signals before chdb starts any thread: every thread inherits
    # the mask, so the signals stay pending until the helper picks them up with sigwait().
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    stopping = threading.Event()
    # Connect to the listener we opened; a wildcard listen address is reachable on loopback.
    connect_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(args.host, args.host)
    if ":" in connect_host:
        connect_host = f"[{connect_host}]"
    kill_url = f"http://{connect_host}:{args.http_port}/"

    def stopper() -> None:
        sig = signal.sigwait(stop_signals)
        stopping.set()
        log(f"{signal.Signals(sig).name} received: cancelling the keep-alive query")
        body = f"KILL QUERY WHERE startsWith(query, '{KEEPALIVE}') SYNC FORMAT Null".encode()
        try:
            urllib.request.urlopen(kill_url, data=body, timeout=10).read()
        except Exception as e:  # not listening yet, or wedged: stop the hard way
            log(f"could not cancel the query ({e}); exiting now")
            remove_pid_file(pid_file)
            os._exit(0)
        # The main thread now returns from the engine and exits. If it does not, exit anyway.
        time.sleep(10)
        log("engine did not return 10 s after the cancel; exiting now")
        remove_pid_file(pid_file)
        os._exit(0)

    threading.Thread(target=stopper, name="stopper", daemon=True).start()

    from chdb import _chdb  # imported late: it is large

    log(
        f"ClickHouse (chdb) serving http://{args.host}:{args.http_port} and tcp {args.tcp_port}; "
        f"data {data_dir}/db; pid {os.getpid()}"
    )
    # 5. Blocks for as long as the server runs. A cancelled query is reported by the engine on
    # stderr ("Query was cancelled") and returns normally.
    error = None
    try:
        _chdb.query(SERVE, "CSV", path=os.path.join(data_dir, "db"))
    except Exception as e:  # e.g. a port already in use
        error = e
    remove_pid_file(pid_file)
    if stopping.is_set():
        log("stopped")
        return 0
    log(f"server ended without a stop request: {error or 'see the engine output above'}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
