"""Users of the labelling studio, read from a small CSV file, and password checks.

The file has the columns ``username,password,role`` (extra columns are
ignored); ``role`` is ``annotator`` or ``admin``. A password is either plain
text (fine for a local study with throw-away accounts) or an scrypt hash in the
form ``scrypt$<n>$<r>$<p>$<salt_b64>$<hash_b64>``, made with::

    python -m storage.auth hash            # reads the password from stdin
    python -m storage.auth hash --password 's3cret'

scrypt because it is in the standard library (``hashlib.scrypt``) and is
memory-hard, which makes guessing leaked hashes on GPUs expensive. Comparisons
use ``hmac.compare_digest`` so their timing does not reveal how much of a
password matched. Passwords are never logged; :class:`User` hides its secret
from ``repr``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import csv
import getpass
import hashlib
import hmac
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Optional, Sequence

__all__ = [
    "ROLES",
    "REQUIRED_COLUMNS",
    "User",
    "UserFileError",
    "load_users",
    "hash_password",
    "verify_password",
    "authenticate",
    "main",
]

logger = logging.getLogger(__name__)

ROLES: Final[tuple[str, ...]] = ("annotator", "admin")
REQUIRED_COLUMNS: Final[tuple[str, ...]] = ("username", "password", "role")

_SCHEME = "scrypt"
# n=2**14, r=8, p=1: the parameters recommended for interactive logins (about 16 MiB, ~50 ms).
_N, _R, _P = 2**14, 8, 1
_SALT_BYTES, _HASH_BYTES = 16, 32
# Upper bounds for parameters read from the file, so a crafted hash cannot make a login
# allocate gigabytes or spin for minutes.
_MAX_N, _MAX_R, _MAX_P = 2**20, 32, 16
_MAX_MEM = 1 << 30


@dataclass(frozen=True)
class User:
    """One account. ``secret`` is the password as stored in the file (plain or scrypt hash)."""

    username: str
    role: str
    secret: str = field(repr=False)

    @property
    def is_admin(self) -> bool:
        """Admins see every annotator's judgements and manage models; annotators see only their own."""
        return self.role == "admin"


class UserFileError(ValueError):
    """The users file is unusable; the message names the file and the row (the header is row 1)."""


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _b64decode(value: str) -> bytes:
    return base64.b64decode(value.encode("ascii"), validate=True)


def _parse_hash(secret: str) -> Optional[tuple[int, int, int, bytes, bytes]]:
    """``(n, r, p, salt, digest)`` for a well-formed scrypt hash; None for anything else."""
    parts = secret.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = _b64decode(parts[4]), _b64decode(parts[5])
    except (ValueError, binascii.Error):
        return None
    power_of_two = n > 1 and n & (n - 1) == 0
    if not (power_of_two and n <= _MAX_N and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P and salt and digest):
        return None
    return n, r, p, salt, digest


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAX_MEM, dklen=length)


def hash_password(password: str) -> str:
    """Return ``scrypt$<n>$<r>$<p>$<salt_b64>$<hash_b64>`` for ``password`` with a fresh random salt."""
    if not isinstance(password, str) or not password:
        raise ValueError("password is empty; choose a non-empty password")
    salt = os.urandom(_SALT_BYTES)
    digest = _scrypt(password, salt, _N, _R, _P, _HASH_BYTES)
    return f"{_SCHEME}${_N}${_R}${_P}${_b64encode(salt)}${_b64encode(digest)}"


def verify_password(user: User, password: str) -> bool:
    """True if ``password`` matches ``user``'s stored (plain or scrypt-hashed) password."""
    if not isinstance(password, str):
        return False
    parsed = _parse_hash(user.secret)
    if parsed is None:
        if user.secret.startswith(_SCHEME + "$"):
            return False  # a malformed hash never matches, not even its own text
        return hmac.compare_digest(user.secret.encode("utf-8"), password.encode("utf-8"))
    n, r, p, salt, digest = parsed
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(digest)), digest)


# Checked against when the username is unknown, so that a failed login takes about as
# long for an unknown user as for a known one (no username probing through timing).
_DUMMY_USER = User(
    username="",
    role="annotator",
    secret=f"{_SCHEME}${_N}${_R}${_P}${_b64encode(bytes(_SALT_BYTES))}${_b64encode(bytes(_HASH_BYTES))}",
)


def authenticate(users: dict[str, User], username: str, password: str) -> Optional[User]:
    """The user if ``username``/``password`` match, else None (which of the two was wrong is not said)."""
    user = users.get(username)
    if user is None:
        verify_password(_DUMMY_USER, password)
        logger.info("login refused: unknown user")
        return None
    if not verify_password(user, password):
        logger.info("login refused for %r: wrong password", username)
        return None
    return user


def load_users(path: Path) -> dict[str, User]:
    """Read the users CSV; raises :class:`UserFileError` naming the row of the first problem.

    Rows are numbered as lines of a spreadsheet: the header is row 1. Blank
    lines are skipped. Usernames and roles are stripped of surrounding spaces;
    passwords are taken exactly as written.
    """
    path = Path(path)
    try:
        # utf-8-sig: files saved by Excel start with a byte-order mark.
        with path.open(encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise UserFileError(
            f"{path}: users file not found; create it with the columns username,password,role"
        ) from None
    except UnicodeDecodeError as exc:
        raise UserFileError(f"{path}: not UTF-8 text ({exc.reason}); save the users file as UTF-8") from None
    if not rows:
        raise UserFileError(f"{path}: the file is empty; row 1 must be the header username,password,role")

    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise UserFileError(
            f"{path}: row 1 (header) lacks column(s) {', '.join(missing)}; "
            f"expected {','.join(REQUIRED_COLUMNS)} (got {','.join(header) or 'nothing'})"
        )
    col = {name: header.index(name) for name in REQUIRED_COLUMNS}

    users: dict[str, User] = {}
    first_row: dict[str, int] = {}
    for row_number, cells in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) < len(header):
            raise UserFileError(
                f"{path}: row {row_number} has {len(cells)} field(s) but the header has {len(header)}; "
                "fill in username, password and role"
            )
        username = cells[col["username"]].strip()
        password = cells[col["password"]]
        role = cells[col["role"]].strip().lower()
        where = f"{path}: row {row_number}"
        if not username:
            raise UserFileError(f"{where}: username is empty; every row needs a username")
        if username in users:
            raise UserFileError(
                f"{where}: duplicate username {username!r} (first on row {first_row[username]}); "
                "usernames must be unique"
            )
        if role not in ROLES:
            raise UserFileError(f"{where}: unknown role {role!r} for {username!r}; use one of: {', '.join(ROLES)}")
        if not password:
            raise UserFileError(f"{where}: password of {username!r} is empty; set a password or a scrypt hash")
        if password.startswith(_SCHEME + "$") and _parse_hash(password) is None:
            raise UserFileError(
                f"{where}: password of {username!r} looks like an scrypt hash but is malformed; expected "
                "scrypt$<n>$<r>$<p>$<salt_b64>$<hash_b64> as printed by `python -m storage.auth hash`"
            )
        users[username] = User(username=username, role=role, secret=password)
        first_row[username] = row_number
    logger.info("loaded %d user(s) from %s", len(users), path)
    return users


# ---------------------------------------------------------------------------- CLI


def _read_password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return str(args.password)
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Repeat: ") != first:
            raise ValueError("the two passwords differ; nothing was hashed")
        return first
    line = sys.stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m storage.auth hash [--password P]``: print the scrypt hash for the users file."""
    parser = argparse.ArgumentParser(
        prog="python -m storage.auth",
        description="Helpers for the labelling studio's users file (username,password,role).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    hash_cmd = commands.add_parser(
        "hash",
        help="print the scrypt hash of a password, for the password column",
        description="Print scrypt$<n>$<r>$<p>$<salt_b64>$<hash_b64> for a password. The password is read "
        "from stdin (first line; prompted twice on a terminal) unless --password is given. Prefer stdin: "
        "--password ends up in the shell history and the process list.",
    )
    hash_cmd.add_argument("--password", help="the password (default: read it from stdin)")
    args = parser.parse_args(argv)
    try:
        password = _read_password(args)
        hashed = hash_password(password)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(hashed + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
