"""A bare aiohttp app shaped like the registry's cheapest answers, served by N forked workers on one port
(SO_REUSEPORT, as ours): what asyncio and aiohttp alone cost per request and per connection, for
`connection_cost.py` to hold our server against.

Run as `python3 bare_aiohttp.py PORT WORKERS`; answers `GET /v2/` with `{}` and a blob `HEAD` with 200 and the
headers a registry sends, and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

from aiohttp import web


def app() -> web.Application:
    async def base(request: web.Request) -> web.Response:
        return web.json_response({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})

    async def blob_head(request: web.Request) -> web.Response:
        digest = request.match_info["digest"]
        return web.Response(
            headers={
                "Docker-Content-Digest": digest,
                "Content-Type": "application/octet-stream",
                "Content-Length": "20000",
            }
        )

    application = web.Application()
    application.router.add_get("/v2/", base)
    application.router.add_route("HEAD", "/v2/{name:.+}/blobs/{digest}", blob_head)
    return application


async def serve(port: int) -> None:
    runner = web.AppRunner(app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True, backlog=1024).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    port, workers = int(sys.argv[1]), int(sys.argv[2])
    with socket.socket() as probe:  # fail at once on a port in use, as our `serve` does
        probe.bind(("127.0.0.1", port))
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:  # as our workers run
                runner.run(serve(port))
            os._exit(0)
        children.append(pid)
    signal.signal(signal.SIGTERM, lambda *_: [os.kill(child, signal.SIGTERM) for child in children])
    for child in children:
        os.waitpid(child, 0)


if __name__ == "__main__":
    main()
