"""The salt user ids, session ids and phone numbers are hashed with: never a public constant.

`INTELROUTER_HASH_SALT` when set; else the installation's own, generated once (`secrets.token_hex`) into
DATA_DIR/hash-salt (mode 0600). The database remembers a fingerprint of the salt its identifiers are hashed
with (table `installation`), so a second host that generated a salt of its own, or a changed setting, is
refused with one line instead of writing hashes that never match the earlier ones. A store that already
holds hashed identifiers from before the fingerprint existed was hashed with the old default, `intelrouter`:
that store keeps it (written to DATA_DIR/hash-salt, with a warning) so its users' hashes still match;
nothing is ever re-hashed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.exc import OperationalError

from intelrouter import store
from intelrouter.config import Settings, secret
from intelrouter.errors import ConfigError, StoreError

log = logging.getLogger(__name__)

LEGACY_SALT = "intelrouter"  # the public default of earlier releases
FINGERPRINT = "hash_salt_fingerprint"
_resolved: dict[tuple[str, str, str | None], str] = {}


def fingerprint(salt: str) -> str:
    """A digest that tells salts apart without revealing one."""
    return hashlib.sha256(f"intelrouter-salt-check:{salt}".encode()).hexdigest()[:32]


def identifier_salt(settings: Settings) -> str:
    """The salt in force for this installation (resolved once per process, see the module docstring)."""
    key = (str(settings.data_dir), settings.db_url, secret(settings.hash_salt))
    salt = _resolved.get(key)
    if salt is None:
        salt = _resolved[key] = _resolve(settings)
    return salt


def _resolve(settings: Settings) -> str:
    explicit = secret(settings.hash_salt)
    path = settings.salt_path
    salt, origin = (explicit, "INTELROUTER_HASH_SALT") if explicit else (_read(path), str(path))
    try:
        with store.connect(settings) as conn:
            t = store.installation
            recorded = conn.execute(select(t.c.value).where(t.c.name == FINGERPRINT)).scalar()
            if salt is None:
                if recorded is not None:
                    raise ConfigError(
                        f"the database {store.safe_url(settings)} holds identifiers hashed with another "
                        f"installation's salt: copy that installation's DATA_DIR/hash-salt to {path}, or set "
                        "INTELROUTER_HASH_SALT to it")
                q = store.queries
                legacy = conn.execute(select(q.c.id).where(or_(q.c.user_hash.is_not(None),
                                                               q.c.session_hash.is_not(None))).limit(1)).first()
                salt = _create(path, LEGACY_SALT if legacy else secrets.token_hex(32))
                if salt == LEGACY_SALT:
                    log.warning("this store's identifiers were hashed with the old public default salt; it stays in "
                                "use so they keep matching (now in %s): see the README to rotate it", path)
                origin = str(path)
            if recorded is None:
                store.insert_ignore(conn, t, [{"name": FINGERPRINT, "value": fingerprint(salt),
                                               "created_at": store.utcnow()}], key="name")
                recorded = conn.execute(select(t.c.value).where(t.c.name == FINGERPRINT)).scalar()
            if recorded != fingerprint(salt):
                raise ConfigError(
                    f"{origin} is not the salt the identifiers in {store.safe_url(settings)} are hashed with: "
                    "use the first installation's salt (its DATA_DIR/hash-salt) on every host")
    except (StoreError, OperationalError) as exc:
        if salt is None:
            raise StoreError(f"cannot set up the hash salt (first start, no {path}): {exc}") from None
        log.warning("could not check the hash salt against the database now: %s", exc)
    return salt


def _read(path: Path) -> str | None:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the hash salt {path}: {exc}") from None
    if not value:
        raise ConfigError(f"{path} is empty: restore the installation's hash salt, or set INTELROUTER_HASH_SALT")
    return value


def _create(path: Path, salt: str) -> str:
    """Write a new salt file (0600); when another process wrote one first, use theirs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (salt + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic, and fails when the file exists: the first writer wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    found = _read(path)
    assert found is not None
    return found
