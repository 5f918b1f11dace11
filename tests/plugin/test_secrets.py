"""A storage password never leaves the config: every command runs with a PostgreSQL URL that
holds one, and neither what it prints or logs, nor the files it writes, nor anything in the
storage contains the password.

The role is created here with a real password (the local server trusts 127.0.0.1, so it also
accepts it); the test skips when the server does not allow creating roles.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from plugin_helpers import TinyStudy, copy_estimate_cache, run_cli, tiny_raw, write_config

from optuna_merge3.redaction import redact


@pytest.fixture
def password_url(postgres_url: str):
    import psycopg

    role, password = f"merge3_pw_{uuid.uuid4().hex[:8]}", f"S3cret-{uuid.uuid4().hex}"
    server, database = postgres_url.rsplit("/", 1)
    try:
        with psycopg.connect(postgres_url, autocommit=True) as con:
            con.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
            con.execute(f"ALTER DATABASE {database} OWNER TO {role}")
            con.execute(f"ALTER SCHEMA public OWNER TO {role}")
    except psycopg.Error as exc:
        pytest.skip(f"cannot create a PostgreSQL role with a password here: {exc}")
    host = server.split("@", 1)[1]
    yield f"postgresql://{role}:{password}@{host}/{database}", password, postgres_url
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute(f"ALTER DATABASE {database} OWNER TO postgres")
        con.execute("ALTER SCHEMA public OWNER TO postgres")
        con.execute(f"REASSIGN OWNED BY {role} TO postgres")
        con.execute(f"DROP OWNED BY {role}")
        con.execute(f"DROP ROLE {role}")


def test_redact_masks_every_url_password() -> None:
    assert redact("x postgresql+psycopg://u:p%40w@h:5432/db y") == (
        "x postgresql+psycopg://u:***@h:5432/db y")
    assert redact("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact("host=h password=pw dbname=d") == "host=h password=*** dbname=d"
    assert redact("sqlite:////tmp/a.db and postgresql://u@h/db") == (
        "sqlite:////tmp/a.db and postgresql://u@h/db")


def _storage_dump(admin_url: str) -> str:
    """Every row of every table of the study database, as JSON text."""
    import psycopg

    with psycopg.connect(admin_url) as con:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
        return "\n".join(str(row[0]) for table in tables
                         for row in con.execute(f'SELECT row_to_json(t)::text FROM "{table}" t'))


@pytest.mark.timeout(300)
def test_no_command_leaks_the_storage_password(
    password_url: tuple[str, str, str], tiny_run: TinyStudy, tmp_path: Path
) -> None:
    url, password, admin_url = password_url
    out_dir = tmp_path / "out"
    copy_estimate_cache(tiny_run, out_dir)
    raw = tiny_raw(out_dir, n_trials=2, name="secret")
    raw["study"]["storage"] = url  # in the config file, hence in the study note's text
    config = write_config(tmp_path / "secret.toml", raw)
    bad = url.replace("@127.0.0.1:5432", "@127.0.0.1:1")
    commands = [
        ("estimate", config), ("-v", "run", config), ("best", config, "--no-truth"),
        ("export", config, "0", "--out", tmp_path / "merged"), ("report", config),
        ("repair", config), ("run", config, "--heartbeat", "0"),
        ("run", config, "--storage", bad), ("best", config, "--storage", bad),
    ]
    printed = []
    for argv in commands:
        code, out, err = run_cli(*argv)
        printed.append((argv, code, out + err))
    assert [c for _, c, _ in printed[:6]] == [0, 0, 0, 0, 0, 0], printed
    assert [c for _, c, _ in printed[6:]] == [2, 2, 2]
    assert "postgresql://" in printed[1][2] and ":***@" in printed[1][2]  # really printed
    leaks = [argv for argv, _, text in printed if password in text]
    assert leaks == []
    files = [p for root in (out_dir, tmp_path / "merged") for p in root.rglob("*") if p.is_file()]
    assert len(files) > 5
    assert [p for p in files if password.encode() in p.read_bytes()] == []
    dump = _storage_dump(admin_url)
    assert ":***@127.0.0.1" in dump  # the note with the (masked) storage URL is stored
    assert password not in dump
    assert json.dumps(password)[1:-1] not in dump
