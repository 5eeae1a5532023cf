"""Regenerates the two app icons Teams requires (run: python -m manifest.make_icons).

color.png: 192x192, full colour. outline.png: 32x32, white on transparent. Drawn with the standard library only
(zlib + the PNG chunk format) so no imaging dependency is needed for two fixed images.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

HERE = Path(__file__).parent


def _png(width: int, height: int, pixels: list[list[tuple[int, int, int, int]]]) -> bytes:
    raw = b"".join(b"\x00" + b"".join(struct.pack("BBBB", *px) for px in row) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _shield(x: float, y: float) -> bool:
    """A shield outline in unit coordinates (0..1), with a key-hole: the product's mark."""
    if y < 0.12 or y > 0.92 or x < 0.18 or x > 0.82:
        return False
    if y > 0.55:  # the pointed lower half
        half = 0.32 * (0.92 - y) / 0.37
        if abs(x - 0.5) > half:
            return False
    hole = (x - 0.5) ** 2 + (y - 0.42) ** 2 < 0.07 ** 2 or (abs(x - 0.5) < 0.03 and 0.42 < y < 0.62)
    return not hole


def draw(size: int, fg: tuple[int, int, int, int], bg: tuple[int, int, int, int]) -> bytes:
    rows = []
    for j in range(size):
        row = []
        for i in range(size):
            row.append(fg if _shield((i + 0.5) / size, (j + 0.5) / size) else bg)
        rows.append(row)
    return _png(size, size, rows)


def main() -> None:
    (HERE / "color.png").write_bytes(draw(192, (255, 255, 255, 255), (196, 43, 28, 255)))
    (HERE / "outline.png").write_bytes(draw(32, (255, 255, 255, 255), (0, 0, 0, 0)))


if __name__ == "__main__":
    main()
