"""
MediaWiki in a site of type ``mediawiki``: its files copied into the site and
its headless install, run as the account in its chroot.

* :py:func:`status` says what the site's document root holds (file reads
  only: cheap on every run);
* :py:func:`install` does what is left of an install: copy the files (Debian's
  tree of links, dereferenced, or a verified release archive), run MediaWiki's
  ``maintenance/install.php`` (the database by its socket as the account,
  ``unix_socket``: an empty password), append webarch's settings and put the
  ``LocalSettings.php`` in place whole, mode 0600;
* :py:func:`set_password` sets the admin's password (through MediaWiki's
  ``changePassword.php``, the password in PHP on standard input).

A site with a ``LocalSettings.php`` (written by webarch, by hand or imported)
is never installed over or changed; a document root with other files is
refused.  An interrupted install re-converges: the copy is redone, tables a
killed installer left are completed (never dropped) and the installer, which
skips existing tables, an existing admin and an existing main page, runs again,
then ``update.php``.  What webarch did is in the site's ledger
(``/var/lib/webarch/apps/ACCOUNT-SITE.json``, root 0600).

No function returns, logs or raises with a password in it.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from typing import Any

import webarch_apprun as apprun
import webarch_apps as apps
import webarch_mw as mw
from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_mediawiki"

log = logging.getLogger(__name__)

#: The installer's scratch directory inside the account's chroot (its private /tmp):
#: the throwaway admin password file and the generated LocalSettings.php.
SCRATCH = "/tmp/.webarch-mediawiki-{site}"


def __virtual__() -> str:
    return __virtualname__


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _app(account: str, site: str) -> dict[str, Any]:
    """The model's app of ``account``'s site ``site`` (a mediawiki one)."""
    app, why = apps.find_app(__salt__["webarch.config"](), account, site, "mediawiki")
    if app is None:
        raise CommandExecutionError(why)
    return app


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _text(path: str) -> str | None:
    data = apprun.read_regular(path)
    return None if data is None else data.decode("utf-8", "replace")


def _version(docroot: str) -> str | None:
    """MediaWiki's version from the site's files (None: no MediaWiki there)."""
    return mw.parse_version(*(_text(f"{docroot}/{name}") for name in mw.VERSION_FILES))


def _entries(docroot: str) -> int | None:
    try:
        return len(os.listdir(docroot))
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return 1


def _state(app: dict[str, Any]) -> dict[str, Any]:
    docroot = app["docroot"]
    entries = _entries(docroot)
    version = _version(docroot) if entries else None
    has_settings = bool(entries) and os.path.lexists(f"{docroot}/{mw.SETTINGS}")
    state, detail = mw.classify(entries, has_settings, version, apprun.read_ledger(app))
    return {"state": state, "version": version, "detail": detail}


def _fail(exc: apprun.RunError | ValueError | OSError) -> CommandExecutionError:
    return CommandExecutionError(f"MediaWiki: {exc}")


def _php_in_docroot(app: dict[str, Any], argv: list[str], what: str) -> str:
    """Run ``argv`` as the account in its chroot, in the site's document root."""
    wrapped = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', app["docroot"], *argv]
    return apprun.in_chroot(app, wrapped, what)


def _record(app: dict[str, Any], fresh: bool = False, **entries: Any) -> dict[str, Any]:
    """Add ``entries`` to the site's ledger (``fresh``: to a new one); the whole ledger."""
    ledger = {**({} if fresh else apprun.read_ledger(app)), "kind": "mediawiki", **entries}
    apprun.write_ledger(app, ledger)
    return ledger


# --------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------


def _archive(app: dict[str, Any]) -> str:
    """The local file of the app's release archive (fetched into Salt's cache when it is
    a ``salt://`` or URL source)."""
    source = app["source"]["source"]
    if source.startswith("/"):
        return source
    cached = __salt__["cp.cache_file"](source)
    if not cached:
        raise CommandExecutionError(f"MediaWiki: the release archive {source} was not fetched")
    return cached


def _open_uploads(app: dict[str, Any]) -> None:
    """Let the web server (the site's group) serve the uploads: images/ is 0700 in
    Debian's tree.  Root changes the mode (the account's chmod would drop the setgid
    bit that keeps new uploads in the site's group), on the directory opened without
    following links and only if the account owns it."""
    path = f"{app['docroot']}/{mw.UPLOADS}"
    uid, _gid = apprun.ids(app["account"])
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        mode = info.st_mode & 0o7777
        if info.st_uid != uid:
            raise CommandExecutionError(f"MediaWiki: {path} is not {app['account']}'s")
        if mode & 0o2050 != 0o2050:
            os.fchmod(fd, mode | 0o2050)
    finally:
        os.close(fd)


def _copy(app: dict[str, Any]) -> float:
    """Put MediaWiki's files into the site; the seconds it took."""
    started = time.monotonic()
    source = app["source"]
    # A new copy starts a new ledger: what an earlier install of an emptied site was
    # is gone with its files.
    _record(app, fresh=True, copying=True, copied=False, source=source, copy_started=_now())
    if source["kind"] == "debian":
        apprun.copy_tree(app, app["tree"], exclude=(mw.SETTINGS,))
    else:
        apprun.unpack(app, _archive(app), source["sha256"])
    version = _version(app["docroot"])
    if version is None:
        raise CommandExecutionError(
            f"MediaWiki: no includes/Defines.php in {app['docroot']} after the copy: "
            "not a MediaWiki release"
        )
    _open_uploads(app)
    seconds = round(time.monotonic() - started, 1)
    _record(app, copying=False, copied=True, copied_at=_now(), copied_version=version,
            seconds={"copy": seconds})  # fmt: skip
    return seconds


def _tables(app: dict[str, Any]) -> list[str]:
    out = apprun.php(app, mw.tables_script(app), f"listing the tables of {app['database']}")
    return [line for line in out.splitlines() if line]


def _complete_tables(app: dict[str, Any], existing: list[str]) -> int:
    """Check an interrupted install's tables and create the ones it did not; how many.

    A database with tables that are not MediaWiki's is refused: it is not the wiki's.
    """
    schema = _text(f"{app['docroot']}/{mw.SCHEMA_FILE}")
    if schema is None:
        raise CommandExecutionError(f"MediaWiki: no {mw.SCHEMA_FILE} in {app['docroot']}")
    others = mw.foreign_tables(existing, schema)
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise CommandExecutionError(
            f"MediaWiki: the database {app['database']} holds tables that are not "
            f"MediaWiki's ({shown}): MediaWiki is not installed into it"
        )
    missing = mw.missing_tables_sql(schema, set(existing))
    if missing:
        apprun.php(app, mw.run_sql_script(app, missing),
                   f"creating the missing tables of {app['database']}")  # fmt: skip
    return len(set(mw.schema_tables(schema)) - set(existing))


def _scratch(app: dict[str, Any]) -> str:
    """A fresh private scratch directory in the chroot (its path inside)."""
    inside = SCRATCH.format(site=app["site"])
    apprun.in_chroot(app, ["/bin/sh", "-c", 'rm -rf "$0" && umask 077 && mkdir "$0"', inside],
                     "making the installer's scratch directory")  # fmt: skip
    return inside


def _drop_scratch(app: dict[str, Any]) -> None:
    try:
        apprun.in_chroot(app, ["rm", "-rf", SCRATCH.format(site=app["site"])],
                         "removing the installer's scratch directory")  # fmt: skip
    except apprun.RunError as exc:
        log.warning("MediaWiki: %s", exc)


def _in_scratch(app: dict[str, Any], inside: str, existing: list[str]) -> tuple[str, list[str]]:
    """Run install.php (with a throwaway admin password), complete its LocalSettings.php
    and finish the install with it from the scratch directory ``inside``; the final
    LocalSettings.php text and the steps done."""
    # The chroot's /tmp is a bind of ~/tmp, in the chroots' mount namespace only.
    outside = f"{app['home']}/tmp{inside.removeprefix('/tmp')}"
    apprun.write_as_account(app, f"{outside}/pass", apprun.random_key(40) + "\n")
    _php_in_docroot(app, mw.install_argv(app, f"{inside}/pass", inside), "MediaWiki's install.php")
    generated = apprun.in_chroot(app, ["cat", f"{inside}/{mw.SETTINGS}"],
                                 "reading the installer's LocalSettings.php")  # fmt: skip
    text = mw.local_settings(generated, app)
    apprun.write_as_account(app, f"{outside}/{mw.SETTINGS}", text)
    steps = ["install", "configure"]
    config = ["env", f"MW_CONFIG_FILE={inside}/{mw.SETTINGS}"]
    if existing:
        _php_in_docroot(app, config + mw.update_argv(app), "MediaWiki's update.php")
        steps.append("update")
    if app["email"]:
        _php_in_docroot(app, config + mw.admin_email_argv(app), "setting the admin's email")
        steps.append("admin email")
    return text, steps


def _install(app: dict[str, Any]) -> list[str]:
    """Install into the copied files; the steps done after the copy.

    Everything runs before LocalSettings.php is in the site (the maintenance
    scripts read the scratch copy): an interrupted install leaves none, and the
    next run does it all again.
    """
    steps = []
    existing = _tables(app)
    if existing:
        created = _complete_tables(app, existing)
        steps.append(f"tables completed ({created} created)" if created else "tables found")
    inside = _scratch(app)
    try:
        text, done = _in_scratch(app, inside, existing)
    finally:
        _drop_scratch(app)
    apprun.write_as_account(app, f"{app['docroot']}/{mw.SETTINGS}", text, mode=0o600)
    return steps + done


# --------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------


def status(account: str, site: str) -> dict[str, Any]:
    """
    Say what ``account``'s site ``site`` holds of MediaWiki: ``state`` is
    ``empty`` (nothing, or a copy by webarch that was interrupted), ``copied``
    (webarch's copy, not installed yet), ``installed`` (a LocalSettings.php is
    there: never touched again) or ``foreign`` (other files, or MediaWiki not
    copied by webarch and not installed: left alone); ``version`` is
    MediaWiki's from the files (None without); ``detail`` says more.

    Reads files only (no PHP, no database).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_mediawiki.status alice wiki
    """
    return _state(_app(account, site))


def install(account: str, site: str) -> dict[str, Any]:
    """
    Do what is left of MediaWiki's install in ``account``'s site ``site``: copy
    the files (state ``empty``), run the installer as the account in its chroot
    and put LocalSettings.php in place (``empty``, ``copied``).  An installed
    site is left as it is; a ``foreign`` one is refused.  Returns the ``steps``
    done and the ``version``.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_mediawiki.install alice wiki
    """
    app = _app(account, site)
    now = _state(app)
    if now["state"] == "installed":
        return {"steps": [], "version": now["version"]}
    if now["state"] == "foreign":
        raise CommandExecutionError(
            f"MediaWiki is not installed in {app['docroot']}: {now['detail']}"
        )
    try:
        steps: list[str] = []
        seconds = dict(apprun.read_ledger(app).get("seconds") or {})
        if now["state"] == "empty":
            seconds = {"copy": _copy(app)}
            steps.append("copy")
        started = time.monotonic()
        steps += _install(app)
        seconds["install"] = round(time.monotonic() - started, 1)
    except (apprun.RunError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    version = _version(app["docroot"])
    _record(app, installed=True, installed_at=_now(), version=version, database=app["database"],
            admin=mw.admin_name(app["admin"]), steps=steps, seconds=seconds)  # fmt: skip
    return {"steps": steps, "version": version}


def set_password(account: str, site: str, password: str) -> None:
    """
    Set the password of the wiki's admin (the account's name, as MediaWiki
    writes it: ``alice`` is ``Alice``).  The password goes to PHP on standard
    input, never on a command line, and is never logged or returned.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_mediawiki.set_password alice wiki 'a long random password'
    """
    app = _app(account, site)
    if not os.path.lexists(f"{app['docroot']}/{mw.SETTINGS}"):
        raise CommandExecutionError(f"MediaWiki is not installed in {app['docroot']}")
    script = mw.set_password_script(mw.admin_name(app["admin"]), password)
    try:
        apprun.php(app, script, f"setting the password of the wiki's admin in {app['docroot']}")
    except apprun.RunError as exc:
        raise _fail(exc) from None
