"""Request headers as a pure object: the lowercase names remembered across requests."""
from __future__ import annotations

from packetron.http import headers as headers_module
from packetron.http.headers import Headers


def test_remembered_names_read_like_new_ones() -> None:
    raw = [(b"X-Mixed-Case", b" a \t"), (b"x-mixed-case", b"b"), (b"Host", b"h")]
    for _ in range(2):  # the second time the names come from memory
        headers = Headers(list(raw))
        assert headers["X-MIXED-CASE"] == "a, b" and headers.get("host") == "h"
        assert list(headers) == ["x-mixed-case", "host"]


def test_the_remembered_names_are_bounded() -> None:
    """Names come from clients: the memory must not grow with them."""
    for index in range(3 * headers_module._KEYS_MAX):
        name = b"X-Random-%d" % index
        assert Headers([(name, b"v")]).get(name.decode()) == "v"
    assert len(headers_module._KEYS) <= headers_module._KEYS_MAX
