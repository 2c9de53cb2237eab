"""A SHA-256 of a checkpoint file, stored inside the file as its zip comment.

``torch.save`` writes a zip archive. Its last record (end of central directory) may carry
a comment, which every zip reader, ``torch.load`` included, passes over; ``add_checksum``
puts ``vqvc-sha256:<hex digest of every byte before the comment's length field>`` there.
The file stays an ordinary torch file, and ``verify_checksum`` notices any changed byte:
in the tensors, the pickled structure, the zip headers or the checksum itself.
"""
import hashlib
import os
import struct

EOCD_SIGNATURE = b"PK\x05\x06"  # end of central directory record
EOCD_SIZE = 22  # the record without its comment; the comment's length is its last 2 bytes
ZIP_SIGNATURE = b"PK"
MARKER = b"vqvc-sha256:"
COMMENT_SIZE = len(MARKER) + 64
CHUNK = 1 << 20


class ChecksumMismatch(ValueError):
    """The file's bytes do not match the checksum stored in it."""


def _sha256_of_prefix(fh, length: int) -> str:
    digest = hashlib.sha256()
    fh.seek(0)
    left = length
    while left > 0:
        block = fh.read(min(CHUNK, left))
        if not block:
            break
        digest.update(block)
        left -= len(block)
    return digest.hexdigest()


def add_checksum(path: str) -> None:
    """Store the checksum in the zip comment of ``path`` (a fresh ``torch.save`` file, no comment yet)."""
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(size - EOCD_SIZE)
        record = fh.read(EOCD_SIZE)
        if record[:4] != EOCD_SIGNATURE or record[-2:] != b"\0\0":
            raise ValueError(f"{path}: not a zip archive without comment (torch.save output expected)")
        digest = _sha256_of_prefix(fh, size - 2)
        fh.seek(size - 2)
        fh.write(struct.pack("<H", COMMENT_SIZE) + MARKER + digest.encode("ascii"))


def verify_checksum(path: str) -> bool:
    """True if ``path`` carries a checksum and matches it; False if it carries none (an older or
    foreign file); ``ChecksumMismatch`` if a zip archive's bytes or checksum were changed."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(0)
        if fh.read(2) != ZIP_SIGNATURE:
            return False  # torch's legacy (non-zip) format: torch.load judges it
        tail_size = min(size, EOCD_SIZE + COMMENT_SIZE)
        fh.seek(size - tail_size)
        tail = fh.read(tail_size)
        if tail[-EOCD_SIZE:-EOCD_SIZE + 4] == EOCD_SIGNATURE and tail[-2:] == b"\0\0":
            return False  # a zip without comment: written without a checksum
        sealed = (tail_size == EOCD_SIZE + COMMENT_SIZE and tail[:4] == EOCD_SIGNATURE
                  and tail[EOCD_SIZE - 2:EOCD_SIZE] == struct.pack("<H", COMMENT_SIZE)
                  and tail[EOCD_SIZE:EOCD_SIZE + len(MARKER)] == MARKER)
        if not sealed:
            raise ChecksumMismatch("the end of the file is damaged (its checksum record is unreadable)")
        stored = tail[EOCD_SIZE + len(MARKER):].decode("ascii", errors="replace")
        actual = _sha256_of_prefix(fh, size - COMMENT_SIZE - 2)
    if actual != stored:
        raise ChecksumMismatch("its bytes do not match the checksum stored in it (the file was changed or damaged)")
    return True
