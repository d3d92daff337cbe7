"""tls.server_context / client_context: clear ConfigErrors, working contexts."""
from __future__ import annotations

import ssl

import pytest

from nethelp import make_certs
from packetron.errors import ConfigError
from packetron.net.tls import client_context, server_context


def test_contexts_from_trustme_files(tmp_path):
    cert, key, ca = make_certs(tmp_path)
    server = server_context(cert, key, alpn=["h2", "http/1.1"])
    client = client_context(ca)
    assert server.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname


def test_missing_files_name_the_path(tmp_path):
    cert, key, _ = make_certs(tmp_path)
    with pytest.raises(ConfigError, match="certificate file not found: .*nope.pem"):
        server_context(tmp_path / "nope.pem", key)
    with pytest.raises(ConfigError, match="key file not found"):
        server_context(cert, tmp_path / "nope.key")
    with pytest.raises(ConfigError, match="CA file not found"):
        client_context(tmp_path / "nope-ca.pem")


def test_a_key_that_does_not_match_is_a_config_error(tmp_path):
    cert, _, _ = make_certs(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key, _ = make_certs(other)
    with pytest.raises(ConfigError, match="cannot load TLS certificate"):
        server_context(cert, other_key)


def test_mutual_tls_requires_client_certificates(tmp_path):
    cert, key, ca = make_certs(tmp_path)
    ctx = server_context(cert, key, client_ca=ca)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
