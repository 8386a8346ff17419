"""Which async S3 client for the S3 driver: aiobotocore against obstore, on one moto server on loopback.

    python3 bench/s3_clients.py [--small N] [--mib M] [--rounds R]

Figures, per client, median of the rounds (interleaved, so load from elsewhere hits both alike):
- small PUT and GET: milliseconds per 1 KiB object, one request at a time (the registry's manifests, links, tags);
- GET streamed: MB/s reading an M MiB object chunk by chunk, never whole in memory (a blob served without redirect);
- multipart PUT from a stream: MB/s writing M MiB from an async iterator of 64 KiB chunks in 8 MiB parts (an upload).
moto is the server for both, so absolute figures say more about moto than about S3; the ratios are what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import tests_path  # noqa: F401 - makes the tests' helpers importable

from s3_server import ACCESS_KEY, REGION, SECRET_KEY, MotoServer

MiB = 1024 * 1024
PART = 8 * MiB


async def chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    block = bytes(range(256)) * (size // 256)
    for _ in range(total // size):
        yield block


class Botocore:
    name = "aiobotocore"

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.endpoint, self.bucket = endpoint, bucket

    async def __aenter__(self) -> Botocore:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        self._cm = get_session().create_client(
            "s3",
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            verify=False,
            config=AioConfig(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        self.client: Any = await self._cm.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._cm.__aexit__(None, None, None)

    async def put(self, key: str, data: bytes) -> None:
        await self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    async def get(self, key: str) -> int:
        response = await self.client.get_object(Bucket=self.bucket, Key=key)
        total = 0
        async for chunk in response["Body"].iter_chunks(64 * 1024):
            total += len(chunk)
        return total

    async def put_stream(self, key: str, total: int) -> None:
        upload = await self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        parts, buffer, size = [], [], 0
        async for chunk in chunks(total):
            buffer.append(chunk)
            size += len(chunk)
            if size >= PART:
                result = await self.client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload["UploadId"],
                    PartNumber=len(parts) + 1,
                    Body=b"".join(buffer),
                )
                parts.append({"PartNumber": len(parts) + 1, "ETag": result["ETag"]})
                buffer, size = [], 0
        await self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
        )


class Obstore:
    name = "obstore"

    def __init__(self, endpoint: str, bucket: str) -> None:
        from obstore.store import S3Store

        self.store = S3Store(
            bucket,
            endpoint=endpoint,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            region=REGION,
            virtual_hosted_style_request=False,
            client_options={"allow_http": True},
        )

    async def __aenter__(self) -> Obstore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def put(self, key: str, data: bytes) -> None:
        import obstore

        await obstore.put_async(self.store, key, data)

    async def get(self, key: str) -> int:
        import obstore

        result = await obstore.get_async(self.store, key)
        total = 0
        async for chunk in result.stream(min_chunk_size=64 * 1024):
            total += len(chunk)
        return total

    async def put_stream(self, key: str, total: int) -> None:
        import obstore

        await obstore.put_async(self.store, key, chunks(total), chunk_size=PART, max_concurrency=1)


async def timed(action: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await action()
    return time.perf_counter() - start


async def measure(client: Any, small: int, mib: int) -> dict[str, float]:
    async with client:
        payload = b"x" * 1024
        put = 0.0
        for i in range(small):
            put += await timed(lambda i=i: client.put(f"small/{i}", payload))
        get = 0.0
        for i in range(small):
            get += await timed(lambda i=i: client.get(f"small/{i}"))
        total = mib * MiB
        write = await timed(lambda: client.put_stream("big", total))
        read = await timed(lambda: client.get("big"))
    return {
        "small PUT ms": put / small * 1000,
        "small GET ms": get / small * 1000,
        f"{mib} MiB multipart PUT from a stream MB/s": total / write / 1e6,
        f"{mib} MiB GET streamed MB/s": total / read / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        moto = MotoServer(Path(tmp) / "moto").start()
        try:
            results: dict[str, dict[str, list[float]]] = {}
            for _ in range(args.rounds):
                for kind in (Botocore, Obstore):
                    figures = asyncio.run(measure(kind(moto.endpoint, moto.bucket()), args.small, args.mib))
                    for figure, value in figures.items():
                        results.setdefault(figure, {}).setdefault(kind.name, []).append(value)
        finally:
            moto.stop()
    print(f"| figure (median of {args.rounds}) | aiobotocore | obstore | obstore / aiobotocore |")
    print("|---|---|---|---|")
    for figure, by_client in results.items():
        a, o = statistics.median(by_client["aiobotocore"]), statistics.median(by_client["obstore"])
        print(f"| {figure} | {a:.2f} | {o:.2f} | {o / a:.2f} |")


if __name__ == "__main__":
    main()
