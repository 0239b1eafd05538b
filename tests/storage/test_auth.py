"""Users file, password hashing/verification and the ``python -m storage.auth`` CLI."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

import storage
from storage.auth import (
    User,
    UserFileError,
    authenticate,
    hash_password,
    load_users,
    main,
    verify_password,
)

ROOT = Path(storage.__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str, name: str = "users.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_users_plain_and_hashed(tmp_path: Path) -> None:
    hashed = hash_password("correct horse")
    path = _write(
        tmp_path,
        f"username,password,role,comment\nalice,wonderland,annotator,plain\n\n bob ,{hashed}, Admin ,hashed\n",
    )
    users = load_users(path)
    assert list(users) == ["alice", "bob"]
    assert (users["alice"].role, users["bob"].role, users["bob"].is_admin) == ("annotator", "admin", True)
    assert verify_password(users["alice"], "wonderland")
    assert verify_password(users["bob"], "correct horse")
    assert not verify_password(users["alice"], "Wonderland")
    assert not verify_password(users["bob"], "correct horse ")
    assert not verify_password(users["bob"], hashed)  # the hash itself is not the password
    assert "wonderland" not in repr(users["alice"]) and hashed not in repr(users["bob"])


def test_hash_format_and_salt(tmp_path: Path) -> None:
    first, second = hash_password("pw"), hash_password("pw")
    assert first != second  # fresh salt each time
    parts = first.split("$")
    assert parts[:4] == ["scrypt", "16384", "8", "1"] and len(parts) == 6
    user = User("u", "annotator", first)
    assert verify_password(user, "pw") and not verify_password(user, "pw2") and not verify_password(user, "")
    with pytest.raises(ValueError, match="password is empty"):
        hash_password("")


def test_authenticate(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hashed = hash_password("pw2")
    users = load_users(_write(tmp_path, f"username,password,role\nann,pw1,annotator\nadm,{hashed},admin\n"))
    with caplog.at_level(logging.INFO, logger="storage.auth"):
        assert authenticate(users, "ann", "pw1") == users["ann"]
        assert authenticate(users, "adm", "pw2") == users["adm"]
        assert authenticate(users, "ann", "pw2") is None
        assert authenticate(users, "ghost", "pw1") is None
    assert "pw1" not in caplog.text and "pw2" not in caplog.text
    assert [r.getMessage() for r in caplog.records] == [
        "login refused for 'ann': wrong password",
        "login refused: unknown user",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user,password,role\na,b,admin\n", "row 1 (header) lacks column(s) username; expected username,password,role"),
        ("username,role\na,admin\n", "row 1 (header) lacks column(s) password"),
        ("", "the file is empty; row 1 must be the header username,password,role"),
        ("username,password,role\nalice,pw,annotator\n ,pw,annotator\n", "row 3: username is empty"),
        ("username,password,role\nalice,pw,boss\n",
         "row 2: unknown role 'boss' for 'alice'; use one of: annotator, admin"),
        ("username,password,role\nalice,pw,annotator\nbob,pw,admin\nalice,x,admin\n",
         "row 4: duplicate username 'alice' (first on row 2); usernames must be unique"),
        ("username,password,role\nalice,,annotator\n", "row 2: password of 'alice' is empty"),
        ("username,password,role\nalice,pw\n", "row 2 has 2 field(s) but the header has 3"),
        ("username,password,role\nalice,scrypt$16384$8$1$bad,annotator\n",
         "row 2: password of 'alice' looks like an scrypt hash but is malformed"),
    ],
)
def test_load_users_errors_name_the_row(tmp_path: Path, content: str, message: str) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(UserFileError) as info:
        load_users(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_load_users_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserFileError, match="users file not found; create it with the columns username,password,role"):
        load_users(tmp_path / "nope.csv")


def test_load_users_accepts_excel_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("username,password,role\r\nalice,pw,annotator\r\n".encode("utf-8-sig"))
    assert verify_password(load_users(path)["alice"], "pw")


def test_cli_hash_from_option_and_stdin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash", "--password", "s3cret"]) == 0
    printed = capsys.readouterr().out.strip()
    assert verify_password(User("x", "admin", printed), "s3cret")

    out = subprocess.run(
        [sys.executable, "-m", "storage.auth", "hash"], input="from stdin\n", capture_output=True, text=True,
        cwd=ROOT, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert verify_password(User("x", "admin", out.stdout.strip()), "from stdin")
    assert "from stdin" not in out.stdout + out.stderr

    help_out = subprocess.run(
        [sys.executable, "-m", "storage.auth", "hash", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert help_out.returncode == 0 and "--password" in help_out.stdout and "stdin" in help_out.stdout

    empty = subprocess.run(
        [sys.executable, "-m", "storage.auth", "hash"], input="\n", capture_output=True, text=True, cwd=ROOT,
        timeout=60,
    )
    assert (empty.returncode, empty.stdout) == (2, "")
    assert "error: password is empty" in empty.stderr
