"""Authentication: bearer tokens and cluster-CA client certificates -> Identity (pure).

Mirrors kube-apiserver's authenticators closely enough for ravend: a static token table (like
--token-auth-file) and x509 client certificates (CN = user, O = groups). Every authenticated
identity also gets the group "system:authenticated", as the real union authenticator adds it.
There is no authorization (RBAC): any authenticated identity may do anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

AUTHENTICATED = "system:authenticated"


@dataclass(frozen=True)
class Identity:
    """Who made a request (user.Info in kube terms)."""

    user: str
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    uid: str = ""

    def user_info(self) -> dict[str, Any]:
        """The userInfo block of an AdmissionReview."""
        info: dict[str, Any] = {"username": self.user, "groups": list(self.groups)}
        if self.uid:
            info["uid"] = self.uid
        if self.extra:
            info["extra"] = {k: list(v) for k, v in self.extra.items()}
        return info


def _with_authenticated(groups: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*groups, AUTHENTICATED]))


class Authenticator:
    """Token table plus client-certificate identities."""

    def __init__(self) -> None:
        self._tokens: dict[str, Identity] = {}

    def add_token(
        self,
        token: str,
        user: str,
        groups: Sequence[str] = (),
        extra: Mapping[str, Sequence[str]] | None = None,
        uid: str = "",
    ) -> None:
        extra_t = {k: tuple(v) for k, v in (extra or {}).items()}
        self._tokens[token] = Identity(user, _with_authenticated(groups), extra_t, uid)

    def authenticate(self, authorization: str | None, peercert: Any) -> Identity | None:
        """The identity for an Authorization header or a verified peer certificate, or None.

        `peercert` is `ssl.SSLSocket.getpeercert()` output: the TLS layer has already verified it
        against the cluster CA (verify mode CERT_OPTIONAL), so only its subject is read here.
        """
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() == "bearer":
                return self._tokens.get(token.strip())
            return None
        if peercert:
            return identity_from_peercert(peercert)
        return None


def identity_from_peercert(peercert: Mapping[str, Any]) -> Identity | None:
    cn = ""
    orgs: list[str] = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    if not cn:
        return None
    return Identity(cn, _with_authenticated(orgs))
