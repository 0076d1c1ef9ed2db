"""The two decoders agree: TensorFlow (training, evaluation) and Pillow (predict, serve)."""

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from keras_alexnet.images import crop_tf, decode, decode_tf, headers
from keras_alexnet.images.crop import center_crop_resized

# How a camera stores an upright image under each EXIF orientation, written out by hand:
# the viewer applies the tag's transform to get the upright image back.
STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, 1),  # shown turned 90 degrees clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, -1),  # shown turned 90 degrees counter-clockwise
}


def tf_decode(blob):
    return decode_tf.decode(tf.constant(blob)).numpy()


def upright():
    """A smooth, non-square image (JPEG keeps it well; a wrong turn cannot go unseen)."""
    y, x = np.mgrid[0:24, 0:40]
    return np.stack([y * 10, x * 6, 250 - 3 * x - 4 * y], axis=-1).astype(np.uint8)


def encode(array, fmt, orientation):
    exif = Image.Exif()
    exif[headers.ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    extra = {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, fmt, exif=exif, **extra)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_gives_the_upright_image_in_both_decoders(fmt, orientation):
    want = upright()
    blob = encode(STORED[orientation](want), fmt, orientation)
    assert headers.exif_orientation(blob) == orientation
    pillow_reference = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(blob))))
    served, trained = decode.decode(blob), tf_decode(blob)
    assert served.shape == trained.shape == want.shape
    np.testing.assert_array_equal(served, pillow_reference)
    if fmt == "PNG":
        np.testing.assert_array_equal(trained, want)
        np.testing.assert_array_equal(served, want)
    else:
        assert np.abs(trained.astype(int) - want).mean() < 2  # JPEG's loss only
        np.testing.assert_allclose(trained, served, atol=5)  # libjpeg settings differ


def jpeg_with_exif_segment(tiff):
    """A JPEG with an APP0 segment, then an APP1 Exif segment holding `tiff`."""
    buffer = io.BytesIO()
    Image.fromarray(STORED[6](upright())).save(buffer, "JPEG", quality=95)  # writes APP0
    plain = buffer.getvalue()
    app1 = b"Exif\0\0" + tiff
    return plain[:20] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + plain[20:]


def test_big_endian_exif_after_app0_is_read_as_pillow_reads_it():
    # IFD0 with one SHORT entry: orientation 6, in Motorola byte order.
    tiff = b"MM\0*" + struct.pack(">IH", 8, 1) + struct.pack(">HHIH2x", 0x0112, 3, 1, 6)
    blob = jpeg_with_exif_segment(tiff + struct.pack(">I", 0))
    assert Image.open(io.BytesIO(blob)).getexif()[headers.ORIENTATION_TAG] == 6
    assert headers.exif_orientation(blob) == 6
    np.testing.assert_allclose(tf_decode(blob), decode.decode(blob), atol=5)
    assert np.abs(decode.decode(blob).astype(int) - upright()).mean() < 2


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow says so too
def test_broken_or_missing_exif_leaves_the_image_as_stored():
    for tiff in (b"", b"II*\0" + struct.pack("<I", 9999), b"XX*\0\0\0\0\0"):
        blob = jpeg_with_exif_segment(tiff)
        assert headers.exif_orientation(blob) == 1
        np.testing.assert_allclose(tf_decode(blob), decode.decode(blob), atol=5)
    assert headers.exif_orientation(b"\xff\xd8\xff\xe1\x00") == 1  # truncated
    assert headers.exif_orientation(b"GIF89a") == 1


def png16(values, color_type):
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB): [H, W, C] uint16."""
    height, width = values.shape[:2]
    rows = values.reshape(height, -1).astype(">u2")
    raw = b"".join(b"\0" + row.tobytes() for row in rows)

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )  # fmt: skip


SIXTEEN_BIT = np.array([0, 1, 255, 256, 257, 32767, 32768, 65279, 65280, 65534, 65535])


@pytest.mark.parametrize("color_type,channels", [(0, 1), (2, 3), (4, 2), (6, 4)])
def test_sixteen_bit_png_is_the_high_byte_in_both_decoders(color_type, channels):
    rng = np.random.default_rng(color_type)
    values = rng.choice(SIXTEEN_BIT, (5, 7, channels)).astype(np.uint16)
    blob = png16(values, color_type)
    colour = values[..., :3] if channels >= 3 else np.repeat(values[..., :1], 3, axis=-1)
    want = (colour >> 8).astype(np.uint8)  # libpng's 16-to-8 strip, as TensorFlow does
    np.testing.assert_array_equal(tf_decode(blob), want)
    np.testing.assert_array_equal(decode.decode(blob), want)


def test_pillow_saved_sixteen_bit_grayscale_is_not_clipped():
    values = np.resize(SIXTEEN_BIT, (4, 6)).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).mode == "I;16"
    want = np.repeat((values >> 8).astype(np.uint8)[..., None], 3, axis=-1)
    np.testing.assert_array_equal(decode.decode(buffer.getvalue()), want)
    np.testing.assert_array_equal(tf_decode(buffer.getvalue()), want)


def png_bytes(width, height):
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (9, 8, 7)).save(buffer, "PNG")
    return buffer.getvalue()


def test_an_extremely_elongated_image_is_refused_before_decoding():
    blob = png_bytes(1_000_000, 1)  # about 3 KB; resized to shorter side 256: 256 x 256M
    tracemalloc.start()
    try:
        with pytest.raises(decode.ImageTooLarge, match=r"too elongated: 1000000x1 pixels"):
            decode.decode(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000
    metadata = type("Metadata", (), {"resize": 256, "input_size": 227})
    with pytest.raises(decode.ImageError, match="aspect ratio limit is 20:1"):
        decode.preprocess(png_bytes(3, 200), metadata)
    assert decode.preprocess(png_bytes(13, 256), metadata).shape == (227, 227, 3)  # 19.7:1


def test_resize_memory_follows_the_crop_not_the_input():
    image = np.random.default_rng(5).integers(0, 256, (1, 1_000_000, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        crop = center_crop_resized(image, 256, 227)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The crop is 227 x 227 x 3 float32 (0.6 MB); reading whole resized rows took 8 GB.
    assert crop.shape == (227, 227, 3) and peak < 8_000_000
    # A 1-pixel-high source: every output row is the same blend of the centre columns.
    # (At 256,000,000 columns float32 coordinates step by 8, as in TensorFlow's kernel.)
    np.testing.assert_array_equal(crop, np.broadcast_to(crop[:1], crop.shape))
    centre = image[0, 499_000:501_000]
    assert centre.min() <= crop.min() and crop.max() <= centre.max()


@pytest.mark.parametrize("shape,resize,size", [((2, 39, 3), 16, 12), ((30, 7, 3), 9, 8)])
def test_windowed_resize_equals_tensorflow_on_elongated_images(shape, resize, size):
    image = np.random.default_rng(6).integers(0, 256, shape, dtype=np.uint8)
    want = crop_tf.center_crop(crop_tf.resize_shorter(tf.constant(image), resize), size)
    np.testing.assert_allclose(center_crop_resized(image, resize, size), want, atol=1e-3)


def test_resize_of_a_strided_view_equals_that_of_its_copy():
    # Contiguous images are read by flat pixel index, views (an EXIF turn, a caller's
    # slice) through np.ix_: both must give the same numbers.
    image = np.random.default_rng(7).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    view = image.transpose(1, 0, 2)[::-1]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(
        center_crop_resized(view, 40, 32),
        center_crop_resized(np.ascontiguousarray(view), 40, 32),
    )
