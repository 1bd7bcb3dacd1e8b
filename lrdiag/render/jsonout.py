"""JSON output: the output model as it is, the stable contract for other tools.

The text is json.dumps(doc, indent=2, allow_nan=False), byte for byte. Python's indenting encoder is pure
Python, a call and a piece of text a value (a run of a million metrics: 10 s, and 2 GB for the pieces); here a
container of plain values (a metric's summary) is written whole by the C encoder, its separator carrying the
indent, and the text is handed on in parts.
"""

from __future__ import annotations

import json
from functools import lru_cache
from itertools import repeat
from json.encoder import c_make_encoder, encode_basestring_ascii

INDENT = "  "
PART = 4096  # pieces of text joined into one part
_CONTAINERS = (dict, list, tuple)


def render(doc: dict) -> str:
    parts: list[str] = []
    _encode(doc, parts.append)
    return "".join(parts)


def write(doc: dict, out) -> None:
    """render(doc) written to the text stream `out` a part at a time: the JSON of a run of a million metrics
    (280 MB) is never whole in memory, nor encoded a second time whole."""
    _encode(doc, out.write)


def _encode(doc: dict, emit) -> None:
    pieces: list[str] = []

    def flush() -> None:
        emit("".join(pieces))
        pieces.clear()

    if _nested(doc):
        _write(doc, 0, pieces, flush)
    else:
        pieces.append(_plain(0)(doc))
    flush()


def _write(value, depth: int, pieces: list[str], flush) -> None:
    """A container holding containers, as the indenting encoder writes it at `depth`."""
    inner, close, plain = "\n" + INDENT * (depth + 1), "\n" + INDENT * depth, _plain(depth + 1)
    if isinstance(value, dict) and not all(isinstance(key, str) for key in value):
        # keys that are numbers, booleans or None: as rare as they are fiddly to convert; json.dumps writes them
        pieces.append(json.dumps(value, indent=INDENT, allow_nan=False).replace("\n", close))
        return
    items = value.items() if isinstance(value, dict) else zip(repeat(None), value)
    pieces.append("{" if isinstance(value, dict) else "[")
    for number, (key, item) in enumerate(items):
        head = ("," if number else "") + inner + ("" if key is None else encode_basestring_ascii(key) + ": ")
        if _nested(item):
            pieces.append(head)
            _write(item, depth + 1, pieces, flush)
        else:
            pieces.append(head + plain(item))
        if len(pieces) >= PART:
            flush()
    pieces.append(close + ("}" if isinstance(value, dict) else "]"))


def _nested(value) -> bool:
    """Whether `value` is a container holding a container."""
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, _CONTAINERS):
        return False
    return any(map(isinstance, value, repeat(_CONTAINERS)))


@lru_cache(maxsize=None)
def _plain(depth: int):
    """A function that writes a value holding no container, at `depth`, as the indenting encoder does: the C
    encoder's items apart by a separator that holds the newline and the indent, the brackets on lines of their own."""
    inner = "\n" + INDENT * (depth + 1)
    encoder = json.JSONEncoder(allow_nan=False, separators=("," + inner, ": "))
    if c_make_encoder is not None:  # what encoder.encode makes anew at every call: made once
        encode = c_make_encoder(None, encoder.default, encode_basestring_ascii, None, ": ", "," + inner, False, False,
                                False)
    else:
        encode = lambda value, _: (encoder.encode(value),)  # noqa: E731 - a Python without json's C part

    def write(value) -> str:
        text = "".join(encode(value, 0))
        if isinstance(value, _CONTAINERS) and value:
            return text[0] + inner + text[1:-1] + "\n" + INDENT * depth + text[-1]
        return text

    return write
