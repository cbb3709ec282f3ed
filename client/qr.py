"""QR codes of verification URIs (:func:`e2ee.verification.make_uri`), rendered with segno.

Every form uses a regular QR code (never Micro QR), error correction level M exactly (segno's
``boost_error`` is off, so the level does not change with the length of the URI) and the
standard quiet zone of 4 modules.  Nothing is printed or written to disk: each function
returns the rendering.
"""

from __future__ import annotations

import io
from typing import Final

import segno

from e2ee.errors import UsageError

__all__ = ["ERROR_LEVEL", "QUIET_ZONE", "qr_code", "qr_png", "qr_svg", "qr_terminal"]

#: Quiet zone around the symbol, in modules (ISO/IEC 18004 asks for 4).
QUIET_ZONE: Final = 4
#: Error-correction level: M recovers ~15% damage, the usual choice for codes on screens.
ERROR_LEVEL: Final = "M"

# Half blocks: each character shows two module rows (upper, lower); True = ink.
_HALF_BLOCKS: Final = {
    (False, False): " ",
    (True, False): "\u2580",  # ▀ upper half block
    (False, True): "\u2584",  # ▄ lower half block
    (True, True): "\u2588",  # █ full block
}


def qr_code(uri: str) -> segno.QRCode:
    """The QR code of ``uri``: regular QR, level M, smallest version that fits.  Raises
    :class:`~e2ee.errors.UsageError` for an empty URI or one too long for any QR version
    (about 2300 bytes at level M)."""
    if not isinstance(uri, str) or not uri:
        raise UsageError("uri must be a non-empty str")
    try:
        return segno.make_qr(uri, error=ERROR_LEVEL, boost_error=False)
    except segno.DataOverflowError:
        raise UsageError("URI too long for a QR code") from None


def qr_terminal(uri: str, *, dark_background: bool = True) -> str:
    """The QR code as text, two module rows per line with Unicode half blocks, quiet zone
    included; lines are joined with ``\\n`` (no trailing newline) and have no colour codes.

    A terminal draws characters in its foreground colour.  With ``dark_background=True`` (the
    default, light text on a dark terminal) the *light* modules are drawn, so the code appears
    dark-on-light as scanners expect (like ``qrencode -t UTF8``); pass ``False`` for dark text on
    a light background.  The result is ``n`` characters wide and ``ceil(n / 2)`` lines tall for a
    symbol of ``n`` modules including the quiet zone -- square on a terminal whose character cells
    are twice as tall as wide.  When ``n`` is odd the lower half of the last line is left blank.
    """
    rows = [[bool(m) for m in row] for row in qr_code(uri).matrix_iter(border=QUIET_ZONE)]
    ink = [[dark != dark_background for dark in row] for row in rows]
    width = len(ink[0])
    if len(ink) % 2:
        ink.append([False] * width)
    lines = []
    for top, bottom in zip(ink[0::2], ink[1::2], strict=True):
        lines.append("".join(_HALF_BLOCKS[(t, b)] for t, b in zip(top, bottom, strict=True)))
    return "\n".join(lines)


def qr_png(uri: str, *, scale: int = 8) -> bytes:
    """The QR code as a PNG image, ``scale`` pixels per module, black on white, quiet zone
    included."""
    buf = io.BytesIO()
    qr_code(uri).save(buf, kind="png", scale=scale, border=QUIET_ZONE, dark="#000", light="#fff")
    return buf.getvalue()


def qr_svg(uri: str, *, scale: int = 8) -> bytes:
    """The QR code as a standalone SVG document (UTF-8, with XML declaration, one ``<path>``),
    ``scale`` user units per module, black on white, quiet zone included."""
    buf = io.BytesIO()
    qr_code(uri).save(buf, kind="svg", scale=scale, border=QUIET_ZONE, dark="#000", light="#fff")
    return buf.getvalue()
