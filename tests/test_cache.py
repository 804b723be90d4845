"""The opt-in result cache: keys, hits, misses, expiry, sharing, clearing, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pliny.engine.cache import ResultCache, cache_key, cache_path, ttl_for
from pliny.errors import SystemFailure
from pliny.framework.model import Agent, Phase
from tests.support.cli import pliny

SPEC = {
    "name": "analyst",
    "role": "You analyze.",
    "prompt": "{{task}}",
    "model": None,
    "temperature": 0.2,
    "cache": {"ttl": 3600},
    "timeout": None,
}
MESSAGES = [{"role": "system", "content": "You analyze."}, {"role": "user", "content": "t"}]
RESULT = {"text": "the answer", "data": {"verdict": "accept", "score": 0.9}}


@pytest.fixture
def cache(tmp_path: Path) -> ResultCache:
    with ResultCache(cache_path(tmp_path)) as c:
        yield c


def test_key_is_canonical_and_covers_spec_messages_model() -> None:
    key = cache_key(SPEC, MESSAGES, "gpt-4o-mini")
    assert len(key) == 64 and key == ResultCache.key(
        dict(reversed(SPEC.items())), MESSAGES, "gpt-4o-mini"
    )
    assert key != cache_key(SPEC, MESSAGES, "gpt-4o")
    assert key != cache_key({**SPEC, "temperature": 0.3}, MESSAGES, "gpt-4o-mini")
    changed = [MESSAGES[0], {"role": "user", "content": "t2"}]
    assert key != cache_key(SPEC, changed, "gpt-4o-mini")
    # Fields that cannot change the answer do not split the cache.
    assert key == cache_key({**SPEC, "cache": {"ttl": 60}, "timeout": 5}, MESSAGES, "gpt-4o-mini")


def test_hit_miss_and_expiry_with_injected_time(cache: ResultCache) -> None:
    key = cache.key(SPEC, MESSAGES, "m")
    assert cache.get(key, now=1000) is None
    cache.put(key, RESULT, ttl_s=60, agent="analyst", model="m", now=1000)
    assert cache.get(key, now=1000) == RESULT
    assert cache.get(key, now=1059.9) == RESULT
    assert cache.get(key, now=1060) is None  # expired exactly at created + ttl
    assert cache.get("0" * 64, now=1000) is None
    (entry,) = cache.list()
    assert (entry.key, entry.agent, entry.model) == (key, "analyst", "m")
    assert (entry.created, entry.expires, entry.hits) == (1000, 1060, 2)
    assert entry.expired(now=1060) and not entry.expired(now=1059)


def test_put_replaces_and_rejects_bad_ttl(cache: ResultCache) -> None:
    cache.put("k", RESULT, 10, now=0)
    cache.put("k", {"text": "newer"}, 10, now=5)
    assert cache.get("k", now=14) == {"text": "newer"} and len(cache) == 1
    with pytest.raises(ValueError, match="ttl"):
        cache.put("k", RESULT, 0)


def test_clear_all_or_expired(cache: ResultCache) -> None:
    cache.put("old", RESULT, 10, now=0)
    cache.put("new", RESULT, 100, now=0)
    assert cache.clear(expired_only=True, now=50) == 1
    assert [e.key for e in cache.list()] == ["new"]
    assert cache.clear() == 1 and cache.list() == [] and cache.clear() == 0


def test_shared_across_instances_and_processes(tmp_path: Path) -> None:
    path = cache_path(tmp_path)
    script = (
        "import sys; from pathlib import Path; from pliny.engine.cache import ResultCache\n"
        "with ResultCache(Path(sys.argv[1])) as c:\n"
        "    c.put('from-child', {'text': 'hi'}, 3600, agent='a')\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=60)
    with ResultCache(path) as cache:
        assert cache.get("from-child") == {"text": "hi"}


def test_thread_safe(cache: ResultCache) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                cache.put(f"{n}-{i}", {"n": n, "i": i}, 3600)
                assert cache.get(f"{n}-{i}") == {"n": n, "i": i}
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(cache) == 400


def test_corrupt_file_is_one_clear_error(tmp_path: Path) -> None:
    path = cache_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(SystemFailure, match="unusable result cache"):
        ResultCache(path)


def test_ttl_from_agent_or_phase() -> None:
    plain = Agent(name="a", role="r", prompt="p")
    cached = Agent(name="b", role="r", prompt="p", cache={"ttl": "10m"})
    assert ttl_for(Phase(name="x", agents=[plain]), plain) is None
    assert ttl_for(Phase(name="x", agents=[cached]), cached) == 600
    assert ttl_for(Phase(name="x", agents=[plain], cache={"ttl": "1h"}), plain) == 3600
    assert ttl_for(Phase(name="x", agents=[cached], cache={"ttl": "1h"}), cached) == 600


# -- `pliny cache list | clear` ---------------------------------------------------
def test_cli_list_and_clear(tmp_path: Path) -> None:
    empty = pliny(tmp_path, "cache", "list")
    assert empty.returncode == 0 and "empty" in empty.stdout
    assert not cache_path(tmp_path).exists()  # listing does not create a cache
    with ResultCache(cache_path(tmp_path)) as cache:
        cache.put("a" * 64, RESULT, 3600, agent="analyst", model="m")
        cache.put("b" * 64, RESULT, 1, agent="responder", model="m", now=0)  # long expired
    listed = pliny(tmp_path, "cache", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["agent"], r["expired"]) for r in rows] == [("responder", True), ("analyst", False)]
    table = pliny(tmp_path.parent, "cache", "list", "-w", str(tmp_path))
    assert "analyst" in table.stdout and "expired" in table.stdout
    expired = pliny(tmp_path, "cache", "clear", "--expired")
    assert expired.returncode == 0 and "removed 1 expired" in expired.stdout
    cleared = pliny(tmp_path.parent, "cache", "clear", "-w", str(tmp_path))
    assert cleared.returncode == 0 and "removed 1 cached" in cleared.stdout
    with ResultCache(cache_path(tmp_path)) as cache:
        assert cache.list() == []
