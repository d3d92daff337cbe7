"""The path-pattern table as a pure function: no sockets."""
from __future__ import annotations

import time

import pytest

from packetron.errors import ConfigError
from packetron.flags import RequestMethod
from packetron.http.patterns import MEMO_KEY_MAX, MEMO_SIZE, PatternTable, is_pattern
from packetron.http.router import METHOD_COUNT

GET = int(RequestMethod.GET)
POST = int(RequestMethod.POST)
DELETE = int(RequestMethod.DELETE)


def table(*patterns: str) -> PatternTable[str]:
    """A table with a GET entry named after each pattern."""
    result: PatternTable[str] = PatternTable()
    for pattern in patterns:
        result.add(GET, pattern, pattern)
    return result


def matched(patterns: PatternTable[str], raw_path: str) -> tuple[str | None, dict]:
    """(GET entry, params) of a match; fails the test on a 404."""
    found = patterns.match(raw_path)
    assert found is not None, raw_path
    slots, params = found
    return slots[GET], params


# ---------------------------------------------------------------- is_pattern

@pytest.mark.parametrize("path, expected", [
    ("users/{id}", True),
    ("/files/{rest:path}/", True),
    ("users/me", False),
    ("", False),
    ("a{b", True),  # malformed, but must reach add() to fail loudly
])
def test_is_pattern(path: str, expected: bool) -> None:
    assert is_pattern(path) is expected


# ---------------------------------------------------------------- converters

def test_str_converter_takes_one_non_empty_segment() -> None:
    patterns = table("users/{name}")
    assert matched(patterns, "users/ada") == ("users/{name}", {"name": "ada"})
    assert patterns.match("users") is None
    assert patterns.match("users/ada/x") is None
    assert patterns.match("users/") is None


def test_explicit_str_converter_is_the_default() -> None:
    patterns = table("users/{name:str}")
    assert matched(patterns, "users/42") == ("users/{name:str}", {"name": "42"})
    assert list(patterns.entries()) == [("users/{name}", GET, "users/{name:str}")]


def test_int_converter_converts_digits() -> None:
    patterns = table("items/{n:int}")
    assert matched(patterns, "items/42")[0] == "items/{n:int}"
    params = matched(patterns, "items/42")[1]
    assert params == {"n": 42} and type(params["n"]) is int
    assert matched(patterns, "items/007")[1] == {"n": 7}
    assert matched(patterns, "items/" + "9" * 18)[1] == {"n": int("9" * 18)}


@pytest.mark.parametrize("segment", [
    "-1", "+1", "1.5", "1e3", "0x10", " 1", "abc", "١٢", "²", "9" * 19, "%2B1",
])
def test_int_converter_refuses_anything_but_short_ascii_digits(segment: str) -> None:
    assert table("items/{n:int}").match("items/" + segment) is None


def test_huge_int_segment_is_refused_quickly() -> None:
    patterns = table("items/{n:int}")
    raw = "items/" + "7" * 10_000
    started = time.perf_counter()
    for _ in range(100):
        assert patterns.match(raw) is None
    assert time.perf_counter() - started < 0.5


def test_huge_int_segment_falls_through_to_str() -> None:
    patterns = table("items/{n:int}", "items/{slug}")
    raw = "7" * 10_000
    assert matched(patterns, "items/" + raw) == ("items/{slug}", {"slug": raw})


def test_path_converter_takes_the_rest() -> None:
    patterns = table("files/{rest:path}")
    assert matched(patterns, "files/a") == ("files/{rest:path}", {"rest": "a"})
    assert matched(patterns, "files/a/b/c.txt")[1] == {"rest": "a/b/c.txt"}
    assert patterns.match("files") is None


def test_path_converter_after_other_parameters() -> None:
    patterns = table("{user}/{n:int}/{rest:path}")
    assert matched(patterns, "ada/3/x/y")[1] == {"user": "ada", "n": 3, "rest": "x/y"}


@pytest.mark.parametrize("raw", [
    "files/../etc/passwd",
    "files/a/../../etc",
    "files/..",
    "files/a/./b",
    "files/a//b",
    "files/a%2F..%2Fb",
    "files/%2E%2E/x",
    "files/a%00b",
    "files/a\x00b",
    "files/a%5Cb",
    "files/..\\x",
])
def test_path_converter_refuses_unsafe_values(raw: str) -> None:
    assert table("files/{rest:path}").match(raw) is None


def test_nul_in_a_str_value_does_not_match() -> None:
    patterns = table("users/{name}")
    assert patterns.match("users/a%00b") is None
    assert patterns.match("users/a\x00b") is None


# ---------------------------------------------------------------- decoding

def test_encoded_slash_stays_in_one_segment() -> None:
    patterns = table("users/{name}", "users/{name}/posts")
    assert matched(patterns, "users/a%2Fb") == ("users/{name}", {"name": "a/b"})
    assert matched(patterns, "users/a%2fb/posts") == ("users/{name}/posts", {"name": "a/b"})


def test_literal_segments_compare_against_the_decoded_segment() -> None:
    patterns = table("caf\u00e9/{x}", "a b/{x}")
    assert matched(patterns, "caf%C3%A9/1") == ("caf\u00e9/{x}", {"x": "1"})
    assert matched(patterns, "caf\u00e9/1")[0] == "caf\u00e9/{x}"
    assert matched(patterns, "a%20b/1")[0] == "a b/{x}"


def test_unicode_values_are_decoded() -> None:
    patterns = table("tags/{tag}")
    assert matched(patterns, "tags/%E2%9C%93")[1] == {"tag": "\u2713"}
    assert matched(patterns, "tags/\u65e5\u672c")[1] == {"tag": "\u65e5\u672c"}


def test_invalid_utf8_escape_does_not_match() -> None:
    patterns = table("tags/{tag}", "files/{rest:path}")
    assert patterns.match("tags/%FF") is None
    assert patterns.match("files/a/%C3") is None


def test_malformed_escape_is_kept_as_text() -> None:
    assert matched(table("tags/{tag}"), "tags/100%zz")[1] == {"tag": "100%zz"}


def test_plus_is_not_a_space_in_a_path() -> None:
    assert matched(table("tags/{tag}"), "tags/a+b")[1] == {"tag": "a+b"}


# ---------------------------------------------------------------- precedence

def test_literal_wins_over_parameters() -> None:
    patterns = table("users/{id:int}", "users/me", "users/{name}", "users/{rest:path}")
    assert matched(patterns, "users/me") == ("users/me", {})


def test_int_wins_over_str_and_str_over_path() -> None:
    patterns = table("users/{rest:path}", "users/{name}", "users/{id:int}")
    assert matched(patterns, "users/42") == ("users/{id:int}", {"id": 42})
    assert matched(patterns, "users/ada") == ("users/{name}", {"name": "ada"})
    assert matched(patterns, "users/a/b") == ("users/{rest:path}", {"rest": "a/b"})


def test_literal_at_the_first_difference_wins() -> None:
    patterns = table("{a}/x/{b}", "{a}/{b}/y")
    # Both match "1/x/y"; the first difference is the second segment, literal there wins.
    assert matched(patterns, "1/x/y") == ("{a}/x/{b}", {"a": "1", "b": "y"})
    patterns = table("x/{a}/{b}", "{a}/y/z")
    assert matched(patterns, "x/y/z")[0] == "x/{a}/{b}"


def test_backtracks_from_a_literal_branch() -> None:
    patterns = table("users/me/x", "users/{id}/y")
    assert matched(patterns, "users/me/y") == ("users/{id}/y", {"id": "me"})
    assert matched(patterns, "users/me/x") == ("users/me/x", {})


def test_backtracks_from_int_to_str_and_drops_the_int_value() -> None:
    patterns = table("a/{n:int}/b", "a/{s}/c")
    assert matched(patterns, "a/5/c") == ("a/{s}/c", {"s": "5"})
    assert matched(patterns, "a/5/b") == ("a/{n:int}/b", {"n": 5})


def test_backtracks_into_path_after_deeper_misses() -> None:
    patterns = table("a/{x}/{y:int}", "a/{rest:path}")
    assert matched(patterns, "a/b/1") == ("a/{x}/{y:int}", {"x": "b", "y": 1})
    assert matched(patterns, "a/b/c") == ("a/{rest:path}", {"rest": "b/c"})


def test_no_pattern_matches() -> None:
    patterns = table("users/{id:int}")
    assert patterns.match("users/ada") is None
    assert patterns.match("posts/1") is None
    assert patterns.match("") is None


# ---------------------------------------------------------------- registration

def test_registration_ignores_outer_slashes() -> None:
    patterns: PatternTable[str] = PatternTable()
    assert patterns.add(GET, "/users/{id}/", "first") is None
    assert patterns.add(GET, "users/{id}", "second") == "first"
    assert patterns.add(GET, "//users/{id}", "third") == "second"
    assert len(patterns) == 1
    assert matched(patterns, "users/1") == ("third", {"id": "1"})


def test_same_pattern_same_method_replaces() -> None:
    patterns: PatternTable[str] = PatternTable()
    assert patterns.add(GET, "files/{rest:path}", "old") is None
    assert patterns.add(GET, "files/{rest:path}", "new") == "old"
    assert list(patterns.entries()) == [("files/{rest:path}", GET, "new")]


def test_slots_are_shared_across_methods() -> None:
    patterns: PatternTable[str] = PatternTable()
    patterns.add(GET, "users/{id:int}", "get")
    patterns.add(DELETE, "/users/{id:int}/", "delete")
    found = patterns.match("users/7")
    assert found is not None
    slots, params = found
    assert len(slots) == METHOD_COUNT
    assert slots[GET] == "get" and slots[DELETE] == "delete" and slots[POST] is None
    assert params == {"id": 7}
    assert len(patterns) == 2


@pytest.mark.parametrize("first, second, method", [
    ("users/{id}", "users/{name}", GET),
    ("users/{id}", "users/{name}", DELETE),
    ("users/{id:int}/{x}", "users/{n:int}/{x}", GET),
    ("files/{rest:path}", "files/{p:path}", POST),
])
def test_same_shape_with_other_names_is_a_conflict(first: str, second: str,
                                                    method: int) -> None:
    patterns: PatternTable[str] = PatternTable()
    patterns.add(GET, first, "first")
    with pytest.raises(ConfigError) as caught:
        patterns.add(method, second, "second")
    assert first in str(caught.value) and second in str(caught.value)
    assert list(patterns.entries()) == [(first, GET, "first")]


def test_different_converters_are_not_a_conflict() -> None:
    patterns = table("users/{id:int}", "users/{name}", "users/{rest:path}")
    assert len(patterns) == 3


@pytest.mark.parametrize("pattern, message", [
    ("users/{id:float}", "unknown converter"),
    ("users/{}", "not an identifier"),
    ("users/{:int}", "not an identifier"),
    ("users/{1id}", "not an identifier"),
    ("users/{my-id}", "not an identifier"),
    ("users/{ id }", "not an identifier"),
    ("a/{x}/{x:int}", "twice"),
    ("files/{rest:path}/meta", "last segment"),
    ("a{b}c", "exactly one"),
    ("a/{b}c", "exactly one"),
    ("a/x{b}", "exactly one"),
    ("a/{b", "exactly one"),
    ("a/b}", "exactly one"),
    ("a/{{b}}", "exactly one"),
    ("a/{b}{c}", "exactly one"),
    ("a//{b}", "empty segment"),
])
def test_invalid_patterns_are_config_errors(pattern: str, message: str) -> None:
    patterns: PatternTable[str] = PatternTable()
    with pytest.raises(ConfigError, match=message):
        patterns.add(GET, pattern, "x")
    assert not patterns


# ---------------------------------------------------------------- removal

def test_remove_one_method_keeps_the_others() -> None:
    patterns: PatternTable[str] = PatternTable()
    patterns.add(GET, "users/{id}", "get")
    patterns.add(DELETE, "users/{id}", "delete")
    assert patterns.remove(GET, "/users/{id}/") is True
    assert patterns.remove(GET, "users/{id}") is False
    found = patterns.match("users/1")
    assert found is not None and found[0][GET] is None and found[0][DELETE] == "delete"
    assert patterns.remove(DELETE, "users/{id}") is True
    assert patterns.match("users/1") is None
    assert not patterns and len(patterns) == 0


def test_remove_with_a_stale_entry_keeps_the_current_one() -> None:
    patterns: PatternTable[str] = PatternTable()
    patterns.add(GET, "users/{id}", "old")
    patterns.add(GET, "users/{id}", "new")
    assert patterns.remove(GET, "users/{id}", "old") is False
    assert matched(patterns, "users/1")[0] == "new"
    assert patterns.remove(GET, "users/{id}", "new") is True
    assert patterns.match("users/1") is None


def test_remove_needs_the_registered_names() -> None:
    patterns = table("users/{id}")
    assert patterns.remove(GET, "users/{name}") is False
    assert patterns.remove(GET, "users/{id:int}") is False
    assert patterns.remove(GET, "users/{bad") is False
    assert len(patterns) == 1


def test_remove_prunes_so_other_branches_still_match() -> None:
    patterns = table("a/b/{x}", "a/{y}/c")
    assert patterns.remove(GET, "a/b/{x}") is True
    assert matched(patterns, "a/b/c") == ("a/{y}/c", {"y": "b"})
    assert patterns.remove(GET, "a/{y}/c") is True
    assert patterns.match("a/b/c") is None
    # After removal the names are free again.
    patterns.add(GET, "a/b/{z}", "z")
    assert matched(patterns, "a/b/1") == ("z", {"z": "1"})


def test_remove_a_path_pattern() -> None:
    patterns = table("files/{rest:path}", "files/{name}")
    assert patterns.remove(GET, "files/{rest:path}") is True
    assert patterns.match("files/a/b") is None
    assert matched(patterns, "files/a")[0] == "files/{name}"


# ---------------------------------------------------------------- introspection

def test_empty_table_is_falsy() -> None:
    patterns: PatternTable[str] = PatternTable()
    assert not patterns and len(patterns) == 0
    patterns.add(GET, "x/{y}", "e")
    assert patterns and len(patterns) == 1


def test_entries_lists_normalized_patterns() -> None:
    patterns: PatternTable[str] = PatternTable()
    patterns.add(GET, "/users/{id:int}/", "a")
    patterns.add(POST, "users/{id:int}", "b")
    patterns.add(GET, "files/{rest:path}", "c")
    assert sorted(patterns.entries()) == [
        ("files/{rest:path}", GET, "c"),
        ("users/{id:int}", GET, "a"),
        ("users/{id:int}", POST, "b"),
    ]


def test_many_patterns_match_the_right_one() -> None:
    patterns: PatternTable[str] = PatternTable()
    for i in range(100):
        patterns.add(GET, f"r{i}/{{id:int}}", f"e{i}")
    assert matched(patterns, "r57/3") == ("e57", {"id": 3})
    assert patterns.match("r100/3") is None


def test_the_loop_finds_what_the_backtracking_search_finds() -> None:
    """match() tries one path without recursion before the full search: over random
    tables and paths, its answers must be those of the search alone."""
    import random

    from packetron.http import patterns as module

    rng = random.Random(20261203)
    pieces = ["a", "b", "7", "{x}", "{n:int}", "{p:path}"]
    words = ["a", "b", "7", "42", "zz", "%2F", "..", "", "x%00y"]
    for _ in range(300):
        entries: PatternTable[str] = PatternTable()
        for _ in range(rng.randint(1, 8)):
            parts = [rng.choice(pieces) for _ in range(rng.randint(1, 4))]
            if any(part == "{p:path}" for part in parts[:-1]):
                continue  # a path parameter only ends a pattern
            # Unique names per pattern: the same shape twice with other names conflicts.
            named = [part.replace("{x}", f"{{x{i}}}").replace("{n:", f"{{n{i}:")
                     .replace("{p:", f"{{p{i}:") for i, part in enumerate(parts)]
            try:
                entries.add(GET, "/".join(named), "/".join(named))
            except ConfigError:
                continue
        for _ in range(20):
            raw = "/".join(rng.choice(words) for _ in range(rng.randint(1, 5)))
            searched = entries.match(raw)
            values: list = []
            segments = [module.unquote_to_bytes(s).decode("utf-8", "replace") if "%" in s
                        else s for s in raw.split("/")]
            walked = module._walk(entries._root, segments, 0, len(segments), values)
            expected = None if walked is None else (walked[0], dict(zip(walked[1], values)))
            if searched is None or expected is None:
                assert searched is None and expected is None, raw
            else:
                assert searched[0] is expected[0] and searched[1] == expected[1], raw


# ---------------------------------------------------------------- match_raw and its memo

def raw_matched(patterns: PatternTable[str], raw_path: bytes) -> tuple[str | None, dict]:
    found = patterns.match_raw(raw_path)
    assert found is not None, raw_path
    slots, params = found
    return slots[GET], params


def test_match_raw_takes_the_path_as_sent() -> None:
    patterns = table("users/{id:int}", "files/{name}")
    assert raw_matched(patterns, b"/users/42/") == ("users/{id:int}", {"id": 42})
    assert raw_matched(patterns, b"/files/a%2Fb") == ("files/{name}", {"name": "a/b"})
    assert patterns.match_raw(b"*") is None  # asterisk-form: exact routes only
    assert patterns.match_raw(b"http://h/users/1") is None  # absolute-form: the same
    assert patterns.match_raw(b"/files/\xff") is None  # not UTF-8


def test_a_remembered_match_gives_every_caller_its_own_params() -> None:
    patterns = table("users/{id:int}")
    first = raw_matched(patterns, b"/users/7")[1]
    first["id"] = "changed by a handler"
    second = raw_matched(patterns, b"/users/7")[1]
    assert second == {"id": 7}
    assert second is not first


def test_adding_a_pattern_forgets_remembered_answers() -> None:
    patterns = table("users/{id}")
    assert patterns.match_raw(b"/orders/1") is None  # remembered as no match
    assert raw_matched(patterns, b"/users/me") == ("users/{id}", {"id": "me"})
    patterns.add(GET, "orders/{n:int}", "orders")
    patterns.add(GET, "users/me", "me")  # more literal: wins from now on
    assert raw_matched(patterns, b"/orders/1") == ("orders", {"n": 1})
    assert raw_matched(patterns, b"/users/me") == ("me", {})


def test_removing_a_pattern_forgets_remembered_answers() -> None:
    patterns = table("users/{id}", "users/{id}/posts")
    assert raw_matched(patterns, b"/users/5/posts")[0] == "users/{id}/posts"
    assert patterns.remove(GET, "users/{id}/posts")
    assert patterns.match_raw(b"/users/5/posts") is None
    patterns.add(POST, "users/{id}", "post")
    assert patterns.remove(GET, "users/{id}")
    slots, params = patterns.match_raw(b"/users/5")  # type: ignore[misc]
    assert (slots[GET], slots[POST], params) == (None, "post", {"id": "5"})


def test_the_memo_stays_bounded_and_keeps_answering() -> None:
    patterns = table("items/{id:int}")
    for number in range(MEMO_SIZE * 3):
        assert raw_matched(patterns, b"/items/%d" % number)[1] == {"id": number}
        assert len(patterns._memo) <= MEMO_SIZE
    long_path = b"/items/" + b"1" * 10 + b"/" * MEMO_KEY_MAX
    patterns._memo.clear()
    assert raw_matched(patterns, long_path)[1] == {"id": 1111111111}
    assert patterns._memo == {}  # a path that long is matched every time, not kept
