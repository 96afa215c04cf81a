"""TLS contexts from in-memory PEMs, hot reload, and peer identities (no network I/O).

Python's `ssl` loads certificates only from files. We never put key material on a filesystem
for this: the PEMs go into an anonymous memory file (memfd) that OpenSSL reads by its
/proc/self/fd path and that disappears when closed.

Reload without dropping connections: an SSL connection copies the certificate from its context
when the handshake starts, so open connections never see a reload. A server listener keeps one
context for its lifetime (asyncio passes it to every accepted socket), so `ReloadableContext`
gives the listener a stable front context whose SNI callback - which OpenSSL runs on every
ClientHello, with or without a server name - swaps in the newest context (`ssl_obj.context =`).
Verification mode and protocol versions are fixed when the connection object is created, i.e. from
the front context; certificates, keys and CA bundle come from the swapped-in one.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from ravend.certs.csr import TUNNEL_CLIENTS_GROUP, TUNNEL_CN_PREFIX

log = logging.getLogger(__name__)

MIN_VERSION = ssl.TLSVersion.TLSv1_3
"""ravend-to-ravend and front-end links: TLS 1.3 only (Go and OpenSSL 1.1.1+ both speak it)."""


def server_context(cert_pem: bytes, key_pem: bytes, client_ca_pem: bytes | None) -> ssl.SSLContext:
    """A server context presenting `cert_pem`; clients must present a certificate signed by
    `client_ca_pem` (None: no client certificate is asked for - only for plain health ports)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSION
    load_chain(ctx, cert_pem, key_pem)
    if client_ca_pem is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
    return ctx


def client_context(
    ca_pem: bytes | None,
    cert_pem: bytes | None = None,
    key_pem: bytes | None = None,
    minimum_version: ssl.TLSVersion = MIN_VERSION,
) -> ssl.SSLContext:
    """A client context verifying servers against `ca_pem` and presenting `cert_pem` if given.

    `ca_pem` None disables server verification: only for dialling kubelets whose serving
    certificates are self-signed (the kubeadm default), which is what the kube-apiserver itself
    does without --kubelet-certificate-authority. Kubelets may need `minimum_version` TLS 1.2.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = minimum_version
    if ca_pem is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    if cert_pem is not None:
        if key_pem is None:
            raise ValueError("a client certificate needs its key")
        load_chain(ctx, cert_pem, key_pem)
    return ctx


def load_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """`ctx.load_cert_chain` from memory (a memfd; a private temp file if memfd is missing)."""
    # One file holding key and chain: load_cert_chain reads the key from certfile when no
    # keyfile is given, so the material is exposed through a single descriptor.
    data = key_pem.rstrip(b"\n") + b"\n" + cert_pem
    memfd_create: Callable[[str, int], int] | None = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fd = memfd_create("ravend-tls", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, data)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="ravend-tls-") as tmp:  # pragma: no cover
        path = os.path.join(tmp, "chain.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        ctx.load_cert_chain(path)


class ReloadableContext:
    """The newest SSLContext of one identity, swappable while connections are open.

    Clients read `current` for every dial. Servers listen with `listener` - the first context,
    given to the server once - which hands each handshake the current context.
    """

    def __init__(self, initial: ssl.SSLContext) -> None:
        self._current = initial
        self._listener = initial
        self.generation = 0
        """Increments on every reload (for logs, metrics and tests)."""

    @property
    def current(self) -> ssl.SSLContext:
        return self._current

    @property
    def listener(self) -> ssl.SSLContext:
        """The context to give a server once; it hands each handshake the current context."""
        # Installed lazily so a client-only holder never carries a server callback.
        self._listener.sni_callback = self._select
        return self._listener

    def reload(self, ctx: ssl.SSLContext) -> None:
        """Make `ctx` the context of every new handshake; open connections keep theirs."""
        self._current = ctx
        self.generation += 1
        log.info("TLS context reloaded (generation %d)", self.generation)

    def _select(
        self, ssl_obj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        if ssl_obj.context is not self._current:
            ssl_obj.context = self._current


def peer_subject(peercert: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(common names, organisations) of a decoded `getpeercert()` subject."""
    cns: list[str] = []
    orgs: list[str] = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cns.append(value)
            elif key == "organizationName":
                orgs.append(value)
    return cns, orgs


def identity_from_peercert(peercert: Mapping[str, Any] | None) -> str | None:
    """The node a verified tunnel client certificate speaks for, else None.

    Only meaningful on a connection whose context verified the certificate (CERT_REQUIRED):
    `getpeercert()` is empty otherwise. Requires exactly one CN `ravend:tunnel:<node>` and the
    `ravend:tunnel-clients` organisation (csr.py explains the subject scheme).
    """
    if not peercert:
        return None
    cns, orgs = peer_subject(peercert)
    if len(cns) != 1 or TUNNEL_CLIENTS_GROUP not in orgs:
        return None
    node = cns[0].removeprefix(TUNNEL_CN_PREFIX)
    if node == cns[0] or not node:
        return None
    return node


def common_name_from_peercert(peercert: Mapping[str, Any] | None) -> str | None:
    """The single CN of a verified peer certificate (for logs and front-end authorisation)."""
    if not peercert:
        return None
    cns, _ = peer_subject(peercert)
    return cns[0] if len(cns) == 1 else None
