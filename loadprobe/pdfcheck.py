"""Is a certificate a real PDF about the right resident? A small, strict reader.

The reference application (and, by contract, the real system) writes the
resident's id and name into the PDF's document information dictionary
(/Title, /Subject, /Keywords), because the page text itself is CID-encoded.
This module finds that dictionary through the trailer and decodes its
literal strings (escapes, octal codes, UTF-16 with a byte-order mark), so
the terminal can check a certificate without a PDF library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_INFO_REF = re.compile(rb"/Info\s+(\d+)\s+(\d+)\s+R")
_ESCAPES = {
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
    ord("b"): b"\b",
    ord("f"): b"\f",
}


class PdfError(ValueError):
    """Not a well-formed PDF, or not the document expected."""


@dataclass(frozen=True)
class PdfInfo:
    title: str
    subject: str
    keywords: str
    pages: int


def literal_string(data: bytes, start: int) -> tuple[bytes, int]:
    """The literal string whose '(' is at `start`: its bytes and the index after ')'."""
    if data[start : start + 1] != b"(":
        raise PdfError("expected a literal string")
    out = bytearray()
    depth, i = 1, start + 1
    while i < len(data):
        ch = data[i]
        if ch == 0x5C:  # backslash
            nxt = data[i + 1 : i + 2]
            if not nxt:
                break
            octal = re.match(rb"[0-7]{1,3}", data[i + 1 : i + 4])
            if octal:
                out.append(int(octal.group(), 8) & 0xFF)
                i += 1 + len(octal.group())
                continue
            if nxt in (b"\n", b"\r"):  # a line continuation
                i += 2 + (nxt == b"\r" and data[i + 2 : i + 3] == b"\n")
                continue
            out += _ESCAPES.get(nxt[0], nxt)
            i += 2
            continue
        if ch == 0x28:
            depth += 1
        elif ch == 0x29:
            depth -= 1
            if depth == 0:
                return bytes(out), i + 1
        out.append(ch)
        i += 1
    raise PdfError("unterminated literal string")


def text_string(raw: bytes) -> str:
    """A PDF text string: UTF-16BE after a BOM, else PDFDocEncoding (Latin-1 here)."""
    if raw.startswith(b"\xfe\xff"):
        return raw[2:].decode("utf-16-be", errors="replace")
    return raw.decode("latin-1")


def read_info(pdf: bytes) -> PdfInfo:
    """The document information of a PDF; raises PdfError if it is not a PDF."""
    if not pdf.startswith(b"%PDF-1."):
        raise PdfError("not a PDF (no %PDF-1. header)")
    if not pdf.rstrip().endswith(b"%%EOF"):
        raise PdfError("truncated PDF (no %%EOF at the end)")
    trailer_at = pdf.rfind(b"trailer")
    ref = _INFO_REF.search(pdf, trailer_at if trailer_at >= 0 else 0)
    if ref is None:
        raise PdfError("PDF has no document information (/Info)")
    head = re.search(rb"(?<![0-9])" + ref.group(1) + rb"\s+" + ref.group(2) + rb"\s+obj\b", pdf)
    if head is None:
        raise PdfError("PDF /Info points at a missing object")
    end = pdf.find(b"endobj", head.end())
    if end < 0:
        raise PdfError("PDF /Info object is not closed")
    body = pdf[head.end() : end]
    fields: dict[bytes, str] = {}
    for key in (b"Title", b"Subject", b"Keywords"):
        match = re.search(rb"/" + key + rb"\s*\(", body)
        if match:
            raw, _ = literal_string(body, match.end() - 1)
            fields[key] = text_string(raw)
    pages = len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf))
    return PdfInfo(
        title=fields.get(b"Title", ""),
        subject=fields.get(b"Subject", ""),
        keywords=fields.get(b"Keywords", ""),
        pages=pages,
    )


def check_certificate(
    pdf: bytes, *, resident_id: str, family_name: str, given_name: str, number: str | None
) -> str | None:
    """None when `pdf` is a one-or-more-page certificate of that resident (and,
    if given, with that certificate number); else the reason it is not."""
    try:
        info = read_info(pdf)
    except PdfError as exc:
        return str(exc)
    if info.pages < 1:
        return "PDF has no page"
    name = f"{family_name} {given_name}"
    words, wanted = info.title.split(), name.split()
    if not any(words[i : i + len(wanted)] == wanted for i in range(len(words))):
        return f"certificate names {info.title!r}, not {name!r}"
    if resident_id not in info.subject:
        return f"certificate is not about resident {resident_id}"
    if number and number not in info.keywords:
        return f"certificate does not carry its number {number}"
    return None
