"""zstd helpers that refuse decompression bombs.

``zstandard.decompress(max_output_size=N)`` ignores N when the frame declares its content
size, so a few bytes can claim (and allocate) hundreds of MiB. We check the declared size
first, then stream with a hard cap so frames that do not declare a size are bounded too.
A stream reader ends quietly on a truncated frame, so a second pass, bounded by what the
first produced, checks that the frame is complete. One frame per call: trailing bytes are
refused.
"""

from __future__ import annotations

import io

import zstandard

from .errors import InvalidRecord, RecordTooLarge

COMPRESSION_LEVEL = 3  # zstd's default: fast, and shard payloads are small
READ_CHUNK = 64 * 1024


def compress(data: bytes, level: int = COMPRESSION_LEVEL) -> bytes:
    """One zstd frame that declares its content size."""
    return bytes(zstandard.ZstdCompressor(level=level).compress(data))


def decompress(data: bytes, max_size: int) -> bytes:
    """Decompress ``data``; RecordTooLarge if the output would exceed ``max_size`` bytes."""
    try:
        params = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError as exc:
        raise InvalidRecord(f"not a zstd frame: {exc}") from exc
    declared = params.content_size
    if declared not in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR) and (
        declared > max_size
    ):
        raise RecordTooLarge(f"frame declares {declared} bytes, limit is {max_size}")
    out = bytearray()
    dctx = zstandard.ZstdDecompressor()
    try:
        with dctx.stream_reader(io.BytesIO(data)) as reader:
            while chunk := reader.read(min(READ_CHUNK, max_size + 1 - len(out))):
                out += chunk
                if len(out) > max_size:
                    raise RecordTooLarge(f"frame decompresses to more than {max_size} bytes")
        # Safe now: this pass yields the same (capped) output as the first one.
        checker = dctx.decompressobj()
        checker.decompress(data)
    except zstandard.ZstdError as exc:
        raise InvalidRecord(f"corrupt zstd data: {exc}") from exc
    if not checker.eof:
        raise InvalidRecord("truncated zstd frame")
    if checker.unused_data:
        raise InvalidRecord("trailing bytes after the zstd frame")
    return bytes(out)
