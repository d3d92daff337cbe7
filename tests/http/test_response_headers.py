"""Response headers as a pure object: what set_header accepts, refuses and replaces (no
socket: the checks run before anything is written)."""
from __future__ import annotations

import pytest

from packetron.http import response as response_module
from packetron.http.response import HeaderBlock, Response


def fresh() -> Response:
    return Response(None, None)  # type: ignore[arg-type]  # headers never touch either


@pytest.mark.parametrize("name", ["X-A\r", "X\nB", "X-A:", "Content-Length",
                                  "transfer-encoding"])
def test_refused_names_are_refused_every_time(name: str) -> None:
    """Names are remembered once accepted; a refused one must never be."""
    for _ in range(2):
        with pytest.raises(ValueError):
            fresh().set_header(name, "v")
    assert name not in response_module._CHECKED_NAMES


@pytest.mark.parametrize("value", ["a\r\nSet-Cookie: evil=1", "a\nb", "a\rb"])
def test_line_breaks_in_a_value_are_refused_for_a_known_name(value: str) -> None:
    response = fresh()
    response.set_header("X-Known", "fine")
    with pytest.raises(ValueError):
        response.set_header("X-Known", value)
    assert response.get_header("x-known") == "fine"


def test_a_name_in_another_case_replaces_and_set_cookie_adds() -> None:
    response = fresh()
    response.set_header("X-Custom", "v1")
    response.set_header("x-CUSTOM", 2)
    response.set_header("Set-Cookie", "a=1")
    response.set_header("set-cookie", "b=2")
    assert response._headers == [("x-CUSTOM", "2"), ("Set-Cookie", "a=1"),
                                 ("set-cookie", "b=2")]


def test_the_accepted_names_cache_is_bounded() -> None:
    """Header names may come from clients (echoed back): the cache must not grow with them."""
    response = fresh()
    for index in range(3 * response_module._CHECKED_NAMES_MAX):
        response.set_header(f"X-Echo-{index}", "v")
    assert len(response_module._CHECKED_NAMES) <= response_module._CHECKED_NAMES_MAX
    assert response.get_header(f"x-echo-{3 * response_module._CHECKED_NAMES_MAX - 1}") == "v"


# ---------------------------------------------------------------- header blocks

@pytest.mark.parametrize("pairs", [[("X-A\r", "v")], [("Content-Length", "5")],
                                   [("X-A", "a\r\nb")], [("X-A", "1"), ("x-a", "2")]])
def test_a_header_block_refuses_what_set_header_refuses(pairs: list) -> None:
    with pytest.raises(ValueError):
        HeaderBlock(pairs)


def test_set_headers_is_set_header_for_each() -> None:
    block = HeaderBlock([("X-Frame", "DENY"), ("Content-Type", "text/x"), ("X-N", 7)])
    by_block, by_hand = fresh(), fresh()
    for response in (by_block, by_hand):
        response.set_header("x-frame", "SAMEORIGIN")
        response.set_header("Set-Cookie", "a=1")
    by_block.set_headers(block)
    for name, value in (("X-Frame", "DENY"), ("Content-Type", "text/x"), ("X-N", 7)):
        by_hand.set_header(name, value)
    assert by_block._headers == by_hand._headers == [
        ("Set-Cookie", "a=1"), ("X-Frame", "DENY"), ("Content-Type", "text/x"), ("X-N", "7")]
    assert by_block._has_content_type and by_hand._has_content_type
    empty = fresh()
    empty.set_headers(block)  # nothing set before: the whole block at once
    assert empty._headers == [("X-Frame", "DENY"), ("Content-Type", "text/x"), ("X-N", "7")]
    assert empty._has_content_type


def test_add_missing_headers_never_overrides() -> None:
    block = HeaderBlock([("X-Frame-Options", "DENY"), ("Vary", "Origin")])
    response = fresh()
    response.add_missing_headers(block)
    assert response._headers == [("X-Frame-Options", "DENY"), ("Vary", "Origin")]
    handler_set = fresh()
    handler_set.set_header("vary", "Accept")
    handler_set.add_missing_headers(block)
    assert handler_set._headers == [("vary", "Accept"), ("X-Frame-Options", "DENY")]
    assert not handler_set._has_content_type
    again = fresh()
    again.add_missing_headers(block)
    again.set_header("X-Frame-Options", "SAMEORIGIN")  # changes this answer, not the block
    assert fresh().add_missing_headers(block) is None and block.pairs == (
        ("X-Frame-Options", "DENY"), ("Vary", "Origin"))


def test_prebuilt_lines_become_headers_and_a_repeated_name_still_works() -> None:
    response = fresh()
    response._expose_head_lines(b"content-type: text/plain\r\nx-a: 1\r\n")
    assert response._headers == [("content-type", "text/plain"), ("x-a", "1")]
    assert response._has_content_type
    twice = fresh()
    twice._expose_head_lines(b"x-b: 1\r\nx-b: 2\r\ncontent-length: 9\r\n")
    assert twice._headers == [("x-b", "2")]  # as set_header twice; framing left out


def test_add_missing_headers_after_the_head_raises_even_with_nothing_missing() -> None:
    from packetron.errors import ResponseAlreadySent

    block = HeaderBlock([("X-Frame-Options", "DENY")])
    for preset in ((), (("X-Frame-Options", "SAMEORIGIN"),)):
        response = fresh()
        for name, value in preset:
            response.set_header(name, value)
        response.sent = True
        with pytest.raises(ResponseAlreadySent):
            response.add_missing_headers(block)
        with pytest.raises(ResponseAlreadySent):
            response.set_headers(block)


def test_an_async_after_hook_runs_the_hooks_after_it_in_order() -> None:
    import asyncio

    seen: list[str] = []

    class Hook:
        def __init__(self, name: str, is_async: bool) -> None:
            self.name = name
            self.is_async = is_async

        def after(self, request: object, response: Response) -> object:
            if not self.is_async:
                seen.append(self.name)
                return None

            async def later() -> None:
                seen.append(self.name)
            return later()

    response = fresh()
    response.use_after_hooks((Hook("a", False), Hook("b", True), Hook("c", False),
                              Hook("d", True)))
    waiting = response._run_afters(200)
    assert seen == ["a"] and waiting is not None and response._afters == ()
    asyncio.run(waiting)  # type: ignore[arg-type]
    assert seen == ["a", "b", "c", "d"]
