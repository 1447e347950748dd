"""Is a Kafka broker ready? One Metadata request (v1) over a plain socket.

    python3 scripts/dev/kafka/probe.py HOST PORT [--brokers N]

Exit 0 when the broker answers with at least N live brokers (default 1) and a controller,
1 otherwise (refused, timed out, not ready yet). Prints one line saying which. Used by
scripts/dev/services.sh to wait for the broker it started; a tool, not part of the product.
"""

import argparse
import socket
import struct
import sys


def metadata(host: str, port: int, timeout: float):
    client = b"dp-probe"
    # Request header v1 (api key 3 = Metadata, version 1, correlation id, client id), then
    # an empty topic array: brokers and controller only.
    body = struct.pack(">hhih", 3, 1, 1, len(client)) + client + struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        data = recv_exact(s, size)
    pos = 4  # correlation id
    (n,) = struct.unpack_from(">i", data, pos)
    pos += 4
    brokers = []
    for _ in range(n):
        node, hlen = struct.unpack_from(">ih", data, pos)
        pos += 6
        bhost = data[pos : pos + hlen].decode()
        pos += hlen
        (bport, rlen) = struct.unpack_from(">ih", data, pos)
        pos += 6 + max(rlen, 0)
        brokers.append((node, bhost, bport))
    (controller,) = struct.unpack_from(">i", data, pos)
    return brokers, controller


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        buf += chunk
    return buf


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--brokers", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=2.0)
    a = ap.parse_args()
    try:
        brokers, controller = metadata(a.host, a.port, a.timeout)
    except (OSError, ConnectionError, struct.error) as e:
        print(f"{a.host}:{a.port}: not answering ({e})")
        return 1
    if len(brokers) < a.brokers or controller < 0:
        print(f"{a.host}:{a.port}: {len(brokers)} broker(s), controller {controller}: not ready")
        return 1
    print(f"{a.host}:{a.port}: {len(brokers)} broker(s), controller {controller}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
