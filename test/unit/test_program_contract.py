"""The contract between the account model and the programs that read its map files.

The model is built for pillar.example with the real account model; the map
files it makes (as the SLS files write them: the lines, newline-terminated)
are fed to the programs' own parsers, which must find every account, site and
database the model has.  webarch-db-dump, a shell script, runs on a copy
whose map and home base point into a temporary tree, with stand-ins for the
MariaDB clients.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import webarch_htaccess_check
import webarch_log_split
import webarch_mail_gate
import webarch_mail_log
import webarch_model
import webarch_paths as paths
import webarch_progs
from unit.program_helpers import PROGRAMS


@pytest.fixture(scope="module")
def built(example_pillar: dict) -> dict:
    """The model of pillar.example on an empty host, Debian 12."""
    host = webarch_model.HostUsers(users={}, groups={}, managed=frozenset(), socket_key="k")
    return webarch_model.build_model(example_pillar["webarch"], host, 12)


def map_file(model: dict, key: str) -> bytes:
    """Map file ``key`` as the SLS files write it (``contents:`` a list of lines)."""
    return ("\n".join(model[key]["lines"]) + "\n").encode()


def present(model: dict) -> list[dict]:
    """The accounts that are present."""
    return [model["accounts"][name] for name in model["present"]]


def test_pillar_example_has_something_to_check(built: dict) -> None:
    accounts = present(built)
    assert len(accounts) >= 2
    assert any("-" in a["name"] for a in accounts)  # a name only the full pattern accepts
    assert any(site["aliases"] for a in accounts for site in a["sites"].values())
    assert sum(len(a["mariadb"]["present"]) for a in accounts) >= 2


# webarch-log-split


def expected_sites(model: dict) -> dict[bytes, str]:
    """Every server name and alias of a present account -> the account."""
    return {
        name.encode(): account["name"]
        for account in present(model)
        for site in account["sites"].values()
        for name in [site["server_name"], *site["aliases"]]
    }


def test_log_split_finds_every_site(built: dict, tmp_path: Path) -> None:
    expected = expected_sites(built)
    assert webarch_log_split.parse_map(map_file(built, "log_map")) == expected
    # Through the file, as the running program reads it.
    path = tmp_path / "log-map"
    path.write_bytes(map_file(built, "log_map"))
    log_map = webarch_log_split.LogMap(str(path))
    log_map.refresh(0.0)
    for vhost, account in expected.items():
        line = vhost.upper() + b' 192.0.2.1 - - [05/Dec/2026:00:00:00 +0000] "GET / HTTP/1.1"\n'
        assert log_map.account(webarch_log_split.first_field(line)) == account


def test_htaccess_report_finds_every_account_with_a_site(built: dict) -> None:
    expected = sorted({account for account in expected_sites(built).values()})
    assert webarch_htaccess_check.accounts_of_map(map_file(built, "log_map")) == expected
    assert webarch_htaccess_check.Config().map_path == built["log_map"]["path"]
    for account in present(built):
        assert account["home"] == f"{webarch_htaccess_check.Config().home_base}/{account['name']}"


def test_log_split_reads_the_models_map(built: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBARCH_LOG_MAP", raising=False)
    monkeypatch.delenv("WEBARCH_LOG_HOME_BASE", raising=False)
    config = webarch_log_split.Config.from_env("access")
    assert config.map_path == built["log_map"]["path"]
    for account in present(built):
        assert config.account_path(account["name"]).startswith(f"{account['home']}/logs/")


# webarch-mail-gate and webarch-mail-log


def test_mail_programs_find_every_account(built: dict, tmp_path: Path) -> None:
    expected = {a["name"]: a["home"] for a in present(built)}
    data = map_file(built, "mail_accounts")
    assert webarch_progs.parse_mail_accounts(data) == {k.encode(): v for k, v in expected.items()}
    path = tmp_path / "mail-accounts"
    path.write_bytes(data)
    assert webarch_mail_gate.accounts(str(path)) == set(expected)
    accounts = webarch_mail_log.Accounts(str(path), webarch_mail_log.new_warner())
    accounts.refresh()
    router = webarch_mail_log.Router(accounts)
    for name in expected:
        line = f"2026-12-05 00:00:00 U={name} rejected RCPT <x@example.org>: relay not permitted"
        assert router.route(line.encode()) == name.encode()


def test_mail_programs_read_the_models_file(built: dict) -> None:
    path = built["mail"]["accounts_path"]
    assert path == paths.MAIL_ACCOUNTS_PATH
    assert webarch_mail_gate.accounts.__defaults__ == (path,)
    assert webarch_mail_log.parse_args([]).accounts == path


# webarch-db-dump

DB_DUMP = PROGRAMS / "webarch-db-dump.sh"
FAKE_CLIENTS = {
    # The database exists.
    "mariadb": "#!/bin/sh\necho 1\n",
    # A whole dump; the database dumped is recorded.
    "mariadb-dump": '#!/bin/sh\nfor db; do :; done\necho "$db" >>"$DUMPED"\n'
    'printf -- "-- MariaDB dump\\n-- Dump completed on 2026-12-05\\n"\n',
    # The accounts' groups do not exist here.
    "chown": "#!/bin/sh\nexit 0\n",
}


def db_dump_copy(tmp_path: Path, map_path: Path, home_base: Path) -> Path:
    """A copy of webarch-db-dump that reads ``map_path`` and dumps below ``home_base``."""
    text = DB_DUMP.read_text()
    for old, new in [
        (f"map={paths.DB_DUMP_MAP_PATH}\n", f"map={map_path}\n"),
        (f"home={paths.HOME_BASE}/$user\n", f"home={home_base}/$user\n"),
    ]:
        assert text.count(old) == 1, f"webarch-db-dump no longer has {old!r}"
        text = text.replace(old, new)
    copy = tmp_path / "webarch-db-dump"
    copy.write_text(text)
    copy.chmod(0o755)
    return copy


def test_db_dump_reads_the_models_map(built: dict) -> None:
    assert built["db_dumps"]["path"] == paths.DB_DUMP_MAP_PATH
    assert re.search(rf"^map={re.escape(paths.DB_DUMP_MAP_PATH)}$", DB_DUMP.read_text(), re.M)


def test_db_dump_dumps_every_database(built: dict, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("webarch-db-dump dumps only into root's directories")
    expected = {(a["name"], db) for a in present(built) for db in a["mariadb"]["present"]}
    map_path = tmp_path / "db-dumps"
    map_path.write_bytes(map_file(built, "db_dumps"))
    home_base = tmp_path / "home"
    for account in present(built):
        (home_base / account["name"] / "backups" / "mariadb").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in FAKE_CLIENTS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    dumped = tmp_path / "dumped"
    proc = subprocess.run(
        [str(db_dump_copy(tmp_path, map_path, home_base)), "14"],
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DUMPED": str(dumped)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(dumped.read_text().split()) == sorted(db for _, db in expected)
    found = {
        (path.parts[-4], path.name.split("-")[0])
        for path in home_base.glob("*/backups/mariadb/*.sql.gz")
    }
    assert found == expected


def test_db_dump_keeps_older_dumps_when_the_new_one_cannot_be_put_in_place(
    built: dict, tmp_path: Path
) -> None:
    """A dump that cannot get its owner is no dump: nothing older is deleted, it fails."""
    if os.geteuid() != 0:
        pytest.skip("webarch-db-dump dumps only into root's directories")
    account = present(built)[0]
    db = account["mariadb"]["present"][0]
    map_path = tmp_path / "db-dumps"
    map_path.write_text(f"{account['name']} {db}\n")
    home_base = tmp_path / "home"
    dump_dir = home_base / account["name"] / "backups" / "mariadb"
    dump_dir.mkdir(parents=True)
    old = dump_dir / f"{db}-20200101T000000Z.sql.gz"
    old.write_bytes(b"old dump")
    os.utime(old, (0, 0))  # far older than any retention
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {**FAKE_CLIENTS, "chown": "#!/bin/sh\nexit 1\n"}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    proc = subprocess.run(
        [str(db_dump_copy(tmp_path, map_path, home_base)), "1"],
        env={
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "DUMPED": str(tmp_path / "dumped"),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout
    assert "not put in place; older dumps kept" in proc.stderr
    assert sorted(p.name for p in dump_dir.iterdir()) == [old.name]


# Where the programs find their helpers


@pytest.mark.parametrize(
    "module", [webarch_log_split, webarch_mail_gate, webarch_mail_log, webarch_htaccess_check]
)
def test_programs_import_their_helpers_from_the_installed_dir(module: object) -> None:
    assert module.LIB_DIR == paths.PROGRAM_LIB_DIR  # type: ignore[attr-defined]


# The static units and scripts spell some paths out (their bytes must not change
# on an upgrade): they must be the formula's.

SYSTEMD = PROGRAMS.parent / "systemd"


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (SYSTEMD / "webarch-mail@.service", f"ExecStart={paths.PROGRAM_DIR}/webarch-mail-gate"),
        (SYSTEMD / "webarch-mail-log.service", f"ExecStart={paths.PROGRAM_DIR}/webarch-mail-log"),
        (SYSTEMD / "webarch-mail.socket", f"ListenStream={paths.MAIL_SOCKET}"),
        (
            SYSTEMD / "webarch-db-dump.service.jinja",
            f"ExecStart={paths.PROGRAM_DIR}/webarch-db-dump {{{{ retention_days }}}}",
        ),
        (SYSTEMD / "webarch-md-reload.path", f"PathExists={paths.MD_STAMP_DIR}/renewed"),
        (
            SYSTEMD / "webarch-md-reload.service",
            f"ExecStart=/bin/rm -f {paths.MD_STAMP_DIR}/renewed",
        ),
        (
            SYSTEMD / "webarch-htaccess-report.service",
            f"ExecStart={paths.PROGRAM_DIR}/webarch-htaccess-check --report",
        ),
        (
            SYSTEMD / "webarch-htaccess-report.service",
            f"ReadWritePaths={paths.HOME_BASE} {paths.STATE_DIR}",
        ),
        (PROGRAMS / "webarch-md-message.sh", f"  renewed) touch {paths.MD_STAMP_DIR}/renewed ;;"),
        (PROGRAMS / "webarch-db-dump.sh", f"map={paths.DB_DUMP_MAP_PATH}"),
    ],
    ids=lambda value: value.name if isinstance(value, Path) else "",
)
def test_static_files_name_the_formulas_paths(path: Path, line: str) -> None:
    assert line in path.read_text().splitlines()


def test_the_htaccess_report_units_are_the_ones_webarch_log_split_starts() -> None:
    for suffix in ("service", "timer"):
        assert (SYSTEMD / f"{paths.HTACCESS_REPORT_UNIT}.{suffix}").is_file()
    assert f"{paths.HTACCESS_REPORT_UNIT}.service" in webarch_log_split.REPORT_COMMAND
