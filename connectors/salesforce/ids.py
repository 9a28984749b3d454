"""Salesforce record ids: the 15→18 character checksum and validation.

Salesforce ids are 15 case-sensitive base-62 characters (3-character key prefix naming the
object, then pod and counter). The API returns the 18-character form, whose last three
characters encode which of the first 15 are upper case, so that tools that compare ids
case-insensitively (spreadsheets, some databases) still tell them apart. Users paste either
form, so everything that accepts an id normalises it with :func:`to_18` first.
"""

from __future__ import annotations

import string

__all__ = ["BASE62", "is_salesforce_id", "make_id", "to_18"]

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_CHECKSUM_ALPHABET = string.ascii_uppercase + "012345"
_ID_CHARS = frozenset(BASE62)


def _checksum(id15: str) -> str:
    """Three characters: for each 5-character chunk, a bit per upper-case letter."""
    suffix = []
    for start in (0, 5, 10):
        bits = 0
        for position, char in enumerate(id15[start : start + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << position
        suffix.append(_CHECKSUM_ALPHABET[bits])
    return "".join(suffix)


def to_18(record_id: str) -> str:
    """Return the 18-character form of a 15- or 18-character Salesforce id.

    An 18-character id is checked and returned unchanged; anything else raises ``ValueError``
    so that a typo is reported where it enters rather than as "record not found" later.
    """
    if len(record_id) not in (15, 18) or not set(record_id) <= _ID_CHARS:
        raise ValueError(f"not a Salesforce id (15 or 18 letters and digits): {record_id!r}")
    expected = record_id[:15] + _checksum(record_id[:15])
    if len(record_id) == 18 and record_id != expected:
        raise ValueError(f"Salesforce id checksum does not match: {record_id!r}")
    return expected


def is_salesforce_id(value: str) -> bool:
    """True for a well-formed 15-character id or an 18-character id with a valid checksum."""
    try:
        to_18(value)
    except ValueError:
        return False
    return True


def make_id(key_prefix: str, sequence: int, *, pod: str = "5g", reserved: str = "0") -> str:
    """Build a deterministic 18-character id: key prefix, pod, reserved char, 9-char counter.

    The sandbox numbers records with it so that a generator seeded the same way yields the
    same ids run after run.
    """
    if len(key_prefix) != 3 or len(pod) != 2 or len(reserved) != 1:
        raise ValueError("key prefix is 3 characters, pod 2 and reserved 1")
    if not 0 <= sequence < 62**9:
        raise ValueError(f"sequence out of range: {sequence}")
    digits = []
    for _ in range(9):
        sequence, remainder = divmod(sequence, 62)
        digits.append(BASE62[remainder])
    return to_18(key_prefix + pod + reserved + "".join(reversed(digits)))
