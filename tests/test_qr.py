"""QR rendering of verification URIs (e2ee.client.qr), decoded back with an independent reader
(zxing-cpp, from the ``test`` extra)."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
import zlib

import pytest
import zxingcpp

from e2ee.client.qr import ERROR_LEVEL, QUIET_ZONE, qr_code, qr_png, qr_svg, qr_terminal
from e2ee.errors import UsageError
from e2ee.verification import make_uri, parse_uri

URI = make_uri("juliet@example.org", [(1073741827, bytes(range(32))), (812, bytes(range(32, 64)))])
GAJIM_URI = make_uri("jüliet@例え.jp", [(1, b"\xff" * 32)], action="message")
SVG_NS = "{http://www.w3.org/2000/svg}"


def _png_to_grey(png: bytes) -> tuple[int, int, bytes]:
    """Width, height and 8-bit grey pixels of a non-interlaced greyscale or palette PNG (what
    segno writes).  Checks the signature and every chunk CRC."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, colour, _comp, _filter, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert colour in (0, 3) and interlace == 0 and depth in (1, 2, 4, 8)
    palette = next((body for kind, body in chunks if kind == b"PLTE"), b"")
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = (width * depth + 7) // 8
    prev, rows = bytearray(stride), []
    for y in range(height):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        bpp = max(1, depth // 8)
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
            else:
                assert ftype == 0
        prev = line
        maxval = (1 << depth) - 1
        for x in range(width):
            bit = (x * depth) % 8
            v = (line[x * depth // 8] >> (8 - depth - bit)) & maxval
            if colour == 3:
                rows.append(palette[3 * v])  # red channel of a black/white palette
            else:
                rows.append(v * 255 // maxval)
    return width, height, bytes(rows)


def _decode(width: int, height: int, grey: bytes) -> list[str]:
    image = memoryview(grey).cast("B", (height, width))
    results = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode))
    return [r.text for r in results]


@pytest.mark.parametrize("uri", [URI, GAJIM_URI])
def test_png_decodes_to_the_same_uri(uri: str) -> None:
    png = qr_png(uri)
    width, height, grey = _png_to_grey(png)
    code = qr_code(uri)
    modules = int(code.symbol_size(border=QUIET_ZONE)[0])
    assert width == height == modules * 8
    # the quiet zone: the first 4 module rows and columns are white
    assert set(grey[: QUIET_ZONE * 8 * width]) == {255}
    assert all(grey[y * width + x] == 255 for y in range(height) for x in range(QUIET_ZONE * 8))
    assert _decode(width, height, grey) == [uri]
    assert parse_uri(_decode(width, height, grey)[0]) == parse_uri(uri)


def test_symbol_parameters() -> None:
    code = qr_code(URI)
    assert code.error == ERROR_LEVEL == "M"  # never boosted
    assert not code.is_micro
    assert code.designator == f"{code.version}-M"


def test_png_scale() -> None:
    width, height, grey = _png_to_grey(qr_png(URI, scale=3))
    assert width == height == int(qr_code(URI).symbol_size(border=QUIET_ZONE)[0]) * 3
    assert _decode(width, height, grey) == [URI]


def test_svg_is_xml_with_a_path() -> None:
    svg = qr_svg(URI)
    assert svg.startswith(b"<?xml")
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg"
    paths = root.findall(f".//{SVG_NS}path")
    assert len(paths) >= 1 and paths[0].get("d")
    side = int(qr_code(URI).symbol_size(border=QUIET_ZONE)[0]) * 8
    assert root.get("width") == root.get("height") == str(side)


def _terminal_to_grey(text: str, *, dark_background: bool) -> tuple[int, int, bytes]:
    """Back from half blocks to pixels (4x4 per module), light modules white."""
    upper = {" ": (False, False), "\u2580": (True, False), "\u2584": (False, True), "\u2588": (True, True)}
    ink_rows: list[list[bool]] = []
    for text_line in text.split("\n"):
        halves = [upper[ch] for ch in text_line]
        ink_rows.append([t for t, _ in halves])
        ink_rows.append([b for _, b in halves])
    scale, pixels = 4, bytearray()
    for row in ink_rows:
        line = bytearray()
        for ink in row:
            light = ink if dark_background else not ink
            line += bytes([255 if light else 0]) * scale
        pixels += bytes(line) * scale
    width = len(ink_rows[0]) * scale
    return width, len(ink_rows) * scale, bytes(pixels)


@pytest.mark.parametrize("dark_background", [True, False])
def test_terminal_shape_and_content(dark_background: bool) -> None:
    text = qr_terminal(URI, dark_background=dark_background)
    modules = int(qr_code(URI).symbol_size(border=QUIET_ZONE)[0])
    lines = text.split("\n")
    assert not text.endswith("\n")
    assert all(len(line) == modules for line in lines)  # n columns ...
    assert len(lines) == (modules + 1) // 2  # ... by ceil(n / 2) lines: square on a terminal
    assert set(text) <= {" ", "\u2580", "\u2584", "\u2588", "\n"}
    # quiet zone: light modules are ink on a dark background, blank on a light one
    assert lines[0] == ("\u2588" if dark_background else " ") * modules
    # n is odd: the last line's lower half is outside the symbol and left blank
    assert modules % 2 == 1
    assert lines[-1] == ("\u2580" if dark_background else " ") * modules
    width, height, grey = _terminal_to_grey(text, dark_background=dark_background)
    assert _decode(width, height, grey) == [URI]


def test_terminal_has_no_escape_codes() -> None:
    assert "\x1b" not in qr_terminal(URI)


@pytest.mark.parametrize("bad", ["", b"xmpp:a@b", None])
def test_rejects_non_uris(bad: object) -> None:
    with pytest.raises(UsageError):
        qr_png(bad)  # type: ignore[arg-type]


def test_rejects_data_too_long_for_any_version() -> None:
    with pytest.raises(UsageError):
        qr_terminal("xmpp:a@b?" + "x" * 4000)
