"""Who may call, for which tenant, to do what, how often: keys bound to tenants and scopes.

A caller presents ``authorization: Bearer <key>``. The keys file (``server.auth.keys_file``, YAML
or JSON, see docs/security.md) holds, per key id, a salted SHA-256 of the key (never the key),
the tenants the key may act for (the first is its default, used when a request names none), its
scopes (:data:`SCOPES`) and its rate limit; and per tenant a rate limit shared by every key. It
is re-read when it changes (checked at most every ``reload_interval_s``); a file that does not
parse keeps the keys loaded before and is logged once.

Legacy plain keys (``api_keys_file``, ``VLMGUARD_API_KEYS``) still work, with fewer rights: the
``default`` tenant only and scopes guard, analyze and rewrite (never raw target access). With auth
disabled every caller is anonymous: any tenant, ``auth.anonymous_scopes``.

This module is the core logic and imports no gRPC: the gateway's interceptor and the Ray
ingress wrap it. Audit lines (one per decision, on the ``vlmguard.audit`` logger) carry the key
id, tenant, action, categories, score and SHA-256 of the content, never the content.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vlmguard.config import AuthConfig
from vlmguard.errors import (
    ConfigError,
    PermissionDeniedError,
    Reason,
    ResourceExhaustedError,
    UnauthenticatedError,
)
from vlmguard.metrics import Metrics

log = logging.getLogger(__name__)
audit_log = logging.getLogger("vlmguard.audit")

GUARD = "guard"
ANALYZE = "analyze"
REWRITE = "rewrite"
TARGET_RAW = "target_raw"
#: Every scope a key may hold.
SCOPES: tuple[str, ...] = (GUARD, ANALYZE, REWRITE, TARGET_RAW)
#: Scopes of a legacy plain key (and the anonymous default): never raw target access.
LEGACY_SCOPES: frozenset[str] = frozenset({GUARD, ANALYZE, REWRITE})
DEFAULT_TENANT = "default"

#: RPC name -> the scopes that admit it (any one suffices). Generate is admitted by 'guard'
#: too: it then answers through the guard (see :meth:`Principal.raw_target`).
METHOD_SCOPES: dict[str, frozenset[str]] = {
    "Guard": frozenset({GUARD}),
    "CheckOutput": frozenset({GUARD}),
    "Analyze": frozenset({ANALYZE}),
    "Rewrite": frozenset({REWRITE}),
    "Generate": frozenset({GUARD, TARGET_RAW}),
}

HASH_SCHEME = "sha256"
_SALT_BYTES = 16
_LEGACY_PREFIX = "legacy-"


# -- the keys file ---------------------------------------------------------------------------


class RateLimit(BaseModel):
    """A token bucket: ``rate_per_s`` calls a second on average, bursts up to ``burst``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_per_s: float = Field(..., gt=0, description="Calls per second, sustained.")
    burst: int = Field(0, ge=0, description="Calls allowed at once (0: max(1, rate_per_s)).")

    @property
    def capacity(self) -> float:
        return float(self.burst) if self.burst else max(1.0, self.rate_per_s)


class KeyEntry(BaseModel):
    """One key of the keys file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hash: str = Field(..., description="'sha256$<salt hex>$<digest hex>' (vlmguard keys hash).")
    tenants: list[str] = Field(..., min_length=1, description="Tenants; the first is the default.")
    scopes: list[Literal["guard", "analyze", "rewrite", "target_raw"]] = Field(
        ..., min_length=1, description="What the key may do.")
    rate_limit: RateLimit | None = Field(None, description="Per-key limit (none: unlimited).")

    @field_validator("hash")
    @classmethod
    def _hash_form(cls, v: str) -> str:
        parse_hash(v)
        return v

    @field_validator("tenants")
    @classmethod
    def _tenant_ids(cls, v: list[str]) -> list[str]:
        if any(not t or t != t.strip() for t in v):
            raise ValueError("tenant ids must be non-empty, without surrounding spaces")
        return v


class KeysFile(BaseModel):
    """The keys file: keys by id, and per-tenant rate limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keys: dict[str, KeyEntry] = Field(default_factory=dict, description="Keys by key id.")
    tenants: dict[str, RateLimit] = Field(
        default_factory=dict, description="Rate limit per tenant, shared by all its keys.")

    @field_validator("keys")
    @classmethod
    def _ids(cls, v: dict[str, KeyEntry]) -> dict[str, KeyEntry]:
        for kid in v:
            if not kid or kid.startswith(_LEGACY_PREFIX) or any(c.isspace() for c in kid):
                raise ValueError(f"key id {kid!r}: non-empty, no spaces, not 'legacy-...'")
        return v


def parse_hash(value: str) -> tuple[bytes, bytes]:
    """(salt, digest) of a stored hash ``sha256$<salt hex>$<digest hex>``.

    Raises:
        ValueError: another scheme or a malformed value.
    """
    scheme, _, rest = value.partition("$")
    salt_hex, _, digest_hex = rest.partition("$")
    if scheme != HASH_SCHEME:
        raise ValueError(f"hash must start with '{HASH_SCHEME}$' (vlmguard keys hash)")
    try:
        salt, digest = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError as e:
        raise ValueError("hash: salt and digest must be hex") from e
    if len(salt) < 8 or len(digest) != 32:
        raise ValueError("hash: salt of 8+ bytes and a 32-byte digest expected")
    return salt, digest


def _digest(salt: bytes, key: str) -> bytes:
    return hashlib.sha256(salt + key.encode("utf-8", "surrogatepass")).digest()


def hash_key(key: str, *, salt: bytes | None = None) -> str:
    """The stored form of ``key``: a salted SHA-256 (keys are random 32-byte tokens, so a
    fast hash is enough; the salt keeps equal keys from having equal entries).

    Raises:
        ValueError: an empty key.
    """
    if not key:
        raise ValueError("the key must not be empty")
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    return f"{HASH_SCHEME}${salt.hex()}${_digest(salt, key).hex()}"


def new_key() -> str:
    """A fresh random API key (256 bits, URL-safe)."""
    return "vg_" + secrets.token_urlsafe(32)


def load_keys_file(path: str | os.PathLike[str]) -> KeysFile:
    """Parse and validate a keys file (YAML, of which JSON is a subset).

    Raises:
        ConfigError: KEYS_FILE_INVALID, naming the problem (never a key or a hash).
    """
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"server.auth.keys_file {p}: cannot read it ({type(e).__name__})",
                          reason=Reason.KEYS_FILE_INVALID) from e
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"server.auth.keys_file {p}: not valid YAML/JSON",
                          reason=Reason.KEYS_FILE_INVALID) from e
    try:
        return KeysFile.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}"
                             for err in e.errors())
        raise ConfigError(f"server.auth.keys_file {p}: {problems}",
                          reason=Reason.KEYS_FILE_INVALID) from e


def legacy_keys(auth: AuthConfig, environ: Mapping[str, str]) -> list[str]:
    """Plain keys from ``api_keys_file`` and ``api_keys_env``.

    Raises:
        ConfigError: the file cannot be read.
    """
    keys: list[str] = []
    if auth.api_keys_file:
        try:
            for line in Path(auth.api_keys_file).read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    keys.append(line)
        except OSError as e:
            raise ConfigError(f"server.auth.api_keys_file: cannot read it ({e.strerror})") from e
    keys += [k.strip() for k in environ.get(auth.api_keys_env, "").split(",") if k.strip()]
    return keys


# -- who is calling --------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """An authenticated caller (or the anonymous one while auth is disabled)."""

    key_id: str
    tenants: tuple[str, ...]
    scopes: frozenset[str]
    rate_limit: RateLimit | None = None
    #: Anonymous (auth disabled): any tenant may be named.
    any_tenant: bool = False

    @property
    def default_tenant(self) -> str:
        return self.tenants[0] if self.tenants else DEFAULT_TENANT

    @property
    def raw_target(self) -> bool:
        """Generate answers with the target's raw output (else through the guard)."""
        return TARGET_RAW in self.scopes

    def check_method(self, method: str) -> None:
        """Raises PermissionDeniedError(SCOPE_NOT_ALLOWED) when no scope admits ``method``
        (a method with no scope in :data:`METHOD_SCOPES` is admitted by none: a new RPC stays
        closed until it is given one)."""
        needed = METHOD_SCOPES.get(method, frozenset())
        if not (needed & self.scopes):
            raise PermissionDeniedError(
                f"this API key may not call {method} (needs scope "
                f"{' or '.join(sorted(needed)) or 'none defined'})",
                reason=Reason.SCOPE_NOT_ALLOWED, metadata={"method": method},
            )

    def tenant_for(self, requested: str) -> str:
        """The tenant a call acts for: the requested one when the key may use it, the key's
        default when none is named.

        Raises:
            PermissionDeniedError: TENANT_NOT_ALLOWED.
        """
        if not requested:
            return self.default_tenant
        if self.any_tenant or requested in self.tenants:
            return requested
        raise PermissionDeniedError("this API key may not act for the requested tenant",
                                    reason=Reason.TENANT_NOT_ALLOWED)


ANONYMOUS_ID = "anonymous"


@dataclass
class _Loaded:
    principals: list[tuple[bytes, bytes, Principal]]  # (salt, digest, principal)
    tenant_limits: dict[str, RateLimit]


class KeyStore:
    """The keys in force, re-read from ``keys_file`` when it changes.

    Args:
        keys_file: Path of the keys file ("" for legacy keys only).
        legacy: Plain legacy keys (default tenant, :data:`LEGACY_SCOPES`).
        reload_interval_s: Check the file's stat at most this often (0: on every call).
        clock: Monotonic clock.
        metrics: Keys in force and reload results (vlmguard_auth_*).

    Raises:
        ConfigError: the keys file is invalid at startup (later, a bad file keeps the old keys).
    """

    def __init__(self, keys_file: str, legacy: Sequence[str] = (), *,
                 reload_interval_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic,
                 metrics: Metrics | None = None) -> None:
        self.path = keys_file
        self.metrics = metrics
        self.reload_interval_s = reload_interval_s
        self.clock = clock
        self._legacy: list[tuple[bytes, bytes, Principal]] = []
        for k in legacy:
            salt = secrets.token_bytes(_SALT_BYTES)
            kid = _LEGACY_PREFIX + hashlib.sha256(k.encode()).hexdigest()[:8]
            self._legacy.append((salt, _digest(salt, k),
                                 Principal(kid, (DEFAULT_TENANT,), LEGACY_SCOPES)))
        self._lock = threading.Lock()
        self._stat: tuple[int, int, int] | None = None
        self._failed_stat: tuple[int, int, int] | None = None
        self._checked_at = -math.inf
        self._loaded = _Loaded(list(self._legacy), {})
        if keys_file:
            self._stat = self._file_stat()
            self._loaded = self._parse(load_keys_file(keys_file))
        if metrics is not None:
            metrics.auth_keys.set(len(self._loaded.principals))

    def __len__(self) -> int:
        return len(self._loaded.principals)

    def _file_stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)  # follows symlinks: a Kubernetes Secret swaps ..data
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _parse(self, kf: KeysFile) -> _Loaded:
        principals = list(self._legacy)
        for kid, e in kf.keys.items():
            salt, digest = parse_hash(e.hash)
            principals.append((salt, digest, Principal(kid, tuple(e.tenants),
                                                       frozenset(e.scopes), e.rate_limit)))
        return _Loaded(principals, dict(kf.tenants))

    def _maybe_reload(self) -> None:
        if not self.path:
            return
        now = self.clock()
        if now - self._checked_at < self.reload_interval_s:
            return
        with self._lock:
            if now - self._checked_at < self.reload_interval_s:
                return
            self._checked_at = now
            st = self._file_stat()
            if st is None or st == self._stat:
                if st is None and self._failed_stat != (0, 0, 0):
                    self._failed_stat = (0, 0, 0)
                    self._count("invalid")
                    log.error("keys file %s is missing: keeping the %d keys loaded before",
                              self.path, len(self._loaded.principals))
                return
            try:
                loaded = self._parse(load_keys_file(self.path))
            except ConfigError as e:
                if st != self._failed_stat:  # once per broken version of the file
                    self._failed_stat = st
                    self._count("invalid")
                    log.error("%s: keeping the %d keys loaded before", e.message,
                              len(self._loaded.principals))
                return
            self._loaded, self._stat, self._failed_stat = loaded, st, None
            self._count("ok")
            if self.metrics is not None:
                self.metrics.auth_keys.set(len(loaded.principals))
            log.info("keys file reloaded: %d keys, %d tenant limits",
                     len(loaded.principals), len(loaded.tenant_limits))

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.auth_reloads.labels(result).inc()

    def lookup(self, token: str) -> Principal | None:
        """The principal whose key is ``token``, comparing every entry in constant time."""
        self._maybe_reload()
        found: Principal | None = None
        for salt, digest, principal in self._loaded.principals:
            # No early exit: timing does not tell which key (or whether any) matched.
            if hmac.compare_digest(_digest(salt, token), digest):
                found = principal
        return found

    def tenant_limit(self, tenant: str) -> RateLimit | None:
        return self._loaded.tenant_limits.get(tenant)


# -- rate limits ------------------------------------------------------------------------------


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets by name (a key id or a tenant). Not thread-safe: one event loop uses it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, name: str, limit: RateLimit) -> float | None:
        """Take one token; None when granted, else the seconds until one is available."""
        now = self.clock()
        cap = limit.capacity
        b = self._buckets.get(name)
        if b is None:
            b = self._buckets[name] = _Bucket(cap, now)
        b.tokens = min(cap, b.tokens + (now - b.at) * limit.rate_per_s)
        b.at = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return None
        return (1.0 - b.tokens) / limit.rate_per_s


# -- the gatekeeper ---------------------------------------------------------------------------


@dataclass
class Access:
    """What the gatekeeper decided for one call, and what the servicer adds for the audit."""

    principal: Principal
    method: str
    #: The tenant, once resolved from the request (None before).
    tenant: str | None = None
    audit: dict[str, Any] = field(default_factory=dict)


#: The current call's access (set by the interceptor / Ray ingress for the servicer's task).
access_var: contextvars.ContextVar[Access | None] = contextvars.ContextVar("access", default=None)


def bearer_token(metadata: Sequence[tuple[str, str | bytes]]) -> str:
    """The key of ``authorization: Bearer <key>``.

    Raises:
        UnauthenticatedError: MISSING_API_KEY or INVALID_API_KEY (malformed header).
    """
    value = ""
    for k, v in metadata:
        if k.lower() == "authorization":
            value = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            break
    if not value:
        raise UnauthenticatedError(
            "missing API key: send metadata 'authorization: Bearer <key>'",
            reason=Reason.MISSING_API_KEY,
        )
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError(
            "malformed authorization metadata: expected 'Bearer <key>'",
            reason=Reason.INVALID_API_KEY,
        )
    return token.strip()


class Gatekeeper:
    """Authentication, scopes, tenants and rate limits for every hosting (no gRPC here).

    :meth:`admit` runs on the call's metadata alone, before the request message is read;
    :meth:`resolve_tenant` runs once the message names its tenant.

    Args:
        cfg: ``server.auth``.
        environ: Environment (legacy keys).
        clock: Monotonic clock (rate limits, reload checks).
        metrics: Keys in force and reload results (vlmguard_auth_*).

    Raises:
        ConfigError: auth enabled with no key at all, or an invalid keys file.
    """

    def __init__(self, cfg: AuthConfig, environ: Mapping[str, str] | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 metrics: Metrics | None = None) -> None:
        env = os.environ if environ is None else environ
        self.enabled = cfg.enabled
        self.store: KeyStore | None = None
        self.limiter = RateLimiter(clock)
        self.anonymous = Principal(ANONYMOUS_ID, (), frozenset(cfg.anonymous_scopes),
                                   any_tenant=True)
        if cfg.enabled:
            self.store = KeyStore(cfg.keys_file, legacy_keys(cfg, env),
                                  reload_interval_s=cfg.reload_interval_s, clock=clock,
                                  metrics=metrics)
            if len(self.store) == 0:
                raise ConfigError(
                    "server.auth.enabled is true but no API keys were found (set "
                    f"server.auth.keys_file, server.auth.api_keys_file or {cfg.api_keys_env})"
                )

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]]) -> Principal:
        """The caller (the anonymous principal while auth is disabled).

        Raises:
            UnauthenticatedError: MISSING_API_KEY, INVALID_API_KEY.
        """
        if self.store is None:
            return self.anonymous
        principal = self.store.lookup(bearer_token(metadata))
        if principal is None:
            raise UnauthenticatedError("invalid API key", reason=Reason.INVALID_API_KEY)
        return principal

    def _take(self, scope: str, name: str, limit: RateLimit | None) -> None:
        if limit is None:
            return
        wait = self.limiter.take(f"{scope}:{name}", limit)
        if wait is not None:
            raise ResourceExhaustedError(
                f"rate limit of this {scope} exceeded: retry later",
                reason=Reason.RATE_LIMITED, metadata={"limit": scope},
                retry_after_s=round(max(wait, 0.001), 3),
            )

    def admit(self, method: str, metadata: Sequence[tuple[str, str | bytes]]) -> Access:
        """Authenticate, check the method's scope and the key's rate limit.

        Raises:
            UnauthenticatedError, PermissionDeniedError (SCOPE_NOT_ALLOWED),
            ResourceExhaustedError (RATE_LIMITED, with a retry delay); the last two carry the
            caller's :class:`Access` as ``access`` (see :func:`denied_access`).
        """
        return self.authorize(self.authenticate(metadata), method)

    def authorize(self, principal: Principal, method: str) -> Access:
        """Check the method's scope and take from the key's rate limit.

        Raises:
            PermissionDeniedError (SCOPE_NOT_ALLOWED), ResourceExhaustedError (RATE_LIMITED),
            carrying the caller's access for the audit line (:func:`denied_access`).
        """
        access = Access(principal, method)
        try:
            principal.check_method(method)
            self._take("key", principal.key_id, principal.rate_limit)
        except (PermissionDeniedError, ResourceExhaustedError) as e:
            e.access = access  # type: ignore[union-attr]
            raise
        return access

    def resolve_tenant(self, access: Access, requested: str) -> str:
        """Set and return the call's tenant, after the tenant's rate limit.

        Raises:
            PermissionDeniedError (TENANT_NOT_ALLOWED), ResourceExhaustedError (RATE_LIMITED).
        """
        tenant = access.principal.tenant_for(requested)
        access.tenant = tenant
        if self.store is not None:
            self._take("tenant", tenant, self.store.tenant_limit(tenant))
        return tenant


def denied_access(exc: BaseException) -> Access | None:
    """The access of a caller that was authenticated and then refused (None otherwise)."""
    access = getattr(exc, "access", None)
    return access if isinstance(access, Access) else None


# -- audit ------------------------------------------------------------------------------------


def sha256_hex(data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def record_content(access: Access | None, text: str, images: Sequence[bytes]) -> None:
    """Note the SHA-256 of the call's content for its audit line."""
    if access is not None:
        access.audit["text_sha256"] = sha256_hex(text)
        access.audit["images_sha256"] = [sha256_hex(b) for b in images]


def record_decision(access: Access | None, action: str, categories: Sequence[str],
                    score: float) -> None:
    """Note the guard's decision for the call's audit line."""
    if access is not None:
        access.audit.update(action=action, categories=list(categories),
                            score=round(float(score), 4))


def audit(*, method: str, outcome: str, reason: str, access: Access | None,
          key_id: str = "") -> None:
    """One structured line per decision on ``vlmguard.audit`` (never content)."""
    rec: dict[str, Any] = {
        "key_id": access.principal.key_id if access else (key_id or "-"),
        "tenant": access.tenant if access and access.tenant is not None else "-",
        "method": method, "outcome": outcome, "reason": reason,
        "action": "-", "categories": [], "score": None,
        "text_sha256": "", "images_sha256": [],
    }
    if access is not None:
        rec.update(access.audit)
    audit_log.info("audit %s", json.dumps(rec, sort_keys=True), extra={"audit": rec})
