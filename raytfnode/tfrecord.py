"""TFRecord framing: pure functions over bytes and file-like objects.

A TFRecord file is a sequence of records, each framed as::

    uint64 length (little-endian)
    uint32 masked CRC32C of the 8 length bytes
    byte   data[length]
    uint32 masked CRC32C of the data

(the format of ``tf.io.TFRecordWriter``, uncompressed). Nothing here needs
TensorFlow, Spark or Ray.
"""
import struct

import google_crc32c

from .errors import BadInputError

_MASK_DELTA = 0xA282EAD8
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
HEADER_BYTES = 12
FOOTER_BYTES = 4


class CorruptTFRecordError(BadInputError):
    """A TFRecord file whose framing is broken: a bad length, a bad CRC, or a truncated record.

    Attributes:
      :path: the file.
      :offset: the byte offset in the file where the broken record starts.
    """

    def __init__(self, path, offset, problem):
        self.path = path
        self.offset = offset
        self.problem = problem
        super().__init__("TFRecord file {} is corrupt at byte offset {}: {}; rewrite the file or leave it out of "
                         "the input".format(path, offset, problem))

    def __reduce__(self):
        return (CorruptTFRecordError, (self.path, self.offset, self.problem))


def masked_crc32c(data):
    """The masked CRC32C of ``data`` that TFRecord framing stores."""
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data):
    """One record's bytes in TFRecord framing."""
    length = _LENGTH.pack(len(data))
    return b"".join((length, _CRC.pack(masked_crc32c(length)), data, _CRC.pack(masked_crc32c(data))))


def write_records(stream, records):
    """Writes every record of the iterable ``records`` (bytes) to the binary ``stream``.

    Returns:
      ``(records written, bytes written)``.
    """
    count = 0
    written = 0
    for data in records:
        framed = frame(data)
        stream.write(framed)
        count += 1
        written += len(framed)
    return count, written


def _read_exactly(stream, size):
    parts = []
    remaining = size
    while remaining:
        part = stream.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def iter_records(stream, path="<stream>", check_data_crc=True):
    """Yields ``(offset, data)`` for every record of a TFRecord ``stream``.

    Args:
      :stream: a binary file-like object positioned at the start of the file (``read(n)``).
      :path: the file's name, for errors.
      :check_data_crc: also check each record's data CRC (the length CRC is always checked).

    Raises:
      :CorruptTFRecordError: naming ``path`` and the record's byte offset, on a
        truncated record, a length whose CRC does not match, or data whose CRC does not match.
    """
    offset = 0
    while True:
        header = _read_exactly(stream, HEADER_BYTES)
        if not header:
            return
        if len(header) < HEADER_BYTES:
            raise CorruptTFRecordError(path, offset, "the file ends inside a record header ({} of {} bytes)".format(
                len(header), HEADER_BYTES))
        length_bytes = header[:8]
        if _CRC.unpack_from(header, 8)[0] != masked_crc32c(length_bytes):
            raise CorruptTFRecordError(path, offset, "the CRC of the record length does not match (bad length)")
        (length,) = _LENGTH.unpack(length_bytes)
        body = _read_exactly(stream, length + FOOTER_BYTES)
        if len(body) < length + FOOTER_BYTES:
            raise CorruptTFRecordError(path, offset, "the record claims {} bytes of data but the file ends after "
                                                     "{}".format(length, max(0, len(body) - FOOTER_BYTES)))
        data = body[:length]
        if check_data_crc and _CRC.unpack_from(body, length)[0] != masked_crc32c(data):
            raise CorruptTFRecordError(path, offset, "the CRC of the record data does not match")
        yield offset, data
        offset += HEADER_BYTES + length + FOOTER_BYTES
