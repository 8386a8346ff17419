"""A bare aiohttp sendfile server for one file: the download client's ceiling with no registry logic at all.

Run as `python3 static_server.py PORT FILE`; serves the file at /blob and answers /health.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web


def app_for(blob: Path) -> web.Application:
    async def serve_blob(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(blob)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/blob", serve_blob)
    app.router.add_get("/health", health)
    return app


if __name__ == "__main__":
    web.run_app(app_for(Path(sys.argv[2])), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
