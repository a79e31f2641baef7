"""Rendering bad input, the page model, the page cache and record files."""

import json
from pathlib import Path

import pytest

from env.cache import PageCache
from env.errors import CacheError, PageNotFound, UnsupportedContent
from env.limits import RenderLimits
from env.observation import strip_markup
from env.pages import Page, bytes_to_page, decode, html_to_page, looks_binary, wrap
from env.record import EpisodeRecord, RecordError, Step, append_jsonl, read_jsonl, read_records
from env.sources.cache import CacheSource

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_wrap_never_splits_markers():
    text = "word " * 10 + "【12†a long link text with spaces†example.com】 tail"
    lines = wrap(text, 30)
    assert all(len(line) <= 30 or "【" in line for line in lines)
    assert any("【12†a long link text with spaces†example.com】" in line for line in lines)


def test_malformed_html_is_repaired():
    html = (
        "<html><title>Bro<b>ken</title><body><p>one <a href='/x'>two<p>three</div></span> <i>four"
    )
    page = html_to_page(html, "https://example.org/a/b")
    text = strip_markup(page.text)
    assert "one two" in text and "three" in text and "four" in text
    assert page.links[0].url == "https://example.org/x"


def test_scripts_styles_and_comments_never_render():
    html = "<body><script>alert('x')</script><style>p{}</style><!-- secret --><p>visible</p></body>"
    assert html_to_page(html, "https://e.org").lines == ("visible",)


def test_latin1_from_meta_and_header():
    body = "<html><head><meta charset='iso-8859-1'><title>Caf\xe9</title></head><body>na\xefve</body></html>"
    raw = body.encode("latin-1")
    assert decode(raw) == body
    assert html_to_page(raw, "https://e.org").title == "Café"
    assert decode("naïve".encode("latin-1"), "text/html; charset=ISO-8859-1") == "naïve"


def test_huge_html_is_cut_and_says_so():
    limits = RenderLimits(max_html_bytes=50_000, max_lines=100)
    html = "<body>" + "<p>para graph</p>" * 20_000 + "</body>"
    page = html_to_page(html.encode(), "https://e.org", limits=limits)
    assert len(page.lines) <= 101 and "cut" in page.lines[-1]


def test_binary_is_refused():
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20
    assert looks_binary(png)
    with pytest.raises(UnsupportedContent):
        html_to_page(png, "https://e.org/x.png")
    with pytest.raises(UnsupportedContent):
        bytes_to_page(b"PK\x03\x04", "https://e.org/a.zip", "application/zip")


def test_empty_and_whitespace_pages():
    assert html_to_page(b"", "https://e.org").lines == ()
    assert html_to_page("   ", "https://e.org").title == "https://e.org"


@pytest.mark.skipif(not (SHARED / "pages").exists(), reason="../shared/data is not beside the repo")
def test_real_readability_pages_render_with_links():
    folder = SHARED / "pages" / "readability-test-pages"
    rendered = 0
    for case in sorted(folder.iterdir())[:25]:
        source = case / "source.html"
        if not source.exists():
            continue
        page = html_to_page(
            source.read_bytes(), "https://example.com/" + case.name, main_content=True
        )
        assert page.lines, case.name
        rendered += 1
    assert rendered >= 20


def test_page_id_is_stable_and_content_addressed():
    a = Page("https://e.org", "T", ("x",), ())
    b = Page("https://e.org", "T", ("x",), (), meta={"raw": b"zzz"})
    assert a.id == b.id and a.id.startswith("sha256:")
    assert Page("https://e.org", "T", ("y",), ()).id != a.id
    assert Page.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_cache_round_trip_raw_bytes_and_tampering(tmp_path):
    cache = PageCache(tmp_path)
    page = Page("https://e.org/p", "P", ("hello",), (), meta={"raw": b"<p>hello</p>"})
    pid = cache.put(page)
    assert cache.put(page) == pid and pid in cache
    assert cache.get(pid) == page and cache.raw(pid) == b"<p>hello</p>"
    assert CacheSource(cache).get("https://e.org/p") == page
    with pytest.raises(PageNotFound):
        CacheSource(cache).get("https://e.org/other")
    with pytest.raises(CacheError, match="not in the cache"):
        cache.get("sha256:" + "0" * 64)
    path = cache._page_path(pid)
    entry = json.loads(path.read_text())
    entry["page"]["lines"] = ["goodbye"]
    path.write_text(json.dumps(entry))
    with pytest.raises(CacheError, match="tampered"):
        cache.get(pid)
    with pytest.raises(CacheError, match="not a page id"):
        cache.get("../../etc/passwd")


def _record(i: int) -> EpisodeRecord:
    return EpisodeRecord(
        id=f"r{i}",
        question=f"q{i}",
        source="wiki",
        steps=[Step(observation="o", action="Top", logprobs=[-0.5, -1.0], token_ids=[1, 2])],
    )


def test_records_survive_a_crash_mid_write(tmp_path):
    path = tmp_path / "eps.jsonl"
    append_jsonl(path, [_record(0), _record(1)])
    with open(path, "ab") as f:  # a writer killed half-way through a line
        f.write(_record(2).to_json().encode()[:40])
    assert [r.id for r in read_records(path)] == ["r0", "r1"]
    append_jsonl(path, [_record(3)])  # resuming appends on a fresh line
    assert [r.id for r in read_records(path)] == ["r0", "r1", "r3"]
    assert next(read_records(path)).steps[0].tokens == 2


def test_corrupt_record_lines_name_their_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(_record(0).to_json() + "\n{not json}\n" + _record(1).to_json() + "\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:2"):
        list(read_jsonl(path))
    path.write_text('{"question": "no id"}\n')
    with pytest.raises(RecordError, match=r"bad.jsonl:1: id: missing"):
        list(read_records(path))
    with pytest.raises(RecordError, match=r"EpisodeRecord: expected an object, got list \[1\]"):
        EpisodeRecord.from_dict([1])  # e.g. an eval row's "episode"
    with pytest.raises(RecordError, match="no such file"):
        list(read_records(tmp_path / "missing.jsonl"))
