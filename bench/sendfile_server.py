"""The barest HTTP server for one file: a thread per connection, and the whole body in blocking `os.sendfile` calls.

Run as `python3 sendfile_server.py PORT FILE`; serves the file at /blob and answers /health. No event loop, no
framework: what is left is the kernel's own cost of moving the file through loopback TCP, the ceiling of any
server's blob GET on this machine.
"""

from __future__ import annotations

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def handler_for(blob: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path == "/health":
                self._headers(200, 2)
                self.wfile.write(b"ok")
            elif self.path == "/blob":
                size = blob.stat().st_size
                self._headers(200, size)
                with blob.open("rb") as f:
                    sent = 0
                    while sent < size:
                        sent += os.sendfile(self.connection.fileno(), f.fileno(), sent, size - sent)
            else:
                self._headers(404, 0)

        def _headers(self, status: int, length: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(length))
            self.end_headers()

        def log_message(self, fmt: str, *args: object) -> None:
            pass  # An access log would cost the measured server CPU.

    return Handler


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler_for(Path(sys.argv[2]))).serve_forever()
