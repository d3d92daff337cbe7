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


def test_targets_index_the_plain_forms_of_each_path_by_method_name() -> None:
    router: Router[str] = Router()
    router.add(RequestMethod.GET, "/a/b", "get-ab")
    router.add(RequestMethod.POST, "a/b/", "post-ab")
    router.add(RequestMethod.GET, "/", "root")
    assert router.targets == {
        b"/a/b": {b"GET": "get-ab", b"POST": "post-ab"},
        b"/a/b/": {b"GET": "get-ab", b"POST": "post-ab"},
        b"/": {b"GET": "root"},
    }
    table = router.targets
    assert router.remove(RequestMethod.GET, "a/b") is True
    assert router.targets[b"/a/b"] == {b"POST": "post-ab"}
    assert router.remove(RequestMethod.POST, "a/b") is True
    assert router.remove(RequestMethod.GET, "") is True
    assert router.targets == {}
    assert router.targets is table  # updated in place: the protocol holds this dict


def test_targets_are_utf8_bytes_of_the_path() -> None:
    router: Router[str] = Router()
    router.add(RequestMethod.GET, "/café", "c")
    assert router.targets[b"/caf\xc3\xa9"] == {b"GET": "c"}
    assert router.lookup_raw("café".encode("utf-8")) is not None
