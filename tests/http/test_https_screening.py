"""HTTPS and peer screening on the HTTP server, through the broker layer's listener."""
from __future__ import annotations

import os
import socket

import pytest
import requests
import trustme

from packetron.errors import ConfigError


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    authority = trustme.CA()
    leaf = authority.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    ca_file = folder / "ca.pem"
    cert_file = folder / "cert.pem"
    key_file = folder / "key.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    leaf.cert_chain_pems[0].write_to_path(str(cert_file))
    for blob in leaf.cert_chain_pems[1:]:
        blob.write_to_path(str(cert_file), append=True)
    leaf.private_key_pem.write_to_path(str(key_file))
    return {"ca": str(ca_file), "cert": str(cert_file), "key": str(key_file)}


def test_https_with_a_certificate_files_pair(make_server, certificate) -> None:
    server = make_server(tls={"cert": certificate["cert"], "key": certificate["key"]})
    server.post("echo", lambda q, s: s.send(q.body))
    server.start()
    assert server.url.startswith("https://127.0.0.1:")
    with requests.Session() as session:  # two requests on one TLS connection
        for payload in (b"secret", b"again"):
            answer = session.post(server.url + "/echo", data=payload, verify=certificate["ca"])
            assert answer.content == payload


def test_https_refuses_plain_http_and_keeps_serving(make_server, certificate) -> None:
    server = make_server(tls={"cert": certificate["cert"], "key": certificate["key"]})
    server.get("ping", lambda q, s: s.send_ok())
    server.start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = sock.recv(100)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 200")
    assert requests.get(server.url + "/ping", verify=certificate["ca"]).text == "OK"


def test_https_together_with_screening(make_server, certificate) -> None:
    # TLS and screening on one listener: each handshake follows the verdict, and a failed
    # one leaves the server serving.
    server = make_server(tls={"cert": certificate["cert"], "key": certificate["key"]},
                         allow=["127.0.0.0/8"], max_connections=100)
    server.get("ping", lambda q, s: s.send_ok())
    server.start()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")  # not a ClientHello
            try:
                assert sock.recv(100) == b""
            except ConnectionResetError:
                pass
        with requests.Session() as session:
            answer = session.get(server.url + "/ping", verify=certificate["ca"], timeout=5)
            assert answer.status_code == 200 and answer.text == "OK"


def test_https_large_file_is_copied_through_tls_byte_exact(make_server, certificate,
                                                           tmp_path) -> None:
    # No zero-copy under TLS: head and file go through the transport, in order.
    data = os.urandom(3 * 1024 * 1024 + 7)
    (tmp_path / "big.bin").write_bytes(data)
    server = make_server(tls={"cert": certificate["cert"], "key": certificate["key"]})
    server.serve(str(tmp_path))
    server.start()
    with requests.Session() as session:
        for _ in range(2):
            answer = session.get(server.url + "/big.bin", verify=certificate["ca"], timeout=10)
            assert answer.status_code == 200
            assert answer.headers["content-length"] == str(len(data))
            assert answer.content == data
        part = session.get(server.url + "/big.bin", headers={"Range": "bytes=100-199999"},
                           verify=certificate["ca"], timeout=10)
        assert part.status_code == 206 and part.content == data[100:200000]


def test_missing_certificate_is_a_config_error(tmp_path) -> None:
    from packetron import Packetron

    with pytest.raises(ConfigError):
        Packetron(port=0, workers=1, tls={"cert": str(tmp_path / "none.pem"),
                                          "key": str(tmp_path / "none.key")})


def test_denied_peer_never_reaches_a_handler(make_server) -> None:
    calls = []
    server = make_server(deny=["127.0.0.0/8"])
    server.get("ping", lambda q, s: (calls.append(1), s.send_ok()))
    server.start()
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/ping", timeout=5)
    assert calls == []


def test_allow_list_admits_loopback(make_server) -> None:
    server = make_server(allow=["127.0.0.1/32"], deny=["10.0.0.0/8"])
    server.get("ping", lambda q, s: s.send_ok())
    server.start()
    assert requests.get(server.url + "/ping").text == "OK"


def test_max_connections_refuses_the_one_too_many(make_server) -> None:
    server = make_server(max_connections=2)
    server.get("ping", lambda q, s: s.send_ok())
    server.start()
    held = []
    try:
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            held.append(sock)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as third:
            third.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                assert third.recv(4096) == b""
            except ConnectionResetError:
                pass
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize("options", [{"allow": ["not-a-network"]}, {"max_connections": -1},
                                     {"tls": "cert.pem"}])
def test_bad_screening_options_fail_at_construction(options) -> None:
    from packetron import Packetron

    with pytest.raises(ConfigError):
        Packetron(port=0, workers=1, **options)
