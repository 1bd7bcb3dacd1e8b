"""Where a reader stopped in a log that is still being written, and the whole records it has so far.

A `Tail` keeps, for one file, the bytes of its whole records read so far and the offset they end
at; `advance()` reads only the bytes written since and keeps what ends in a whole record (a TFRecord
whose length and footer fit, a line ending in a newline). What is cut short at the end is "not yet":
it is read again at the next call, once the writer has finished it, and never a problem. A whole-file
JSON document (Hugging Face's trainer_state.json, a Keras history), which its writer rewrites at each
save, is taken again only when it parses and its log grew (trainer_state: the length of `log_history`).
The readers then parse what the tails hold: reading a finished file is one `advance()`, and the series,
problems and findings are those of `lrdiag analyze` on the same bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lrdiag.ingest import csvlog, files, jsonlog, tfevents
from lrdiag.ingest.tfrecord import FOOTER, HEADER, Buffer, frame, walk

_DOCUMENTS = {"hf_trainer_state", "keras_history_json"}


class Tail:
    """One file of a live run: `data` is every whole record of it read so far."""

    def __init__(self, path: Path, reader) -> None:
        self.path = path
        self.reader = reader
        self.data = b""
        self._document: bool | None = None  # a whole-file JSON document? Known once the file has a head
        self._seen: tuple[int, int] | None = None  # (size, mtime) when last looked at
        self._entries = -1  # a document's log length when last taken
        self.added = b""  # the whole records the last advance() added (a document: all of it)
        self.replaced = False  # the last advance() read the file again from its start

    def advance(self) -> bool:
        """Read what was written since the last call; True when whole records were added (or the file
        was replaced: shorter than what was read, or a CSV whose header changed)."""
        try:
            status = os.stat(self.path)
        except OSError:
            return False  # gone for now (rotated, or being replaced): the bytes held stay as they were
        seen = (status.st_size, status.st_mtime_ns)
        if seen == self._seen:
            return False
        self._seen = seen
        if self._document is None:
            head = _head(self.path)
            if not head.strip():
                return False  # created, nothing in it yet
            self._document = self.reader is jsonlog and jsonlog._detect(self.path.name, head) in _DOCUMENTS
        if self._document:
            return self._take_document()
        try:
            with files.open_regular(self.path) as handle:
                self.replaced = status.st_size < len(self.data) or not self._same_start(handle)
                if self.replaced:
                    self.data = b""  # rewritten from scratch (Lightning's CSVLogger does it when a metric appears)
                handle.seek(len(self.data))
                new = handle.read()
        except OSError:
            return False
        whole = _whole(new, self.reader)
        if not whole:
            return False
        self.added = new[:whole]
        self.data += self.added
        return True

    def _same_start(self, handle) -> bool:
        """The file still begins with what was read of it (a CSV's header line, checked at each growth)."""
        if not self.data:
            return True
        first_line = self.data[: self.data.find(b"\n") + 1] or self.data[:64]
        handle.seek(0)
        return handle.read(len(first_line)) == first_line

    def _take_document(self) -> bool:
        try:
            data = files.read_bytes(self.path)
            document = json.loads(data)
        except (OSError, ValueError):
            return False  # half rewritten: its writer is not done yet
        if isinstance(document, dict) and isinstance(document.get("log_history"), list):
            entries = len(document["log_history"])
        else:
            entries = len(data)  # a Keras history: any change is new epochs
        if entries == self._entries:
            return False
        self._entries, self.data, self.added = entries, data, data
        return True


def _head(path: Path) -> bytes:
    try:
        return files.read_bytes(path, 64 * 1024)
    except OSError:
        return b""


def _whole(new: bytes, reader) -> int:
    """How many leading bytes of `new` (written after a whole record, or at the file's start) end in a whole record."""
    if reader is tfevents:
        stop = walk(Buffer.from_bytes(new), 0)[2] if new else 0
        if stop + HEADER <= len(new):
            # The walk stopped at a length that does not fit in what is written. A record still being
            # written is the last one; a bad length checksum, or a length (2^60, say) with intact records
            # after it, is damage: framed as the reader frames it, resuming after the damage, up to the end
            # of the last intact record (`new` starts at a record boundary, so it frames on its own).
            records = frame(Buffer.from_bytes(new))
            if records.data_starts.size:
                return max(stop, int(records.data_starts[-1] + records.lengths[-1]) + FOOTER)
        return stop
    if reader in (csvlog, jsonlog):
        return new.rfind(b"\n") + 1
    return len(new)
