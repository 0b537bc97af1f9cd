"""Is this file an image the pipeline can use, and what is it? One function, used by the Beam
executor and by the benchmark's plain loop.

The bytes are never re-encoded. An image is accepted only if the decoder that Transform and the
served model run on these very bytes (`tf.io.decode_image(channels=3, expand_animations=False)`,
see components/transform/preprocessing.py) decodes it: Pillow alone is not enough, it reads
1-bit BMP, animated WebP and TIFF that TensorFlow's decoder refuses, which would fail the
Transform step hours later instead of quarantining one file now.

EXIF orientation is recorded, not applied: the served model decodes raw request bytes with the
same TensorFlow op, which ignores EXIF, so applying the rotation at training only would train on
pixels the server never sees. Recording keeps train and serve consistent and makes the affected
photos visible (feature `exif_orientation`, count in the quarantine summary).
"""
from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass, field

from PIL import Image
from tlpipe.components.ingest.listing import DANGLING_SYMLINK, NOT_A_REGULAR_FILE, SYMLINK_LOOP

EXIF_ORIENTATION_TAG = 0x0112
# Pillow warns above ~89 MP; data.max_pixels decides here (set once: catch_warnings is not
# thread-safe, and Beam may run this on several threads).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Quarantine reasons. Every rejected input carries exactly one.
NOT_AN_IMAGE = "not_an_image"          # extension not in data.extensions (.txt, .DS_Store, ...)
DIRECTORY = "directory"                # a folder where the pattern expects image files
EMPTY_FILE = "empty_file"              # zero bytes
UNREADABLE = "unreadable"              # I/O error (permissions, vanished while listing)
MISSING_FILE = "missing_file"          # a manifest row naming a file that does not exist
BAD_MANIFEST_ROW = "bad_manifest_row"  # not `path,label[,split]`, or an unknown split
UNDECODABLE = "undecodable"            # image extension, but not an image format at all
TRUNCATED = "truncated"                # a known format whose data ends early or is damaged
UNSUPPORTED = "unsupported_by_decoder"  # Pillow reads it, TensorFlow's decoder does not
TOO_MANY_PIXELS = "too_many_pixels"    # width x height above data.max_pixels
DUPLICATE = "duplicate"                # byte-identical to a kept file of the same class
LABEL_CONFLICT = "label_conflict"      # byte-identical files (or one path) under different labels

# DANGLING_SYMLINK, SYMLINK_LOOP, NOT_A_REGULAR_FILE (a FIFO, socket, device): see listing.py.
REASONS = (NOT_AN_IMAGE, DIRECTORY, EMPTY_FILE, UNREADABLE, MISSING_FILE, BAD_MANIFEST_ROW,
           DANGLING_SYMLINK, SYMLINK_LOOP, NOT_A_REGULAR_FILE,
           UNDECODABLE, TRUNCATED, UNSUPPORTED, TOO_MANY_PIXELS, DUPLICATE, LABEL_CONFLICT)
# Not data loss, so not counted in the rejected share (data.max_rejected_share): files that are
# not images by name, folders, and duplicates whose content is kept once.
NOT_COUNTED = frozenset({NOT_AN_IMAGE, DIRECTORY, DUPLICATE})


@dataclass(frozen=True)
class ImageInfo:
    height: int
    width: int
    channels: int      # as stored: 1 gray/palette, 2 gray+alpha, 3 RGB, 4 RGBA/CMYK
    format: str        # from the bytes, not the extension: jpeg, png, gif, bmp, webp
    orientation: int   # EXIF orientation 1-8, 0 when absent (recorded, not applied)
    sha256: str
    notes: tuple[str, ...] = field(default=())  # accepted with a conversion at decode time


@dataclass(frozen=True)
class Problem:
    reason: str
    detail: str


# Signatures of the formats TensorFlow decodes: bytes starting like one of these but unreadable
# are a damaged image (truncated), not a non-image (undecodable).
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


def _known_signature(data: bytes) -> bool:
    return data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _short(message: str) -> str:
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)
    return re.sub(r"\s*\[Op:\w+\]", "", message).strip()[:200]


def _notes(img: Image.Image, frames: int, orientation: int) -> tuple[str, ...]:
    mode = img.mode
    notes = []
    if mode == "CMYK":
        notes.append("cmyk")
    if mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
        notes.append("grayscale")
    if mode.startswith("I;16") or mode == "I":
        notes.append("16_bit")
    if "A" in img.getbands() or "transparency" in img.info:
        notes.append("alpha")
    if mode == "P":
        notes.append("palette")
    if frames > 1:
        notes.append("animated_first_frame_used")
    if orientation not in (0, 1):
        notes.append("exif_orientation_not_applied")
    return tuple(notes)


def _tf_decodes(data: bytes) -> str:
    """'' when TensorFlow's decoder (Transform's and serving's) reads the bytes, else its error."""
    import tensorflow as tf

    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
        return ""
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as err:
        lines = str(err).strip().splitlines()
        return _short(lines[-1] if lines else type(err).__name__)


def inspect_image(data: bytes, max_pixels: int) -> ImageInfo | Problem:
    """Describes an image from its bytes, or says why it cannot be used."""
    if not data:
        return Problem(EMPTY_FILE, "0 bytes")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        return Problem(TOO_MANY_PIXELS, str(err)[:200])
    except Exception as err:  # Pillow raises many types on non-images
        if _known_signature(data):
            return Problem(TRUNCATED, f"image signature but unreadable header: {err}"[:200])
        return Problem(UNDECODABLE, "not a known image format")
    with img:
        width, height = img.size
        if width * height > max_pixels:
            return Problem(TOO_MANY_PIXELS,
                           f"{width}x{height} = {width * height} pixels > {max_pixels}")
        fmt = (img.format or "").lower()
        try:
            frames = int(getattr(img, "n_frames", 1))
            orientation = int(img.getexif().get(EXIF_ORIENTATION_TAG, 0) or 0)
        except Exception as err:  # a broken frame table or EXIF block
            return Problem(TRUNCATED if "truncated" in str(err) else UNDECODABLE,
                           f"{fmt}: {type(err).__name__}: {err}"[:200])
        if orientation not in range(0, 9):
            orientation = 0
        failure = _tf_decodes(data)
        if failure:
            try:
                img.seek(0)
                img.load()
            except Exception as err:
                reason = TRUNCATED if "truncated" in str(err).lower() else UNDECODABLE
                return Problem(reason, f"{fmt}: {err}"[:200])
            return Problem(UNSUPPORTED, f"{fmt} {img.mode}: {failure}")
        if fmt == "bmp" and img.mode == "P":  # Pillow says "L" for a grey-ramp palette
            return Problem(UNSUPPORTED, "bmp P: a palette (indexed-colour) BMP, which TensorFlow's decoder reads as "
                           "grey levels (palette indices), ignoring the colours; save it as PNG or 24-bit BMP")
        return ImageInfo(height=height, width=width, channels=len(img.getbands()),
                         format=fmt, orientation=orientation,
                         sha256=hashlib.sha256(data).hexdigest(),
                         notes=_notes(img, frames, orientation))
