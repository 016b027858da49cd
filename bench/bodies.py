"""Oversize request bodies against the web role: how much of them the server reads and
what they cost its memory, before an answer.

The Procfile's web role (`python -m dexsite.serve`) is started on the bench database
(from this tree, or --server-root's: an A/B against the code before, e.g.
``git archive 8953097 | tar -x -C /tmp/before``). One client then sends to
``POST /api/v1/auth/token``, unauthenticated:

* ``chunked``: a chunked body of --size MB, 64 KiB chunks, stopping as soon as the
  server answers;
* ``length``: a body announced with ``Content-Length: --size MB``, sent whole unless the
  server answers first.

Reported per upload: what was sent before the answer, the answer's status, the time to
it, and the web process's resident memory before and at its peak (VmHWM: the peak of
its life, so each upload runs against a fresh server).

Usage::

    python bench/bodies.py [--size 1000] [--server-root DIR]

The database is ``$BENCH_DATABASE_URL`` (default
postgres://postgres@127.0.0.1:5432/dexsite_bench_depth), created and migrated if missing.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import orders as common  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/dexsite_bench_depth"
CHUNK = 0x10000


def memory_kib(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        return {
            k: int(v.split()[0])
            for k, v in (line.split(":", 1) for line in f)
            if k in ("VmRSS", "VmHWM")
        }


def upload(port: int, how: str, size: int) -> dict:
    head = [
        "POST /api/v1/auth/token HTTP/1.1",
        f"Host: {common.HOST}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked" if how == "chunked" else f"Content-Length: {size}",
    ]
    piece = b" " * CHUNK
    frame = b"%x\r\n" % CHUNK + piece + b"\r\n" if how == "chunked" else piece
    sent = 0
    t0 = time.perf_counter()
    with socket.create_connection((common.HOST, port), timeout=300) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            while sent < size and not select.select([sock], [], [], 0)[0]:
                sock.sendall(frame)
                sent += CHUNK
            if sent >= size and how == "chunked":
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed on us: its answer, if any, is read below
        status = b""
        try:
            status = sock.recv(65536).partition(b"\r\n")[0]
        except OSError as e:
            status = repr(e).encode()
    return {
        "sent_mb": sent / 1e6,
        "status": status.decode(errors="replace"),
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=1000, help="MB")
    p.add_argument("--server-root", type=Path, default=ROOT)
    args = p.parse_args(argv)
    db_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    common.ensure_database(db_url)
    common.migrate_subprocess(db_url)
    out_dir = Path(tempfile.mkdtemp(prefix="bench-bodies-"))
    for how in ("chunked", "length"):
        saved, common.ROOT = common.ROOT, args.server_root
        try:
            server = common.Server("web", db_url, out_dir)
        finally:
            common.ROOT = saved
        try:
            server.wait_ready()
            before = memory_kib(server.proc.pid)
            result = upload(server.port, how, args.size * 10**6)
            # The answer may come before the server has let go of what it read.
            time.sleep(1)
            after = memory_kib(server.proc.pid)
        finally:
            server.stop()
        common.log(
            f"{args.server_root} {how} {args.size} MB: sent {result['sent_mb']:.1f} MB, "
            f"{result['status']} after {result['seconds']:.2f} s; RSS {before['VmRSS'] / 1024:.0f}"
            f" MiB before, peak {after['VmHWM'] / 1024:.0f} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
