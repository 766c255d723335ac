"""One side of repeated hole punches, run inside a home namespace by ``nat_bench.py``.

    ip netns exec HOME python3 -m bench.punch_probe

Reads commands on stdin, one a line: ``bind`` (answers the port of a fresh
``direct_wire.bound_socket``, the one a node tells its peer) and ``dial IP PORT DELAY``
(waits DELAY seconds, then ``PeerClient.punch``es from that socket to IP:PORT, as a node
does; answers ``ok MS`` with the connect time, or ``fail REASON``). Each punched stream
carries one line both ways, so a connect that only seemed to succeed counts as failed.
"""

from __future__ import annotations

import asyncio
import sys
import time

from rhizome.federation.client import PeerClient
from rhizome.federation.direct_wire import PUNCH_SECONDS, bound_socket
from rhizome.federation.errors import PeerError
from rhizome.federation.settings import DEFAULT_SETTINGS


async def main() -> None:
    client = PeerClient(DEFAULT_SETTINGS, allow_private=True, distrusted=lambda: ())
    loop = asyncio.get_running_loop()
    sock = None
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        words = line.split()
        if words[:1] == ["bind"]:
            sock = bound_socket("0.0.0.0")
            print(sock.getsockname()[1], flush=True)
        elif words[:1] == ["dial"] and sock is not None:
            await asyncio.sleep(float(words[3]))
            started = time.perf_counter()
            try:
                reader, writer = await client.punch(
                    sock, (words[1], int(words[2])), within=PUNCH_SECONDS
                )
                ms = (time.perf_counter() - started) * 1000
                writer.write(b"hello\n")
                await writer.drain()
                got = await asyncio.wait_for(reader.readline(), PUNCH_SECONDS)
                writer.close()
                print(f"ok {ms:.1f}" if got == b"hello\n" else "fail no-data", flush=True)
            except (PeerError, TimeoutError, OSError) as exc:
                print(f"fail {type(exc).__name__}", flush=True)
            sock = None


if __name__ == "__main__":
    asyncio.run(main())
