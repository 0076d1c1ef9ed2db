"""What encoded image bytes say before decoding: size, EXIF orientation, and the shape limits.

Pure Python (no TensorFlow, no Pillow), shared by the TensorFlow decoder of the data
pipeline (`decode_tf`) and the Pillow decoder of predict and the server (`decode`), so both
read the same orientation, turn the image the same way and refuse the same shapes.
"""

import struct

ORIENTATION_TAG = 0x0112  # EXIF/TIFF "Orientation"
# How to make an image upright, by EXIF orientation (1-8; 0 is not a valid value): whether
# to transpose it (swap rows and columns), then reverse its rows, then its columns.
ORIENTATIONS = (
    (False, False, False),  # 0: invalid, left as stored
    (False, False, False),  # 1: upright
    (False, False, True),  # 2: mirrored left-right
    (False, True, True),  # 3: rotated 180
    (False, True, False),  # 4: mirrored top-bottom
    (True, False, False),  # 5: transposed
    (True, False, True),  # 6: rotated 90 counter-clockwise: turn it 90 clockwise
    (True, True, True),  # 7: transversed
    (True, True, False),  # 8: rotated 90 clockwise: turn it 90 counter-clockwise
)
# The orientation is read from the first bytes only, so the TensorFlow path copies this much
# of each file into Python, not the whole file; EXIF sits near the start of a JPEG or PNG.
EXIF_HEAD = 256 * 1024
# Pixel limits, checked from the header before decoding. They differ by who supplies the
# image: training and evaluation data is the user's own, so only an image too large to hold
# decoded in memory is skipped ...
DATA_MAX_PIXELS = 100_000_000
# ... while predict's files and the server's uploads may come from anyone, so the limit is
# tighter: it bounds what one request can make the server allocate (decompression bombs).
UPLOAD_MAX_PIXELS = 40_000_000
# Resizing the shorter side to S makes an image S^2 x aspect pixels: at 20:1 and S = 512
# (scale jittering's top) that is 63 MB of float32; a 1x1,000,000 PNG of 1 KB would be TBs.
MAX_ASPECT = 20

_PNG = b"\x89PNG\r\n\x1a\n"


def header_size(head):
    """Return (width, height) from a JPEG/PNG/GIF/BMP header, or None if unrecognised.

    (-1, -1) for a JPEG whose frame header lies beyond `head`: the decoder decides.
    """
    if head[:8] == _PNG and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return struct.unpack("<HH", head[6:10])
    if head[:2] == b"BM" and len(head) >= 26:
        w, h = struct.unpack("<ii", head[18:26])
        return abs(w), abs(h)
    if head[:2] == b"\xff\xd8":
        for marker, start, _ in _jpeg_segments(head):
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                if start + 5 > len(head):
                    break
                h, w = struct.unpack(">HH", head[start + 1 : start + 5])
                return w, h
        return (-1, -1)
    return None


def shape_problem(width, height, max_pixels):
    """Why an image of `width` x `height` cannot be processed in bounded memory, or None."""
    if width * height > max_pixels:
        return f"too large: {width}x{height} pixels (the limit is {max_pixels:,})"
    if max(width, height) > MAX_ASPECT * max(min(width, height), 1):
        return (
            f"too elongated: {width}x{height} pixels (the aspect ratio limit is "
            f"{MAX_ASPECT}:1, as resizing the shorter side scales the longer one with it)"
        )
    return None


def exif_orientation(data):
    """The EXIF orientation (1-8) of JPEG or PNG bytes; 1 when absent or unreadable.

    Reads the first APP1 "Exif" segment of a JPEG (as Pillow does) or the eXIf chunk before
    a PNG's image data, within the first `EXIF_HEAD` bytes.
    """
    data = bytes(data[:EXIF_HEAD])
    tiff = None
    if data[:2] == b"\xff\xd8":
        for marker, start, end in _jpeg_segments(data):
            if marker == 0xE1 and data[start : start + 6] == b"Exif\0\0":
                tiff = data[start + 6 : end]
                break
    elif data[:8] == _PNG:
        tiff = _png_exif(data)
    return _tiff_orientation(tiff) if tiff else 1


def _jpeg_segments(data):
    """Yield (marker, payload start, payload end) of a JPEG's header segments, up to SOS."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no headers follow
            return
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        yield marker, i + 4, min(i + 2 + length, len(data))
        i += 2 + length


def _png_exif(data):
    """The payload of a PNG's eXIf chunk (a TIFF structure) before IDAT, or None."""
    i = len(_PNG)
    while i + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[i : i + 8])
        if kind == b"eXIf":
            return data[i + 8 : i + 8 + length]
        if kind in (b"IDAT", b"IEND"):
            return None
        i += 12 + length
    return None


def _tiff_orientation(tiff):
    """The orientation entry of a TIFF structure's first IFD (EXIF's IFD0), or 1."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
    for k in range(count):
        entry = tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
        if len(entry) < 12:
            break
        tag, kind, _, value = struct.unpack(order + "HHI4s", entry)
        if tag == ORIENTATION_TAG:
            fmt = {3: "H", 4: "I"}.get(kind)  # SHORT as the standard says; LONG seen too
            orientation = struct.unpack(order + fmt, value[: struct.calcsize(fmt)])[0] if fmt else 1
            return orientation if 1 <= orientation < len(ORIENTATIONS) else 1
    return 1
