"""Rendering: raw bytes -> `Page` (title, url, wrapped text lines, numbered links).

Decoding, size caps, binary detection and repair of bad HTML happen here, once. The page model
is what the browser scrolls, finds in and quotes from, and what the page cache stores; its id
is the sha256 of its canonical JSON, so a recorded episode can prove it saw the same page.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit, urlunsplit

import lxml.etree
import lxml.html

from env.errors import PageTooLarge, UnsupportedContent
from env.limits import RenderLimits
from env.observation import escape, escape_inline, image_marker, link_marker, valid_text

# ----------------------------------------------------------------------------- page model


@dataclass(frozen=True)
class Link:
    url: str
    text: str


@dataclass(frozen=True)
class Page:
    """A rendered page. `lines` hold link markers `【i†text(†domain)】` whose i indexes `links`."""

    url: str
    title: str
    lines: tuple[str, ...]
    links: tuple[Link, ...] = ()
    kind: str = "page"
    """'page' for documents, 'search' for a results page (its title reads 'Search results for: q')."""
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    """Free-form facts about how the page was made (source, content type); not part of the id."""

    def to_dict(self) -> dict:
        return {
            "url": self.url,
            "title": self.title,
            "kind": self.kind,
            "lines": list(self.lines),
            "links": [[link.url, link.text] for link in self.links],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Page:
        return cls(
            url=data["url"],
            title=data["title"],
            kind=data.get("kind", "page"),
            lines=tuple(data["lines"]),
            links=tuple(Link(u, t) for u, t in data["links"]),
        )

    @property
    def id(self) -> str:
        """Content address: sha256 of the canonical JSON of what the model can see."""
        blob = json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(blob.encode("utf-8")).hexdigest()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


# ----------------------------------------------------------------------------- decoding

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_\-:.]+)", re.I)


def looks_binary(raw: bytes) -> bool:
    """True for bytes that are not text: NULs or many control characters in the first 4 KiB."""
    head = raw[:4096]
    if not head:
        return False
    if head.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        return False
    if b"\x00" in head:
        return True
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return controls / len(head) > 0.05


def decode(raw: bytes, content_type: str | None = None) -> str:
    """Bytes -> text: header charset, then BOM, then <meta charset>, then UTF-8, then a guess."""
    candidates: list[str] = []
    if content_type and (m := _HEADER_CHARSET.search(content_type)):
        candidates.append(m.group(1))
    if raw.startswith(b"\xef\xbb\xbf"):
        candidates.insert(0, "utf-8-sig")
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        candidates.insert(0, "utf-16")
    if m := _META_CHARSET.search(raw[:8192]):
        candidates.append(m.group(1).decode("ascii", "replace"))
    candidates.append("utf-8")
    for enc in candidates:
        try:
            return raw.decode(enc)
        except (LookupError, UnicodeDecodeError):
            continue
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(raw[:200_000]).best()
        if best is not None and best.encoding:
            return raw.decode(best.encoding, errors="replace")
    except ImportError:  # pragma: no cover - charset_normalizer ships with httpx/requests
        pass
    return raw.decode("cp1252", errors="replace")


# ----------------------------------------------------------------------------- wrapping

_WS = re.compile(r"\s+")
_MARKER = re.compile("【[^】]*】")


def wrap(text: str, width: int) -> list[str]:
    """Greedy word wrap that never splits a link marker (markers may contain spaces)."""
    text = _WS.sub(" ", text).strip()
    if not text:
        return []
    protected = _MARKER.sub(lambda m: m.group(0).replace(" ", "\x00"), text)
    lines: list[str] = []
    current = ""
    for word in protected.split(" "):
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(current)
    return [line.replace("\x00", " ") for line in lines]


# ----------------------------------------------------------------------------- HTML walker

_SKIP = {
    "script",
    "style",
    "noscript",
    "template",
    "svg",
    "math",
    "iframe",
    "object",
    "embed",
    "canvas",
    "head",
    "select",
    "button",
    "input",
    "textarea",
    "form",
    "video",
    "audio",
}
_BLOCK = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "aside",
    "nav",
    "blockquote",
    "pre",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "table",
    "thead",
    "tbody",
    "tfoot",
    "tr",
    "figure",
    "figcaption",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "address",
    "details",
    "summary",
    "caption",
    "center",
    "body",
    "html",
    "li",
}
# Table cells are inline (a row is one line, cells separated by " | "); a row is a block.
_SKIP_SCHEMES = ("javascript:", "mailto:", "tel:", "data:")


class _Renderer:
    """Walks an lxml tree into blocks of inline text with link and image markers."""

    def __init__(self, base_url: str, limits: RenderLimits):
        self.base_url = base_url
        self.limits = limits
        self.links: list[Link] = []
        self.blocks: list[str] = []
        self.current: list[str] = []

    def flush(self, prefix: str = "") -> None:
        text = _WS.sub(" ", "".join(self.current)).strip()
        if text:
            self.blocks.append(prefix + text)
        self.current = []

    def text(self, s: str | None) -> None:
        if s:
            self.current.append(escape(s))

    def link(self, el: lxml.html.HtmlElement) -> bool:
        """Render <a href> as a marker; False when it is not a followable link."""
        href = (el.get("href") or "").strip()
        if not href or href.startswith("#") or href.lower().startswith(_SKIP_SCHEMES):
            return False
        if len(self.links) >= self.limits.max_links:
            return False
        url = absolute_url(self.base_url, href)
        if url is None:
            return False
        content = el.text_content()
        label = _WS.sub(" ", content).strip()
        if not label:
            img = el.find(".//img")
            label = (img.get("alt") or "").strip() if img is not None else ""
        if not label:
            return False
        # Keep the whitespace the anchor text had at its edges: `<a>reported </a>WeWork` must
        # not read as one word once the marker is replaced by its text.
        before = " " if content[:1].isspace() else ""
        after = " " if content[-1:].isspace() else ""
        marker = link_marker(len(self.links), label, url, self.base_url)
        self.current.append(before + marker + after)
        self.links.append(Link(url, label))
        return True

    def walk(self, el: lxml.html.HtmlElement) -> None:
        tag = el.tag if isinstance(el.tag, str) else ""
        tag = tag.lower().rpartition("}")[2]
        if tag in _SKIP or not tag:  # not tag: comments and processing instructions
            self.text(el.tail)
            return
        if tag in {"br"}:
            self.flush()
            self.text(el.tail)
            return
        if tag == "img":
            alt = (el.get("alt") or "").strip()
            if alt:
                self.current.append(" " + image_marker(alt) + " ")
            self.text(el.tail)
            return
        if tag == "a" and self.link(el):
            self.text(el.tail)
            return
        block = tag in _BLOCK
        if block:
            self.flush()
        self.text(el.text)
        for child in el:
            self.walk(child)
        if tag in {"td", "th"}:
            self.current.append(" | ")
            self.text(el.tail)
            return
        if block:
            prefix = "- " if tag == "li" else ("# " if tag in {"h1", "h2", "h3"} else "")
            self.flush(prefix)
        self.text(el.tail)


def absolute_url(base: str, href: str) -> str | None:
    """Resolve a link against the page URL; None for links that cannot be followed."""
    try:
        url = urljoin(base, href)
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in {"http", "https", "zim", "file"}:
        return None
    return urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))


def _parse(html: str) -> lxml.html.HtmlElement | None:
    html = html.strip()
    if not html:
        return None
    try:
        return lxml.html.document_fromstring(html)
    except (lxml.etree.ParserError, ValueError):
        try:  # e.g. an XML declaration with an encoding in a str
            return lxml.html.document_fromstring(html.encode("utf-8"))
        except (lxml.etree.ParserError, ValueError):
            return None


def _title_of(tree: lxml.html.HtmlElement | None) -> str:
    if tree is None:
        return ""
    for path in (".//title", ".//h1"):
        el = tree.find(path)
        if el is not None:
            t = _WS.sub(" ", el.text_content()).strip()
            if t:
                return t
    return ""


def _finish(
    url: str,
    title: str,
    blocks: Sequence[str],
    links: Sequence[Link],
    limits: RenderLimits,
    note: str | None = None,
    kind: str = "page",
    meta: dict | None = None,
) -> Page:
    lines: list[str] = []
    for block in blocks:
        lines.extend(wrap(block, limits.line_width_chars))
        if len(lines) >= limits.max_lines:
            lines = lines[: limits.max_lines]
            note = note or f"(page cut at {limits.max_lines} lines)"
            break
    if note:
        lines.append(note)
    return Page(
        url=valid_text(url),
        title=escape_inline(title) or escape_inline(url),
        lines=tuple(lines),
        links=tuple(links),
        kind=kind,
        meta=meta or {},
    )


def render_tree(
    tree: lxml.html.HtmlElement | None,
    url: str,
    *,
    title: str = "",
    limits: RenderLimits = RenderLimits(),
    note: str | None = None,
) -> Page:
    """Render a parsed document: every block of the body, links numbered in reading order."""
    r = _Renderer(url, limits)
    if tree is not None:
        body = tree.find(".//body")
        r.walk(body if body is not None else tree)
        r.flush()
    return _finish(url, title or _title_of(tree), r.blocks, r.links, limits, note)


def html_to_page(
    html: str | bytes,
    url: str,
    *,
    content_type: str | None = None,
    main_content: bool = False,
    limits: RenderLimits = RenderLimits(),
) -> Page:
    """HTML -> Page. `main_content` keeps only the article (trafilatura) with its links.

    Malformed markup is repaired by lxml's parser; over-long input is cut at
    `limits.max_html_bytes` and the page says so; binary input raises UnsupportedContent.
    """
    note = None
    if isinstance(html, bytes):
        if looks_binary(html):
            raise UnsupportedContent(f"{url}: binary content, not a web page")
        if len(html) > limits.max_html_bytes:
            html, note = html[: limits.max_html_bytes], "(page cut: too long)"
        html = decode(html, content_type)
    elif len(html) > limits.max_html_bytes:
        html, note = html[: limits.max_html_bytes], "(page cut: too long)"
    tree = _parse(html)
    title = _title_of(tree)
    if main_content and tree is not None:
        page = _main_content(html, tree, url, title, limits, note)
        if page is not None:
            return page
    return render_tree(tree, url, title=title, limits=limits, note=note)


_MAX_FALLBACK_GROWTH = 1.5
"""A page whose full render is at most this many times its extraction is mostly content."""


def _main_content(
    html: str,
    tree: lxml.html.HtmlElement,
    url: str,
    title: str,
    limits: RenderLimits,
    note: str | None,
) -> Page | None:
    """trafilatura's main-content HTML walked by our renderer; None when it finds nothing.

    Images are left out here: asking trafilatura for them also pulls in their containers
    (captions, galleries, alt text repeating the headline), which cost 0.013 F1 on
    bench/extraction.py; the full-page render keeps image markers.

    On short or odd pages trafilatura falls back to bare text, which drops every link and
    list. When the extraction has no link although link texts of the page are inside it, and
    the whole page is not much longer than the extraction, the whole page is rendered instead.
    """
    import trafilatura

    try:
        extracted = trafilatura.extract(
            html,
            url=url,
            output_format="html",
            include_links=True,
            include_images=False,
            include_tables=True,
            include_comments=False,
            favor_recall=True,
            with_metadata=False,
        )
    except Exception:  # trafilatura raises assorted errors on pathological markup
        return None
    if not extracted or not extracted.strip():
        return None
    main = _parse(extracted)
    if main is None:
        return None
    page = render_tree(main, url, title=title, limits=limits, note=note)
    if page.links:
        return page
    full = render_tree(tree, url, title=title, limits=limits, note=note)
    kept = _WS.sub(" ", page.text).lower()
    lost_links = any(
        " " in link.text and link.text.lower() in kept  # one-word labels ('News') match prose
        for link in full.links
    )
    if lost_links and len(full.text) <= _MAX_FALLBACK_GROWTH * len(page.text):
        return full
    return page


def text_to_page(
    text: str,
    url: str,
    title: str,
    *,
    limits: RenderLimits = RenderLimits(),
    links: Iterable[Link] = (),
    kind: str = "page",
) -> Page:
    """Plain text -> Page; blank lines separate paragraphs. Text is escaped here."""
    blocks = [escape(b) for b in re.split(r"\n\s*\n", text)]
    return _finish(url, title, blocks, list(links), limits, kind=kind)


def pdf_to_page(raw: bytes, url: str, *, limits: RenderLimits = RenderLimits()) -> Page:
    """PDF -> Page via pypdf's text extraction (no links)."""
    try:
        from pypdf import PdfReader

        reader = PdfReader(io.BytesIO(raw))
        texts = [(p.extract_text() or "") for p in reader.pages[: limits.max_pdf_pages]]
        title = (reader.metadata.title if reader.metadata else None) or ""
    except Exception as exc:  # pypdf raises many error types on broken files
        raise UnsupportedContent(f"{url}: unreadable PDF ({type(exc).__name__})") from exc
    blocks = [escape(b) for t in texts for b in re.split(r"\n\s*\n", t)]
    return _finish(url, title or url.rsplit("/", 1)[-1], blocks, [], limits)


def bytes_to_page(
    raw: bytes,
    url: str,
    content_type: str | None,
    *,
    main_content: bool = True,
    limits: RenderLimits = RenderLimits(),
) -> Page:
    """Dispatch on content type: HTML, plain text or PDF; anything else is UnsupportedContent."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == "application/pdf" or raw[:5] == b"%PDF-":
        return pdf_to_page(raw, url, limits=limits)
    if ctype in {"", "text/html", "application/xhtml+xml", "application/xml", "text/xml"}:
        return html_to_page(
            raw, url, content_type=content_type, main_content=main_content, limits=limits
        )
    if ctype.startswith("text/"):
        if looks_binary(raw):
            raise UnsupportedContent(f"{url}: binary content labelled {ctype}")
        if len(raw) > limits.max_html_bytes:
            raise PageTooLarge(f"{url}: {len(raw)} bytes of text")
        title = url.rstrip("/").rsplit("/", 1)[-1] or url
        return text_to_page(decode(raw, content_type), url, title, limits=limits)
    raise UnsupportedContent(f"{url}: content type {ctype!r} is not a web page")


def blocks_to_page(
    url: str,
    title: str,
    blocks: Sequence[str],
    links: Sequence[Link],
    *,
    limits: RenderLimits = RenderLimits(),
    kind: str = "page",
    meta: dict | None = None,
) -> Page:
    """Blocks of already-marked-up text (escaped, with link markers) -> a wrapped Page."""
    return _finish(url, title, blocks, links, limits, kind=kind, meta=meta)
