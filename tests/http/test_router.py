"""The router as a pure function: no sockets."""
from __future__ import annotations

import pytest

from packetron.flags import RequestMethod
from packetron.http.router import Router, allowed_methods, normalize_path, resolve


@pytest.mark.parametrize("raw, key", [
    ("/api/status", "api/status"),
    ("api/status/", "api/status"),
    ("//api/status//", "api/status"),
    ("/api/status?x=1&y=2", "api/status"),
    ("/", ""),
    ("", ""),
])
def test_normalize_path_ignores_slashes_and_query(raw: str, key: str) -> None:
    assert normalize_path(raw) == key


def test_lookup_returns_one_slot_per_method() -> None:
    router: Router[str] = Router()
    router.add(RequestMethod.GET, "/a/b", "get-ab")
    router.add(RequestMethod.POST, "a/b/", "post-ab")
    slots = router.lookup("a/b")
    assert slots is not None
    assert slots[RequestMethod.GET] == "get-ab"
    assert slots[RequestMethod.POST] == "post-ab"
    assert slots[RequestMethod.PUT] is None
    assert router.lookup("a") is None
    assert router.lookup("a/b/c") is None


def test_head_falls_back_to_get_and_allow_lists_it() -> None:
    router: Router[str] = Router()
    router.add(RequestMethod.GET, "x", "g")
    slots = router.lookup("x")
    assert slots is not None
    assert resolve(slots, RequestMethod.HEAD) == "g"
    assert resolve(slots, RequestMethod.POST) is None
    assert allowed_methods(slots) == "GET, HEAD"


def test_remove_only_the_registered_entry() -> None:
    router: Router[str] = Router()
    router.add(RequestMethod.GET, "x", "first")
    router.add(RequestMethod.GET, "x", "second")  # replaces
    assert router.remove(RequestMethod.GET, "x", "first") is False
    assert router.remove(RequestMethod.GET, "x", "second") is True
    assert router.lookup("x") is None
    assert len(router) == 0
