"""Load client keys from config, a keys file, an env var and a mounted Kubernetes Secret into a ``KeyRing``.

Formats (all hold hashes, never keys): a keys document is YAML or JSON, either ``{keys: [entry, ...]}`` or a
bare list; an entry is an ``ApiKeySpec`` (``hash``, ``tenant``, ``max_priority``, ``requests_per_s``, ...).
A Secret directory holds one file per entry, or keys documents; dot-files (Kubernetes' ``..data`` links) are
skipped. Every problem is a ``ConfigError`` naming the file. Blocking file I/O: call from a thread at runtime.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lanterna.auth.keys import KeyRing
from lanterna.auth.principal import Principal
from lanterna.config.model import ApiKeySpec, AuthConfig
from lanterna.errors import ConfigError


def principal_from_spec(spec: ApiKeySpec) -> Principal:
    return Principal(tenant=spec.tenant, key_hash=spec.hash, name=spec.name or spec.tenant,
                     max_priority=spec.max_priority, requests_per_s=spec.requests_per_s, burst=spec.burst,
                     tokens_per_min=spec.tokens_per_min, token_burst=spec.token_burst,
                     models=frozenset(spec.models) if spec.models is not None else None)


def parse_keys_document(text: str, origin: str) -> list[ApiKeySpec]:
    """Entries of one keys document (or one bare entry, as a Secret file may hold)."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not YAML/JSON: {str(exc).splitlines()[0]}") from None
    if data is None:
        return []
    if isinstance(data, dict) and "keys" in data:
        data = data["keys"]
    elif isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ConfigError(f"{origin}: expected a list of keys or {{keys: [...]}}")
    out = []
    for i, item in enumerate(data):
        try:
            out.append(ApiKeySpec.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{origin}: key #{i}: {where}: {first['msg']}") from None
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read keys from {path}: {exc.strerror}") from None


def secret_dir_files(directory: Path) -> list[Path]:
    """The entry files of a mounted Secret (sorted; dot-entries and subdirectories skipped)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise ConfigError(f"cannot read keys directory {directory}: {exc.strerror}") from None
    return [directory / n for n in names if not n.startswith(".") and (directory / n).is_file()]


def load_specs(cfg: AuthConfig, environ: Mapping[str, str] = os.environ) -> list[ApiKeySpec]:
    specs = list(cfg.keys)
    if cfg.keys_file:
        specs += parse_keys_document(_read(Path(cfg.keys_file)), cfg.keys_file)
    env_text = environ.get(cfg.keys_env) if cfg.keys_env else None
    if env_text:
        specs += parse_keys_document(env_text, f"${cfg.keys_env}")
    if cfg.secret_dir:
        for f in secret_dir_files(Path(cfg.secret_dir)):
            specs += parse_keys_document(_read(f), str(f))
    return specs


def build_keyring(specs: Iterable[ApiKeySpec]) -> KeyRing:
    """One ring; a hash listed twice is a config error (two tenants for one key would be ambiguous)."""
    seen: dict[str, Principal] = {}
    for s in specs:
        if s.hash in seen:
            raise ConfigError(f"key hash {s.hash[:19]}... is listed twice (tenants {seen[s.hash].tenant!r}, "
                              f"{s.tenant!r})")
        seen[s.hash] = principal_from_spec(s)
    return KeyRing(seen)


def load_keyring(cfg: AuthConfig, environ: Mapping[str, str] = os.environ) -> KeyRing:
    return build_keyring(load_specs(cfg, environ))


def admin_ring(cfg: AuthConfig) -> KeyRing:
    return KeyRing({h: Principal(tenant="admin", key_hash=h, name="admin", admin=True) for h in cfg.admin_keys})


def sources_signature(cfg: AuthConfig) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime_ns, size) of every watched file: a reload happens when this changes. Kubernetes updates a
    Secret mount by swapping the ``..data`` link, which changes the files' resolved mtimes."""
    paths: list[Path] = []
    if cfg.keys_file:
        paths.append(Path(cfg.keys_file))
    if cfg.secret_dir:
        try:
            paths += secret_dir_files(Path(cfg.secret_dir))
        except ConfigError:
            pass
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(p), -1, -1))
    return tuple(out)
