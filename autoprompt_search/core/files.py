"""Reading the text files a user gives us: UTF-8 only, with a clear error otherwise.

Task and space YAML, data files, prompt files and result files are read as UTF-8.
A file that is not (a binary file, or text saved as Latin-1 / Windows-1252) is
refused with one :class:`UserError` naming the file and the byte offset of the first
byte that is not UTF-8, and how to fix it: no silent replacement characters in data.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError


def read_text(path: str | Path) -> str:
    """The text of ``path`` decoded as UTF-8 (a leading byte-order mark is dropped)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        byte = data[exc.start]
        if b"\x00" in data[:8192]:
            raise UserError(f"{path}: not a text file (byte {exc.start} is 0x{byte:02x}); expected "
                            "UTF-8 text") from None
        raise UserError(
            f"{path}: byte {exc.start} (0x{byte:02x}) is not UTF-8; re-save the file as UTF-8 "
            f"(e.g. iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name})"
        ) from None
