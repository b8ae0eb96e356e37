"""One client process: many WebSocket connections (``websockets``), driven over a pipe.

The harness sends ``connect`` (which connections, to which ports and rooms), ``send``
(a steady share of the chat rate, then a drain), ``tally`` (every line sent, per room)
and ``close``. Times are ``time.monotonic()``: CLOCK_MONOTONIC, one clock for every
process on the machine, so a latency is receive time minus send time across processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


@dataclass
class Peer:
    """One WebSocket connection and what it received."""

    index: int
    room: str
    port: int
    ws: ClientConnection | None = None
    received: Counter[str] = field(default_factory=Counter)
    close_code: int | None = None
    closed_at: float | None = None
    others: int = 0  # presence lists, errors: frames that are not chat lines


class Client:
    def __init__(self, proc: int, pipe: Connection) -> None:
        self.proc = proc
        self.pipe = pipe
        self.peers: list[Peer] = []
        self.latencies = array("d")
        self.readers: list[asyncio.Task[None]] = []
        self.polls: list[asyncio.Task[None]] = []
        self.sent: list[tuple[str, str]] = []  # (line id, room)
        self.send_failures = 0
        self.last_line = 0.0  # when the latest chat line arrived

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            order = await loop.run_in_executor(None, self.pipe.recv)
            op = order.pop("op")
            reply = await getattr(self, f"op_{op}")(**order)
            self.pipe.send({"op": op, **reply})
            if op == "close":
                return

    # -- connect --------------------------------------------------------------------

    async def op_connect(self, peers: list[tuple[int, str, int]], in_flight: int,
                         presence_poll: float) -> dict[str, Any]:  # fmt: skip
        self.peers = [Peer(index, room, port) for index, room, port in peers]
        gate = asyncio.Semaphore(in_flight)
        handshakes = array("d")
        failures: Counter[str] = Counter()

        async def open_one(peer: Peer) -> None:
            async with gate:
                started = time.monotonic()
                try:
                    peer.ws = await connect(
                        f"ws://127.0.0.1:{peer.port}/ws/chat/{peer.room}/",
                        origin=f"http://127.0.0.1:{peer.port}",  # type: ignore[arg-type]
                        open_timeout=60, ping_interval=None, compression=None, max_size=None,
                    )  # fmt: skip
                except Exception as exc:
                    failures[type(exc).__name__ + _status(exc)] += 1
                    return
                handshakes.append(time.monotonic() - started)
            self.readers.append(asyncio.create_task(self._read(peer)))
            if presence_poll:
                self.polls.append(asyncio.create_task(self._poll(peer, presence_poll)))

        started = time.monotonic()
        await asyncio.gather(*(open_one(peer) for peer in self.peers))
        return {"handshakes": handshakes.tobytes(), "failures": dict(failures),
                "wall": time.monotonic() - started, "cpu": _cpu()}  # fmt: skip

    async def _read(self, peer: Peer) -> None:
        assert peer.ws is not None
        try:
            async for frame in peer.ws:
                now = time.monotonic()
                data = json.loads(frame)
                if data.get("type") != "message":
                    peer.others += 1
                    continue
                line, _, sent_at = data["text"].rpartition(" ")
                peer.received[line] += 1
                self.latencies.append(now - float(sent_at))
                self.last_line = now
        except ConnectionClosed as exc:
            if peer.closed_at is None:
                peer.close_code = exc.rcvd.code if exc.rcvd else 1006
                peer.closed_at = time.monotonic()

    async def _poll(self, peer: Peer, every: float) -> None:
        """The demo page's presence poll: ``{"type": "presence"}`` every few seconds."""
        assert peer.ws is not None
        await asyncio.sleep(random.uniform(0, every))  # pages are not in step
        while peer.closed_at is None:
            try:
                await peer.ws.send('{"type": "presence"}')
            except ConnectionClosed:
                return
            await asyncio.sleep(every)  # the page's own timer

    # -- send -----------------------------------------------------------------------

    async def op_send(self, start: float, duration: float, rate: float, offset: float,
                      quiet: float, max_drain: float) -> dict[str, Any]:  # fmt: skip
        """Send ``rate`` lines/s from random open connections, then drain.

        The drain ends when no chat line has arrived for ``quiet`` seconds (once lines
        have started to arrive), or after ``max_drain`` seconds: a line that has not
        arrived by then counts as lost.
        """
        self.latencies = array("d")
        for peer in self.peers:
            peer.received.clear()
        cpu = _cpu()
        interval, seq = 1.0 / rate, 0
        while True:
            due = start + offset + seq * interval
            if due > start + duration:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))  # the pacing timer
            seq += 1
            line = f"{self.proc}:{seq}"
            open_peers = [p for p in self.peers if p.ws is not None and p.closed_at is None]
            if not open_peers:
                self.send_failures += 1
                continue
            peer = random.choice(open_peers)
            try:
                assert peer.ws is not None
                await peer.ws.send(json.dumps({"text": f"{line} {time.monotonic()!r}"}))
                self.sent.append((line, peer.room))
            except ConnectionClosed:
                self.send_failures += 1
        ended = time.monotonic()
        while time.monotonic() - ended < max_drain:
            arriving = self.last_line > start
            if arriving and time.monotonic() - max(self.last_line, ended) >= quiet:
                break
            await asyncio.sleep(0.2)  # lines still travelling: watch for quiet
        return {"sent": self.sent, "send_failures": self.send_failures, "cpu": _cpu() - cpu}

    # -- tally ----------------------------------------------------------------------

    async def op_tally(self, lines_by_room: dict[str, list[str]]) -> dict[str, Any]:
        """Lost and duplicated lines on every connection that stayed open."""
        expected = lost = duplicated = received = others = 0
        closes: Counter[int] = Counter()
        for peer in self.peers:
            others += peer.others
            if peer.ws is None:
                continue
            if peer.closed_at is not None:
                closes[peer.close_code or 1006] += 1
                continue
            room_lines = lines_by_room.get(peer.room, [])
            expected += len(room_lines)
            lost += sum(1 for line in room_lines if line not in peer.received)
            duplicated += sum(count - 1 for count in peer.received.values() if count > 1)
            received += sum(peer.received.values())
        return {"expected": expected, "lost": lost, "duplicated": duplicated,
                "received": received, "others": others, "closes": dict(closes),
                "latencies": self.latencies.tobytes()}  # fmt: skip

    async def op_close(self) -> dict[str, Any]:
        for task in self.polls:
            task.cancel()
        await asyncio.gather(*(p.ws.close() for p in self.peers if p.ws is not None),
                             return_exceptions=True)  # fmt: skip
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, *self.polls, return_exceptions=True)
        return {}


def _status(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return f" {response.status_code}" if response is not None else ""


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def client_main(proc: int, pipe: Connection) -> None:
    """Entry point of a client process (multiprocessing ``spawn``)."""
    try:
        asyncio.run(Client(proc, pipe).run())
    except BaseException:
        import traceback

        pipe.send({"op": "error", "error": traceback.format_exc()})
        raise
