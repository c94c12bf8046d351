"""End-to-end tests of TLS (rustls): https and wss on both backends, client certificates, and
what a client that does not speak TLS properly gets.

Certificates are made per test session by ``trustme`` (a throwaway CA): no private key is
committed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from harness import REPO_ROOT, ZcasgiServer, server_env
from harness.pki import Pki
from zcasgi import Config

pytestmark = pytest.mark.timeout(60)

APP = "apps.echo:transport_app"


@pytest.fixture
def tls_server(backend: str, pki: Pki) -> Iterator[ZcasgiServer]:
    with ZcasgiServer(APP, backend, pki.server_args("--handshake-timeout", "1")) as server:
        yield server


def _no_errors(server: ZcasgiServer) -> None:
    out = server.output()
    assert "Traceback" not in out and "ERROR" not in out, out


# The clients are websockets' asyncio ones: its threaded (sync) client sometimes stops after
# the TLS handshake without sending its request, against uvicorn as against zcasgi.


def _wss_scope(server: ZcasgiServer, ctx: ssl.SSLContext) -> dict[str, object]:
    async def scope() -> dict[str, object]:
        async with asyncio.timeout(10), connect(server.url("wss", "/scope"), ssl=ctx) as ws:
            received: dict[str, object] = json.loads(await ws.recv())
            return received

    return asyncio.run(scope())


def test_https_get_and_post(tls_server: ZcasgiServer, pki: Pki) -> None:
    with httpx.Client(verify=pki.client_context(), http2=False) as client:
        r = client.get(tls_server.url("https", "/get?x=1"))
        assert r.status_code == 200
        scope = r.json()
        assert scope["scheme"] == "https" and scope["query_string"] == "x=1"
        tls = scope["extensions"]["tls"]
        assert tls["tls_version"] == 0x0304
        assert tls["server_cert"].startswith("-----BEGIN CERTIFICATE-----")
        assert tls["client_cert_chain"] == []
        body = bytes(range(256)) * 400  # over several TLS records
        r = client.post(tls_server.url("https", "/post"), content=body)
        assert r.status_code == 200
        assert r.json()["body"].encode("latin-1") == body
    _no_errors(tls_server)


def test_wss_echo_and_scope(tls_server: ZcasgiServer, pki: Pki) -> None:
    ctx = pki.client_context()

    async def echo() -> None:
        url = tls_server.url("wss", "/echo")
        async with asyncio.timeout(20), connect(url, ssl=ctx, max_size=None) as ws:
            await ws.send("hello over TLS")
            assert await ws.recv() == "hello over TLS"
            big = bytes(range(256)) * 4096  # 1 MiB
            await ws.send(big)
            assert await ws.recv() == big

    asyncio.run(echo())
    scope = _wss_scope(tls_server, ctx)
    assert scope["scheme"] == "wss"
    extensions = scope["extensions"]
    assert isinstance(extensions, dict) and "websocket.http.response" in extensions
    assert extensions["tls"]["tls_version"] == 0x0304
    _no_errors(tls_server)


@pytest.mark.parametrize("reqs", [0, 1, 2])
def test_client_certificates(backend: str, pki: Pki, reqs: int) -> None:
    args = pki.server_args("--ssl-ca-certs", str(pki.ca_file), "--ssl-cert-reqs", str(reqs))
    if reqs == 0:
        args = pki.server_args()
    with ZcasgiServer(APP, backend, args) as server:
        if reqs == 2:
            # TLS 1.3: the client learns of the refusal after its side of the handshake.
            with pytest.raises((OSError, WebSocketException)):
                _wss_scope(server, pki.client_context())
        else:
            scope = _wss_scope(server, pki.client_context())
            assert scope["extensions"]["tls"]["client_cert_chain"] == []  # type: ignore[index]
        scope = _wss_scope(server, pki.client_context(with_cert=True))
        chain = scope["extensions"]["tls"]["client_cert_chain"]  # type: ignore[index]
        if reqs == 0:
            assert chain == [], "no certificate is asked for"
        else:
            expected = pki.client.cert_chain_pems[0].bytes().decode()
            assert chain and chain[0].strip() == expected.strip()
    _no_errors(server)


def test_a_certificate_from_another_ca_is_refused(backend: str, pki: Pki) -> None:
    stranger = trustme.CA().issue_cert("mallory@example.com")
    args = pki.server_args("--ssl-ca-certs", str(pki.ca_file), "--ssl-cert-reqs", "1")
    with ZcasgiServer(APP, backend, [*args, "--log-level", "debug"]) as server:
        ctx = pki.client_context()
        stranger.configure_cert(ctx)
        with pytest.raises((OSError, WebSocketException)):
            _wss_scope(server, ctx)
        assert "TLS handshake failed" in server.wait_for_output("TLS handshake failed")
        _wss_scope(server, pki.client_context(with_cert=True))
    _no_errors(server)


def _raw(server: ZcasgiServer, data: bytes) -> bytes:
    """Sends ``data`` on a fresh TCP connection; returns all the server sent before closing."""
    with socket.create_connection(("127.0.0.1", server.require_port()), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_plain_http_on_the_tls_port_gets_a_plain_400(tls_server: ZcasgiServer, pki: Pki) -> None:
    reply = _raw(tls_server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n"), reply
    assert b"https://" in reply
    assert _wss_scope(tls_server, pki.client_context())["scheme"] == "wss"
    _no_errors(tls_server)


def test_garbage_is_closed(tls_server: ZcasgiServer, pki: Pki) -> None:
    # A handshake record header, then bytes that are no ClientHello.
    reply = _raw(tls_server, b"\x16\x03\x01\x00\x10" + b"\xff" * 16)
    assert not reply.startswith(b"HTTP"), reply  # at most a TLS alert
    reply = _raw(tls_server, b"\x00" * 64)
    assert not reply.startswith(b"HTTP"), reply
    assert _wss_scope(tls_server, pki.client_context())["scheme"] == "wss"
    _no_errors(tls_server)


def test_stalled_handshake_is_closed_after_the_handshake_timeout(
    tls_server: ZcasgiServer, pki: Pki
) -> None:
    with socket.create_connection(("127.0.0.1", tls_server.require_port()), timeout=10) as sock:
        # Half a ClientHello record, then nothing (handshake_timeout is 1 s): the server closes
        # the connection (with at most a close_notify alert) long before the socket's timeout.
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        assert received == b"" or received.startswith(b"\x15\x03"), received
    assert _wss_scope(tls_server, pki.client_context())["scheme"] == "wss"
    _no_errors(tls_server)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zcasgi", APP, "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO_ROOT,
        env=server_env(),
    )


def test_bad_certificate_files_are_clear_errors_at_start_up(pki: Pki) -> None:
    garbage = pki.tmp / "garbage.pem"
    garbage.write_text("not a certificate\n")
    other_key = pki.tmp / "other-key.pem"
    trustme.CA().issue_cert("localhost").private_key_pem.write_to_path(str(other_key))
    cases = [
        (["--ssl-certfile", str(pki.tmp / "missing.pem")], "ssl_certfile: cannot read"),
        (["--ssl-certfile", str(garbage)], "ssl_certfile:"),
        (["--ssl-certfile", str(pki.certfile), "--ssl-keyfile", str(garbage)], "ssl_keyfile:"),
        (["--ssl-certfile", str(pki.certfile), "--ssl-keyfile", str(other_key)], "ssl_keyfile:"),
        (["--ssl-keyfile", str(pki.keyfile)], "ssl_keyfile requires ssl_certfile"),
        ([*pki.server_args(), "--ssl-cert-reqs", "2"], "ssl_cert_reqs requires ssl_ca_certs"),
        ([*pki.server_args(), "--ssl-cert-reqs", "3"], "ssl_cert_reqs must be <= 2"),
        (
            [*pki.server_args(), "--ssl-ca-certs", str(garbage), "--ssl-cert-reqs", "2"],
            "ssl_ca_certs:",
        ),
    ]
    for args, message in cases:
        result = _cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)


def test_encrypted_keys(pki: Pki) -> None:
    key = serialization.load_pem_private_key(pki.keyfile.read_bytes(), password=None)

    def encrypted_as(name: str, form: serialization.PrivateFormat) -> Path:
        path = pki.tmp / name
        encryption = serialization.BestAvailableEncryption(b"s3cret")
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, form, encryption))
        return path

    encrypted = encrypted_as("encrypted.pem", serialization.PrivateFormat.PKCS8)
    legacy = encrypted_as("legacy.pem", serialization.PrivateFormat.TraditionalOpenSSL)

    def config(keyfile: Path, password: str | None) -> Config:
        return Config(
            "apps.echo:app",
            ssl_certfile=str(pki.certfile),
            ssl_keyfile=keyfile,
            ssl_keyfile_password=password,
        )

    assert config(encrypted, "s3cret").ssl_keyfile == str(encrypted)
    with pytest.raises(ValueError, match="ssl_keyfile_password: the private key is encrypted"):
        config(encrypted, None)
    with pytest.raises(ValueError, match="ssl_keyfile_password: cannot decrypt"):
        config(encrypted, "wrong")
    with pytest.raises(ValueError, match=r"ssl_keyfile: .*legacy OpenSSL PEM format"):
        config(legacy, "s3cret")


def test_key_in_the_certificate_file(backend: str, pki: Pki) -> None:
    both = pki.tmp / "both.pem"
    both.write_bytes(pki.certfile.read_bytes() + pki.keyfile.read_bytes())
    with ZcasgiServer(APP, backend, ["--ssl-certfile", str(both)]) as server:
        assert "https://127.0.0.1:" in server.output()
        assert _wss_scope(server, pki.client_context())["scheme"] == "wss"


def test_tls_with_workers(backend: str, pki: Pki) -> None:
    server = ZcasgiServer(APP, backend, pki.server_args(), workers=2)
    with server:
        assert "https://127.0.0.1:" in server.output()
        ctx = pki.client_context()
        for _ in range(6):
            assert _wss_scope(server, ctx)["scheme"] == "wss"
        with httpx.Client(verify=ctx) as client:
            assert client.get(server.url("https", "/w")).json()["scheme"] == "https"
    _no_errors(server)
