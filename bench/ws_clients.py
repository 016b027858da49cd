"""WebSocket load clients for bench/ws_fanout.py: one process holding many sockets.

Driven by the orchestrator through JSON lines: commands on stdin, one reply per command
on stdout (plus progress lines; every line has an "event" key). asyncio + ``websockets``,
on uvloop when it is installed.

Commands::

    {"cmd": "open", "n": 2500, "url": "ws://...", "tokens": [...], "greeting": 2}
        open n sockets, at most --concurrency handshakes in flight. A socket is open
        once the handshake succeeded and its first `greeting` messages arrived (the
        exchange's consumer sends "subscribed" once it joined the market group, then
        the depth snapshot; the baseline server sends "subscribed"). Reply "opened".
    {"cmd": "arm", "run": "r1", "count": 400, "warmup": 20}
        record the bench messages of run r1 (ids 0..count-1; the first `warmup` ids are
        counted for delivery but left out of the latency samples).
    {"cmd": "collect", "out": "path", "published": 400}
        write the latency samples to `path` and reply with the counts ("collected").
    {"cmd": "close", "n": 2000}    close n sockets (all when n is absent).
    {"cmd": "count"}    bench messages received so far.
    {"cmd": "rusage"} / {"cmd": "exit"}

Receiving. The clients share a 2-core machine with the server they measure, so their
own cost per message matters: at 5,000 sockets x 20 messages/s they take 100,000
messages/s. ``websockets`` does the handshake, pings and the closing handshake; once a
socket is open (and its greeting read through ``recv()``), complete unfragmented text
frames are parsed here straight from ``data_received`` (server frames are unmasked: a
2-10 byte header and the payload) and every other frame is handed to ``websockets``
unchanged, in order. The receive time of a message is ``time.time()`` when its bytes
reached the process (one reading per ``data_received``), so it does not include the
client's own queueing behind other sockets' messages of the same burst.
``--recv library`` reads with ``async for message in ws`` instead (receive time when
``recv()`` returns), for comparison.

Latency = receive time - ``tus``, the publish time the publisher wrote into the message
(epoch microseconds: the same instant as the message's millisecond ``ts``). One host,
one clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import sys
import time
from array import array

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

BENCH = re.compile(rb'"id":(\d+),.*"bench":"([^"]*)","tus":(\d+)')


def log(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Recorder:
    """Per-message bookkeeping, shared by every socket of the process."""

    def __init__(self) -> None:
        self.arm(None, 0, 0)

    def arm(self, run: str | None, count: int, warmup: int) -> None:
        self.run = run.encode() if run else None
        self.count, self.warmup = count, warmup
        self.lat = array("q")  # microseconds, one per (message, socket), after warm-up
        self.ids = array("i")  # the message id of each sample
        self.got: dict[int, bytearray] = {}  # socket -> one byte per message id
        self.last: dict[int, int] = {}
        self.dups = self.reorders = self.other = self.received = 0
        self.per_second: dict[int, int] = {}
        self.first_rx = self.last_rx = 0.0

    def on_text(self, sock: int, payload: bytes, now: float) -> None:
        m = BENCH.search(payload)
        if m is None or m.group(2) != self.run:
            self.other += 1
            return
        i = int(m.group(1))
        got = self.got.get(sock)
        if got is None:
            got = self.got[sock] = bytearray(self.count)
        if got[i]:
            self.dups += 1
            return
        got[i] = 1
        self.received += 1
        if i < self.last.get(sock, -1):
            self.reorders += 1
        self.last[sock] = i
        sec = int(now)
        self.per_second[sec] = self.per_second.get(sec, 0) + 1
        if not self.first_rx:
            self.first_rx = now
        self.last_rx = now
        if i >= self.warmup:
            self.lat.append(int(now * 1e6) - int(m.group(3)))
            self.ids.append(i)


class FastConnection(ClientConnection):
    """A ClientConnection that, once `fast` is set, parses text frames itself."""

    recorder: Recorder
    index = -1
    fast = False
    rbuf = b""

    def data_received(self, data: bytes) -> None:
        if not self.fast or self.protocol.state is not State.OPEN:
            return super().data_received(data)
        now = time.time()
        buf = self.rbuf + data if self.rbuf else data
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if b1 & 0x80:  # a masked frame from a server is an error: let websockets say so
                self.fast = False
                self.rbuf = b""
                return super().data_received(buf[pos:])
            end = pos + head + length
            if end > n:
                break
            if b0 == 0x81:  # FIN + text
                self.recorder.on_text(self.index, buf[pos + head : end], now)
            else:  # control frames, fragments, binary: websockets' job
                super().data_received(buf[pos:end])
            pos = end
        self.rbuf = buf[pos:] if pos < n else b""


class Fleet:
    def __init__(self, concurrency: int, recv: str) -> None:
        self.concurrency = concurrency
        self.recv = recv
        self.conns: dict[int, FastConnection] = {}
        self.tasks: dict[int, asyncio.Task] = {}
        self.next_index = 0
        self.failures: dict[str, int] = {}
        self.recorder = Recorder()

    def _fail(self, why: str) -> None:
        self.failures[why] = self.failures.get(why, 0) + 1

    async def _open_one(self, idx: int, url: str, headers: dict, greeting: int) -> bool:
        try:
            ws = await websockets.connect(
                url,
                additional_headers=headers,
                compression=None,
                ping_interval=None,
                open_timeout=120,
                close_timeout=3,
                max_size=2**24,
                create_connection=FastConnection,
            )
        except Exception as e:
            self._fail(type(e).__name__)
            return False
        ws.recorder, ws.index = self.recorder, idx
        try:
            for _ in range(greeting):
                await asyncio.wait_for(ws.recv(), 120)
            if self.recv == "fast":
                # Switch at a frame boundary: nothing buffered inside websockets.
                while ws.protocol.reader.buffer:
                    await asyncio.sleep(0.01)
                ws.fast = True
        except Exception as e:
            self._fail("greeting:" + type(e).__name__)
            with contextlib.suppress(Exception):
                await ws.close()
            return False
        self.conns[idx] = ws
        self.tasks[idx] = asyncio.create_task(self._watch(idx, ws))
        return True

    async def _watch(self, idx: int, ws: FastConnection) -> None:
        """Until the socket closes: with --recv library, read and record every message."""
        try:
            if self.recv == "library":
                async for raw in ws:
                    now = time.time()
                    self.recorder.on_text(idx, raw.encode() if isinstance(raw, str) else raw, now)
            else:
                await ws.wait_closed()
        except websockets.ConnectionClosed:
            pass
        finally:
            if self.conns.pop(idx, None) is not None:
                self._fail(f"closed-by-peer:{ws.close_code}")
            self.tasks.pop(idx, None)

    async def open(self, n: int, url: str, tokens: list[str], greeting: int) -> dict:
        sem = asyncio.Semaphore(self.concurrency)
        ok = fail = 0
        t0 = last = time.perf_counter()

        async def one() -> None:
            nonlocal ok, fail, last
            async with sem:
                idx = self.next_index
                self.next_index += 1
                headers = {"Authorization": f"Token {tokens[idx % len(tokens)]}"} if tokens else {}
                if await self._open_one(idx, url, headers, greeting):
                    ok += 1
                else:
                    fail += 1
                now = time.perf_counter()
                if now - last > 3:
                    last = now
                    log(event="progress", opened=ok, failed=fail, of=n)

        await asyncio.gather(*(one() for _ in range(n)))
        return {
            "event": "opened",
            "ok": ok,
            "failed": fail,
            "open": len(self.conns),
            "seconds": round(time.perf_counter() - t0, 2),
            "failures": dict(self.failures),
        }

    async def close(self, n: int | None) -> dict:
        idxs = list(self.conns)[: (len(self.conns) if n is None else n)]
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(self.concurrency)

        async def one(i: int) -> None:
            async with sem:
                ws = self.conns.pop(i, None)
                if ws is not None:
                    with contextlib.suppress(Exception):
                        await ws.close()

        await asyncio.gather(*(one(i) for i in idxs))
        return {
            "event": "closed",
            "closed": len(idxs),
            "open": len(self.conns),
            "seconds": round(time.perf_counter() - t0, 2),
        }

    def collect(self, out: str, published: int | None) -> dict:
        """Samples go to `out`: sample count (8 bytes), latencies (int64 µs), ids (int32)."""
        r = self.recorder
        with open(out, "wb") as f:
            f.write(len(r.lat).to_bytes(8, "little"))
            r.lat.tofile(f)
            r.ids.tofile(f)
        published = r.count if published is None else published
        received = sum(sum(g[:published]) for g in r.got.values())
        sockets = max(len(self.conns), len(r.got))
        return {
            "event": "collected",
            "samples": len(r.lat),
            "received": received,
            "expected": published * sockets,
            "missing": published * sockets - received,
            "sockets": len(self.conns),
            "sockets_with_messages": len(r.got),
            "dups": r.dups,
            "reorders": r.reorders,
            "other": r.other,
            "first_rx": r.first_rx,
            "last_rx": r.last_rx,
            "per_second": r.per_second,
            "failures": dict(self.failures),
            **rusage(),
        }


def rusage() -> dict:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu": r.ru_utime + r.ru_stime, "maxrss_kb": r.ru_maxrss}


async def main_async(args) -> None:
    fleet = Fleet(args.concurrency, args.recv)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    log(event="started", pid=os.getpid(), fd_limit=raise_fd_limit(), loop=type(loop).__module__)
    while line := await reader.readline():
        cmd = json.loads(line)
        what = cmd["cmd"]
        if what == "open":
            reply = await fleet.open(
                cmd["n"], cmd["url"], cmd.get("tokens") or [], cmd.get("greeting", 0)
            )
        elif what == "arm":
            fleet.recorder.arm(cmd["run"], cmd["count"], cmd.get("warmup", 0))
            reply = {"event": "armed", "sockets": len(fleet.conns)}
        elif what == "collect":
            reply = fleet.collect(cmd["out"], cmd.get("published"))
        elif what == "close":
            reply = await fleet.close(cmd.get("n"))
        elif what == "count":
            reply = {"event": "count", "received": fleet.recorder.received}
        elif what == "rusage":
            reply = {"event": "rusage", **rusage()}
        elif what == "exit":
            break
        else:
            reply = {"event": "error", "message": f"unknown command {what!r}"}
        log(**reply)
    await fleet.close(None)
    log(event="bye")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, default=64, help="handshakes in flight")
    p.add_argument("--recv", choices=("fast", "library"), default="fast")
    p.add_argument("--no-uvloop", action="store_true")
    args = p.parse_args()
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
