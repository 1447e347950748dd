"""Run a ClickHouse 26.9 server from PyPI's chdb-core (ClickHouse's own engine).

chdb embeds ClickHouse's local engine; `SYSTEM START LISTEN HTTP/TCP` opens real listeners,
which stay up only while a query runs, so this launcher runs one endless query. Listen
address and ports come from ./config.xml in the data directory (the engine reads them only
from there). No authentication: bind to loopback only.
"""

import argparse
import os
import signal
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--pid-file", required=True)
    args = ap.parse_args()

    host = os.environ.get("CLICKHOUSE_HOST", "127.0.0.1")
    http_port = int(os.environ.get("CLICKHOUSE_HTTP_PORT", "8123"))
    tcp_port = int(os.environ.get("CLICKHOUSE_TCP_PORT", "9000"))
    data_dir = os.path.abspath(args.data_dir)
    os.makedirs(data_dir, exist_ok=True)

    with open(args.pid_file, "w") as f:
        f.write(f"{os.getpid()}\n")
    with open(os.path.join(data_dir, "config.xml"), "w") as f:
        f.write(
            "<clickhouse>\n"
            f"  <listen_host>{host}</listen_host>\n"
            f"  <http_port>{http_port}</http_port>\n"
            f"  <tcp_port>{tcp_port}</tcp_port>\n"
            "  <timezone>UTC</timezone>\n"
            "</clickhouse>\n"
        )
    os.chdir(data_dir)

    # SIGTERM: the default action ends the process at once, which is what we want (ClickHouse
    # writes parts atomically, so the data on disk stays consistent). A Python-level handler
    # would never run: the main thread sits inside the blocking C++ query below.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    from chdb import _chdb  # imported late: it is large

    print(f"clickhouse (chdb) listening on {host}:{http_port} (http), {tcp_port} (tcp); data {data_dir}", flush=True)
    _chdb.query(
        "SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; "
        "SELECT sleepEachRow(1) FROM system.numbers SETTINGS max_block_size=1 FORMAT Null",
        "CSV",
        path=os.path.join(data_dir, "db"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
