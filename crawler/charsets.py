"""Bytes of an HTML page → text, as a browser would read them, without ever raising.

Order (the Encoding Standard's sniffing, in short): a BOM; UTF-16 by its NULs; the HTTP
header's charset; ``<meta charset>``; else the bytes themselves. Labels are read with the
WHATWG label table (``webencodings``): ``gb2312`` is GBK, ``latin1``/``iso-8859-1``/
``ascii`` are windows-1252, ``x-sjis`` is Shift_JIS, each decoded as browsers decode it.

A page that declares nothing is UTF-8 if its bytes are (or nearly are: a few stray bytes);
otherwise its encoding is detected (``charset-normalizer``) on the text of a prefix, among
the legacy encodings pages are written in, instead of taking it for windows-1252. Pure
functions on bytes: they run in the crawl worker processes, never on the node's loop.
"""

from __future__ import annotations

import codecs
import re

import charset_normalizer
import webencodings

BINARY_SNIFF_BYTES = 1024
META_SNIFF_BYTES = 2048
UTF16_MIN_PAIRS = 16
# Detection reads this much of a page (its tags removed, then at most DETECT_TEXT_BYTES),
# so a 4 MiB page costs no more than a small one: 2-25 ms measured on 16 KiB of text.
DETECT_SAMPLE_BYTES = 64 * 1024
DETECT_TEXT_BYTES = 16 * 1024
# The Encoding Standard decodes these with another decoder than Python's codec of the
# same name: GBK with gb18030's; x-user-defined maps bytes to private-use code points,
# which would index nothing, so it is read as windows-1252 (as <meta> prescan does).
DECODER_OF = {"gbk": "gb18030", "x-user-defined": "cp1252"}
WIDE_CODECS = frozenset({"utf-16", "utf-16-le", "utf-16-be"})
WESTERN = "cp1252"  # what latin1, iso-8859-1, us-ascii and windows-1252 all mean
# What detection chooses among: the legacy encodings of the Encoding Standard that pages
# are written in (the rarest ISO-8859 parts and Mac encodings left out: on short texts
# they win ties they should not), most used on the web first, as ties go to the first.
DETECTED = (
    "cp1252",
    "cp1251",
    "cp932",  # Shift_JIS as browsers decode it
    "gb18030",  # GBK, gb2312
    "cp949",  # EUC-KR as browsers decode it
    "euc_jp",
    "big5hkscs",
    "cp1250",
    "iso8859-2",
    "cp1256",
    "cp1254",
    "cp1253",
    "iso8859-7",
    "cp1255",
    "iso8859-8",
    "cp874",
    "koi8-r",
    "koi8-u",
    "cp1257",
    "cp1258",
    "iso8859-15",
    "iso8859-5",
    "iso8859-6",
    "iso8859-4",
    "iso8859-13",
    "cp866",
)
_RANK = {codecs.lookup(name).name: i for i, name in enumerate(DETECTED)}
TIE = 0.01  # chaos and coherence this close: charset-normalizer cannot tell them apart
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_\-:.]+)""", re.I)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([a-zA-Z0-9_\-:.]+)", re.I)
_TAG = re.compile(rb"<[^<>]{0,4096}>")  # no backtracking: a class without '<' and '>'
_ISO_2022_JP = re.compile(rb"\x1b(?:\$[@B]|\([BJ])")  # its escapes; the rest is 7-bit


def sniff_utf16(head: bytes) -> str | None:
    """UTF-16 without a BOM: markup is ASCII, so every other byte is a NUL."""
    pairs = len(head) // 2
    if pairs < UTF16_MIN_PAIRS:
        return None
    even = head[0 : pairs * 2 : 2].count(0)
    odd = head[1 : pairs * 2 : 2].count(0)
    if odd * 2 > pairs and even * 20 < pairs:
        return "utf-16-le"
    if even * 2 > pairs and odd * 20 < pairs:
        return "utf-16-be"
    return None


def codec_of(label: str) -> str | None:
    """The Python codec that decodes a charset label as browsers do; None if unknown."""
    encoding = webencodings.lookup(label)
    if encoding is None:
        return None
    name: str = encoding.name
    if name == "replacement":
        return name
    return DECODER_OF.get(name) or codecs.lookup(encoding.codec_info.name).name


def detect_charset(body: bytes, content_type: str | None) -> str | None:
    """The codec the page declares (BOM, UTF-16 NULs, header, <meta>), or None.

    A BOM beats the header (as in browsers). A UTF-16 label on bytes without UTF-16's
    NULs is a lie: the header is skipped, and a <meta> saying UTF-16 means UTF-8 (it
    could only be read because the bytes are ASCII-compatible).
    """
    if body.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    sniffed = sniff_utf16(body[:BINARY_SNIFF_BYTES])
    if sniffed:
        return sniffed
    if content_type:
        m = _HEADER_CHARSET.search(content_type)
        codec = codec_of(m.group(1)) if m else None
        if codec is not None and codec not in WIDE_CODECS:
            return codec
    m2 = _META_CHARSET.search(body[:META_SNIFF_BYTES])
    if m2:
        codec = codec_of(m2.group(1).decode("ascii", "replace"))
        if codec in WIDE_CODECS:
            return "utf-8"
        if codec is not None:
            return codec
    return None


def guess_charset(body: bytes) -> str:
    """The codec of a page that declares none and is not UTF-8, from its text."""
    sample = _TAG.sub(b" ", body[:DETECT_SAMPLE_BYTES])[:DETECT_TEXT_BYTES]
    if _ISO_2022_JP.search(sample):
        return "iso2022_jp"
    if sample.isascii():
        return WESTERN
    matches = list(charset_normalizer.from_bytes(sample, cp_isolation=list(DETECTED)))
    if not matches:
        return WESTERN
    best = matches[0]
    # On a short text several codecs tie; the one more pages are written in wins.
    ties = [
        m
        for m in matches
        if abs(m.chaos - best.chaos) < TIE and abs(m.coherence - best.coherence) < TIE
    ]
    chosen = min(ties, key=lambda m: _RANK.get(codecs.lookup(m.encoding).name, len(_RANK)))
    return codecs.lookup(chosen.encoding).name


def decode_html(body: bytes, content_type: str | None) -> str:
    """Decode without ever raising: bad bytes become U+FFFD, NULs are dropped."""
    return _decode(body, detect_charset(body, content_type)).replace("\x00", "")


def _decode(body: bytes, codec: str | None) -> str:
    if codec == "replacement":
        # ISO-2022-KR, HZ and the like: the Standard reads them as one U+FFFD, as their
        # escapes hide markup from filters.
        return "\ufffd"
    if codec == WESTERN:
        # Servers send a Latin-1 default in the header for pages written in UTF-8; valid
        # multi-byte UTF-8 next to never occurs in real Latin-1 text, so it wins.
        if not body.isascii():
            try:
                return body.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return body.decode(WESTERN, "replace")
    try:
        return body.decode(codec or "utf-8")
    except UnicodeDecodeError:
        pass
    if codec not in (None, "utf-8", "utf-8-sig"):
        return body.decode(codec, "replace")
    # UTF-8 that isn't: mostly valid (a few stray bytes) keeps UTF-8, so the rest of the
    # page does not turn into mojibake. Mostly invalid: declared, it is windows-1252 (a
    # server's default label on a Latin-1 page); undeclared, its text tells.
    text = body.decode("utf-8", "replace")
    bad = text.count("\ufffd")
    non_ascii = len(text) - len(text.encode("ascii", "ignore"))
    if non_ascii - bad >= bad:
        return text
    return body.decode(WESTERN if codec else guess_charset(body), "replace")
