"""The lab's owner: who may spend its compute and change its runs once the lab is opened to others.

The owner's password comes from the first of:
- the environment variable MNIST_LAB_OWNER_PASSWORD, for one start of the dashboard
  (`MNIST_LAB_OWNER_PASSWORD=... make run ADDRESS=0.0.0.0`);
- a kept Argon2id hash, written by `python -m core owner --set` to $MNIST_LAB_OWNER_FILE, or
  else to $XDG_CONFIG_HOME/mnist-lab/owner-password (~/.config/... when XDG_CONFIG_HOME is unset).
  Only the hash is written (argon2-cffi, its default parameters), readable by its user alone.

With neither, the lab trusts everyone who can reach it, as it always did: safe only on this
machine's loopback address, so `check_listen` refuses any other address. Passwords are checked by
argon2-cffi, which compares in constant time; one check at a time, as each takes 64 MiB for a
tenth of a second. The dashboard's side (sign-in, visitors, slowing failed tries) is
dashboard/access.py.
"""
from __future__ import annotations

import functools
import ipaddress
import os
import threading
from pathlib import Path

from core.errors import BadInput, LabError
from core.fsio import atomic_write_bytes

ENV_PASSWORD = "MNIST_LAB_OWNER_PASSWORD"
ENV_FILE = "MNIST_LAB_OWNER_FILE"
MIN_LENGTH = 8
_PREFIX = "$argon2id$"
_ONE_AT_A_TIME = threading.Lock()


class OwnerError(LabError):
    """The owner's password cannot be used: its file is damaged, or the one given is too short."""
    exit_code = 2


def password_file() -> Path:
    if os.environ.get(ENV_FILE):
        return Path(os.environ[ENV_FILE]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "mnist-lab" / "owner-password"


def _hasher():
    from argon2 import PasswordHasher
    return PasswordHasher()


def _check_strength(password: str, where: str) -> None:
    if len(password.strip()) < MIN_LENGTH:
        raise OwnerError(f"{where} is shorter than {MIN_LENGTH} characters: choose a longer password")


@functools.lru_cache(maxsize=1)
def _hash_of_environment(password: str) -> str:
    return _hasher().hash(password)


def _kept_hash() -> str | None:
    """The kept hash, checked; read again only when the file changes (the dashboard asks on every
    button it draws)."""
    path = password_file()
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OwnerError(f"the owner's password file {path} cannot be read ({exc}): set the password again with "
                         "`python -m core owner --set`") from None
    return _checked_hash(path, found.st_ino, found.st_mtime_ns, found.st_size)


@functools.lru_cache(maxsize=4)
def _checked_hash(path: Path, _inode: int, _mtime_ns: int, _size: int) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise OwnerError(f"the owner's password file {path} cannot be read ({exc}): set the password again with "
                         "`python -m core owner --set`") from None
    from argon2 import extract_parameters
    from argon2.exceptions import InvalidHashError
    try:
        if not text.startswith(_PREFIX):
            raise InvalidHashError
        extract_parameters(text)
    except (InvalidHashError, ValueError):
        raise OwnerError(f"the owner's password file {path} is damaged (it holds no Argon2id hash): set the password "
                         "again with `python -m core owner --set`") from None
    return text


def source() -> str | None:
    """Where the owner's password comes from: "environment", "file", or None (not set: everyone
    who reaches the lab is trusted). A password that cannot be used raises OwnerError."""
    if ENV_PASSWORD in os.environ:
        _check_strength(os.environ[ENV_PASSWORD], ENV_PASSWORD)
        return "environment"
    return "file" if _kept_hash() is not None else None


def verify(password: str) -> bool:
    """Is `password` the owner's? False when none is set, or none can be used (a damaged file trusts
    nobody). Argon2's own comparison, in constant time."""
    from argon2.exceptions import VerificationError
    try:
        where = source()
        encoded = (None if where is None else _hash_of_environment(os.environ[ENV_PASSWORD])
                   if where == "environment" else _kept_hash())
    except OwnerError:
        return False
    if encoded is None or not isinstance(password, str) or not password:
        return False
    with _ONE_AT_A_TIME:
        try:
            return _hasher().verify(encoded, password)
        except VerificationError:
            return False


def set_password(password: str) -> Path:
    """Keep the Argon2id hash of `password` (never the password), readable by this user only."""
    _check_strength(password, "the password")
    path = password_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (_hasher().hash(password) + "\n").encode(), mode=0o600)
    except OSError as exc:
        raise OwnerError(f"could not keep the owner's password in {path}: {exc.strerror or exc}") from None
    return path


def clear() -> bool:
    """Forget the kept password; True if there was one."""
    try:
        password_file().unlink()
    except FileNotFoundError:
        return False
    return True


def is_loopback(address: str) -> bool:
    """Does listening on `address` keep the lab to this machine? ("" is every interface.)"""
    address = address.strip().strip("[]")
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


HOW_TO_SET = ("set an owner password first: `python -m core owner --set` (kept), or MNIST_LAB_OWNER_PASSWORD=... "
              "for this start only")


def check_listen(address: str) -> None:
    """Refuse, in one line, to open the lab beyond this machine with no owner password."""
    if is_loopback(address) or source() is not None:
        return
    shown = address or "every network interface"
    raise BadInput(f"the lab would listen on {shown}, where anyone who can reach this machine could train, delete "
                   f"and upload as you: {HOW_TO_SET}")
