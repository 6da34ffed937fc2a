"""Is a media file whole? Decoders read truncated files without complaint, so ask the container.

Most containers say how long they are in bytes or mark their end; a cut file breaks that promise:
- RIFF (WAV, AVI, WebP) and AIFF: the size in the first chunk header against the file's size.
- Matroska / WebM: the Segment element's size; a live-streamed file leaves it unknown (then nothing is promised).
- MP4 / MOV / M4A: every top-level box's size must fit in the file.
- Ogg (Vorbis, Opus, FLAC-in-Ogg): the last page must be whole and flagged end-of-stream.
- GIF: the trailer byte.
- MP3 with a Xing / Info frame (LAME and FFmpeg write one): the stream's byte count.
Other formats (MP3 without that frame, ADTS AAC, MPEG-TS, FLAC, ...) promise a duration at most; `check_duration` compares the decoded
length with it. A header known to lie does not count as a promise: RIFF files written through a pipe leave the size
zero (or 0xFFFFFFFF) and a wrong duration, and are accepted as decoded.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ..errors import OmniLabInputError

WHOLE, UNKNOWN, UNCHECKED = "whole", "unknown", "unchecked"


def check_structure(path: Path, kind: str) -> str:
    """WHOLE (the container's own accounting adds up), UNKNOWN (it promises nothing, e.g. streamed) or UNCHECKED
    (a format this module does not read: compare durations instead); raises `OmniLabInputError` when cut short."""
    try:
        return _check_structure(path, kind)
    except (struct.error, IndexError, OSError):  # a header too short or damaged to parse
        raise _truncated(path, kind, "its container header is cut short or damaged") from None


def _check_structure(path: Path, kind: str) -> str:
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        head = file.read(64)
        if len(head) < 12:
            raise _truncated(path, kind, f"it holds only {len(head)} bytes")
        if head[:4] in (b"RIFF", b"RF64", b"FORM"):
            return _chunked(path, kind, head, size)
        if head[:4] == b"\x1a\x45\xdf\xa3":
            return _matroska(path, kind, file, size)
        if head[4:8] == b"ftyp":
            return _iso_boxes(path, kind, file, size)
        if head[:4] == b"OggS":
            return _ogg(path, kind, file, size)
        if head[:3] == b"ID3" or (head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
            return _mp3(path, kind, file, size)
        if head[:4] == b"GIF8":
            file.seek(-1, os.SEEK_END)
            if file.read(1) != b";":
                raise _truncated(path, kind, "it ends before the GIF trailer")
            return WHOLE
    return UNCHECKED


def check_duration(path: Path, kind: str, declared: float | None, decoded: float, interval: float = 0.0) -> None:
    """For formats whose structure says nothing: the decoded seconds must reach the declared ones (within two frame
    intervals, a tenth of a second and 2%, for encoder padding and rounding)."""
    if not declared or declared <= 0:
        return
    slack = max(2 * interval, 0.1) + 0.02 * declared
    if decoded < declared - slack:
        raise _truncated(path, kind, f"its header says {declared:.2f} s but only {decoded:.2f} s decode")


def _truncated(path: Path, kind: str, why: str) -> OmniLabInputError:
    return OmniLabInputError(f"{kind} {str(path)!r} is truncated: {why}. Re-download or re-export it.")


def _chunked(path: Path, kind: str, head: bytes, size: int) -> str:
    declared = struct.unpack(">I" if head[:4] == b"FORM" else "<I", head[4:8])[0]
    if head[:4] == b"RF64" or declared in (0, 0xFFFFFFFF):
        return UNKNOWN  # written through a pipe (or 64-bit sizes elsewhere): no promise to check
    if declared + 8 > size:
        raise _truncated(path, kind, f"its header declares {declared + 8} bytes but the file holds {size}")
    return WHOLE


def _vint(file, strip_marker: bool) -> tuple[int | None, int]:
    """An EBML variable-length integer: (value, or None for "unknown" sizes; bytes read)."""
    first = file.read(1)
    if not first:
        return None, 0
    byte = first[0]
    length = 1
    while length <= 8 and not byte & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        return None, 1
    rest = file.read(length - 1)
    value = (byte & (0xFF >> length)) if strip_marker else byte
    for extra in rest:
        value = (value << 8) | extra
    unknown = strip_marker and value == (1 << (7 * length)) - 1
    return (None if unknown else value), length


def _matroska(path: Path, kind: str, file, size: int) -> str:
    file.seek(4)
    header_size, _ = _vint(file, strip_marker=True)
    if header_size is None:
        return UNKNOWN
    file.seek(header_size, os.SEEK_CUR)
    element, _ = _vint(file, strip_marker=False)
    if element != 0x18538067:  # Segment
        return UNCHECKED
    segment_size, _ = _vint(file, strip_marker=True)
    if segment_size is None:
        return UNKNOWN  # live-streamed: the size was never written
    if file.tell() + segment_size > size:
        raise _truncated(
            path, kind, f"its Segment declares {file.tell() + segment_size} bytes but the file holds {size}"
        )
    return WHOLE


def _iso_boxes(path: Path, kind: str, file, size: int) -> str:
    position = 0
    while position + 8 <= size:
        file.seek(position)
        box_size, box_type = struct.unpack(">I4s", file.read(8))
        if box_size == 1:
            extended = file.read(8)
            if len(extended) < 8:
                break
            box_size = struct.unpack(">Q", extended)[0]
        elif box_size == 0:  # runs to the end of the file
            return WHOLE
        if box_size < 8:
            raise _truncated(path, kind, f"its {box_type!r} box has an impossible size {box_size}")
        if position + box_size > size:
            name = box_type.decode("latin-1")
            raise _truncated(path, kind, f"its {name!r} box declares {box_size} bytes but {size - position} remain")
        position += box_size
    if position < size:
        raise _truncated(path, kind, f"it ends inside a box header at byte {position}")
    return WHOLE


def _ogg(path: Path, kind: str, file, size: int) -> str:
    tail = min(size, 1 << 16)
    file.seek(size - tail)
    data = file.read(tail)
    start = data.rfind(b"OggS")
    while start >= 0:
        page = data[start:]
        if len(page) >= 27:
            segments = page[26]
            if len(page) >= 27 + segments:
                end = 27 + segments + sum(page[27 : 27 + segments])
                if end > len(page):
                    raise _truncated(path, kind, "its last Ogg page is cut short")
                if not page[5] & 0x04:
                    raise _truncated(path, kind, "its last Ogg page is not marked end-of-stream")
                return WHOLE
        start = data.rfind(b"OggS", 0, start)  # a capture pattern too close to the end to be a page
    raise _truncated(path, kind, "no whole Ogg page at its end")


def _mp3(path: Path, kind: str, file, size: int) -> str:
    file.seek(0)
    start = 0
    header = file.read(10)
    if header[:3] == b"ID3":  # skip the ID3v2 tag: its size is four 7-bit bytes
        start = 10 + ((header[6] & 0x7F) << 21 | (header[7] & 0x7F) << 14 | (header[8] & 0x7F) << 7 | header[9] & 0x7F)
    file.seek(start)
    first_frame = file.read(200)
    for tag in (b"Xing", b"Info"):
        at = first_frame.find(tag)
        if at < 0 or at + 16 > len(first_frame):
            continue
        flags = struct.unpack(">I", first_frame[at + 4 : at + 8])[0]
        if not flags & 0x02:  # no byte count
            return UNCHECKED
        field = at + 8 + (4 if flags & 0x01 else 0)
        declared = struct.unpack(">I", first_frame[field : field + 4])[0]
        if start + declared > size:
            raise _truncated(
                path, kind, f"its Xing header declares {declared} bytes of MP3 frames but the file holds {size - start}"
            )
        return WHOLE
    return UNCHECKED
