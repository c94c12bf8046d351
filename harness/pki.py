"""Throwaway certificates for TLS servers under test: a CA made by ``trustme``, the server's
certificate and key files, and a client certificate, written to a temporary directory (no
private key is committed)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Pki:
    """A CA, the server's certificate and key files, and a client certificate it signed."""

    ca: trustme.CA
    certfile: Path
    keyfile: Path
    ca_file: Path
    client: trustme.LeafCert
    tmp: Path

    @classmethod
    def make(cls, tmp: Path) -> Pki:
        """A new CA and certificates for 127.0.0.1 and localhost, with their files in ``tmp``."""
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        certfile, keyfile, ca_file = tmp / "cert.pem", tmp / "key.pem", tmp / "ca.pem"
        certfile.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        server.private_key_pem.write_to_path(str(keyfile))
        ca.cert_pem.write_to_path(str(ca_file))
        client = ca.issue_cert("client@example.com")
        return cls(ca, certfile, keyfile, ca_file, client, tmp)

    def client_context(self, *, with_cert: bool = False) -> ssl.SSLContext:
        """A client context trusting the CA, presenting the client certificate if asked."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(ctx)
        if with_cert:
            self.client.configure_cert(ctx)
        return ctx

    def server_args(self, *more: str) -> list[str]:
        """The CLI flags of a TLS server with this certificate."""
        return ["--ssl-certfile", str(self.certfile), "--ssl-keyfile", str(self.keyfile), *more]
