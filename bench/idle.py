"""Idle keep-alive connections held open beside a load, as a crowd of clients that asked once and went quiet does:
`with IdleConnections(host, port, 5000): ...`."""

from __future__ import annotations

import resource
import socket
from types import TracebackType

REQUEST = b"GET /v2/ HTTP/1.1\r\nHost: bench\r\n\r\n"


class IdleConnections:
    """`count` connections, each having sent one request and read its answer, then idle until the block ends."""

    def __init__(self, host: str, port: int, count: int) -> None:
        self.host, self.port, self.count = host, port, count
        self.sockets: list[socket.socket] = []

    def __enter__(self) -> IdleConnections:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = self.count + 1024
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
        try:
            for _ in range(self.count):
                sock = socket.create_connection((self.host, self.port), timeout=10)
                self.sockets.append(sock)
                sock.sendall(REQUEST)
                answer = b""
                while b"\r\n\r\n" not in answer:
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise ConnectionError(f"{self.host}:{self.port} closed an idle connection's first answer")
                    answer += chunk
        except BaseException:
            self.close()
            raise
        return self

    def still_open(self) -> int:
        """How many the server has not closed (a closed one reads as EOF at once)."""
        open_now = 0
        for sock in self.sockets:
            sock.setblocking(False)
            try:
                open_now += sock.recv(4096, socket.MSG_PEEK) != b""
            except BlockingIOError:
                open_now += 1
            except OSError:
                pass
            sock.setblocking(True)
        return open_now

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
