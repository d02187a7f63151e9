"""A WAN for the benchmarks: a TCP proxy on 127.0.0.1 that delays each direction of every
connection by a fixed time (25 ms each way: a relay 50 ms away) and leaves the bytes as
they are. Each chunk read is stamped and written out once its delay has passed, in order.

    python bench/delay_proxy.py LISTEN_PORT TARGET_PORT [DELAY_MS]

prints "ready" once it listens; runs until killed. Its own process, so the CPU a benchmark
measures for the senders does not include it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               delay: float) -> None:
    loop = asyncio.get_running_loop()
    due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def forward() -> None:
        while True:
            at, chunk = await due.get()
            if at > loop.time():
                await asyncio.sleep(at - loop.time())
            if not chunk:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()

    forwarding = asyncio.create_task(forward())
    try:
        while True:
            chunk = await reader.read(65536)
            due.put_nowait((loop.time() + delay, chunk))
            if not chunk:
                break
        await forwarding
    except (OSError, asyncio.CancelledError):
        forwarding.cancel()
    finally:
        writer.close()


async def serve(listen_port: int, target_port: int, delay: float) -> None:
    async def connected(client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1",
                                                                         target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pump(client_reader, server_writer, delay),
                             pump(server_reader, client_writer, delay),
                             return_exceptions=True)

    server = await asyncio.start_server(connected, "127.0.0.1", listen_port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    listen_port, target_port = int(sys.argv[1]), int(sys.argv[2])
    delay = (float(sys.argv[3]) if len(sys.argv) > 3 else 25.0) / 1000
    asyncio.run(serve(listen_port, target_port, delay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
