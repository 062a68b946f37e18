#!/usr/bin/env python3
"""Opens many HTTP/1.1 keep-alive connections, makes one request on each,
then keeps them all open and idle until told to let go.

Used by benches/load.sh to measure what idle keep-alive connections cost a
server (its RSS before and after) and that requests still pass meanwhile.

    idle_conns.py HOST PORT PATH COUNT READY_FILE RELEASE_FILE [HEADER ...]

HEADER is "Name: value". Once every connection is open and has had its
answer, it writes "READY <open> <answered-2xx>" to READY_FILE and waits
(at most HOLD_SECS, default 120) until RELEASE_FILE exists. Then it prints
"STILL <n>", the connections the server has not closed in the meantime,
closes them all and exits. Python's standard library only.
"""

import asyncio
import os
import sys
import time

PARALLEL_CONNECTS = 256


async def open_one(host, port, request, sem, conns, stats):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), timeout=30
            )
        except (OSError, asyncio.TimeoutError) as e:
            stats["failed"] += 1
            stats["error"] = repr(e)
            return
        try:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length:
                await asyncio.wait_for(reader.readexactly(length), timeout=30)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
            stats["failed"] += 1
            stats["error"] = repr(e)
            writer.close()
            return
        if 200 <= status < 300:
            stats["ok"] += 1
        conns.append((reader, writer))


async def main():
    if len(sys.argv) < 7:
        sys.exit(__doc__)
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    count, ready_file, release_file = int(sys.argv[4]), sys.argv[5], sys.argv[6]
    headers = "".join(h + "\r\n" for h in sys.argv[7:])
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode()
    hold = float(os.environ.get("HOLD_SECS", "120"))

    sem = asyncio.Semaphore(PARALLEL_CONNECTS)
    conns = []
    stats = {"ok": 0, "failed": 0, "error": ""}
    started = time.monotonic()
    await asyncio.gather(
        *(open_one(host, port, request, sem, conns, stats) for _ in range(count))
    )
    took = time.monotonic() - started
    if stats["failed"]:
        print(f"FAILED {stats['failed']} (last: {stats['error']})", flush=True)
    print(f"OPENED {len(conns)} in {took:.1f}s", flush=True)
    with open(ready_file + ".tmp", "w") as f:
        f.write(f"READY {len(conns)} {stats['ok']}\n")
    os.replace(ready_file + ".tmp", ready_file)

    deadline = time.monotonic() + hold
    while not os.path.exists(release_file) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    # A connection the server closed has seen its EOF by now (the loop ran).
    still = sum(1 for r, _ in conns if not r.at_eof())
    print(f"STILL {still}", flush=True)
    for _, w in conns:
        w.close()
    await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(main())
