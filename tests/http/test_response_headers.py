"""Response headers as a pure object: what set_header accepts, refuses and replaces (no
socket: the checks run before anything is written)."""
from __future__ import annotations

import pytest

from packetron.http import response as response_module
from packetron.http.response import Response


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
