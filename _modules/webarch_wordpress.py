"""
WordPress installed into a site by webarch (a site of type ``wordpress`` with an
``app`` block: ``_utils/webarch_apps.py``).

* :py:func:`status` tells where the site stands, cheaply (no PHP once the
  ledger says installed);
* :py:func:`install` does what remains of copy, configure, install, as the
  account (its chroot for PHP), and never touches a WordPress that is there
  already, whoever put it there;
* :py:func:`set_password` sets the admin's password (the notification path
  generates and mails it).

The ledger (root 0600 JSON, ``app["ledger"]``) records what webarch did::

    {"kind": "wordpress", "copying": true, "copied": true,
     "source": "debian" | "https://.../wordpress-6.8.tar.gz", "sha256": "..." (archive only),
     "version": "6.1.9", "configured": true, "config_sha256": "...",
     "installed": true, "installed_version": "6.1.9",
     "at": {"copy": ISO-8601, "configure": ..., "install": ...}}

No function returns, logs or raises with a key, salt or password in it.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import webarch_apprun as apprun
import webarch_apps as apps
import webarch_wp as wp
from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_wordpress"

log = logging.getLogger(__name__)

#: The steps install() does from each state, in order.
STEPS = {
    "empty": ("copy", "configure", "install"),
    "copied": ("configure", "install"),
    "configured": ("install",),
    "installed": (),
}
#: Largest version.php / wp-config.php root reads (they are a few KiB).
READ_LIMIT = 1 << 20


def __virtual__() -> str:
    return __virtualname__


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _app(account: str, site: str) -> dict[str, Any]:
    """The model's app of ``account``'s site ``site`` (a wordpress one)."""
    app, why = apps.find_app(__salt__["webarch.config"](), account, site, "wordpress")
    if app is None:
        raise CommandExecutionError(why)
    return app


def _version_of(docroot: str) -> str | None:
    data = apprun.read_regular(f"{docroot}/{wp.VERSION_FILE}")
    return wp.parse_version(data.decode("utf-8", "replace")) if data is not None else None


def _config_path(docroot: str) -> str | None:
    """Where WordPress finds its ``wp-config.php`` (the docroot, or the directory above
    it when that holds no WordPress of its own), None when there is none."""
    here = f"{docroot}/wp-config.php"
    if os.path.lexists(here):
        return here
    parent = os.path.dirname(docroot.rstrip("/"))
    above = f"{parent}/wp-config.php"
    if os.path.lexists(above) and not os.path.lexists(f"{parent}/wp-settings.php"):
        return above
    return None


def _sha256(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


def _facts(app: dict[str, Any]) -> wp.Facts:
    docroot = app["docroot"]
    ledger = apprun.read_ledger(app)
    config = _config_path(docroot)
    ours = False
    if config and ledger.get("config_sha256") and not ledger.get("installed"):
        ours = _sha256(apprun.read_regular(config)) == ledger["config_sha256"]
    return wp.Facts(
        empty=apprun.is_empty(docroot),
        config=config is not None,
        config_ours=ours,
        wordpress=all(os.path.isfile(f"{docroot}/{name}") for name in wp.CORE_FILES),
        ledger=ledger,
    )


def _php(app: dict[str, Any], script: str, what: str) -> dict[str, Any]:
    """Run ``script`` (PHP on stdin) as the account in its chroot; what it printed last."""
    try:
        output = apprun.php(app, script, what)
    except apprun.RunError as exc:
        raise CommandExecutionError(f"{app['account']}/{app['site']}: {exc}") from None
    result = wp.parse_result(output)
    if result is None:
        raise CommandExecutionError(
            f"{app['account']}/{app['site']}: {what}: WordPress stopped: {wp.page_text(output)}"
        )
    return result


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _record(app: dict[str, Any], ledger: dict[str, Any], step: str, **entries: Any) -> None:
    """Add ``entries`` (and when ``step`` was done) to the ledger and write it."""
    ledger.update(entries, kind="wordpress")
    ledger.setdefault("at", {})[step] = _now()
    apprun.write_ledger(app, ledger)


def _run_step(app: dict[str, Any], what: str, step: Callable[[], None]) -> None:
    try:
        step()
    except apprun.RunError as exc:
        raise CommandExecutionError(f"{app['account']}/{app['site']}: {what}: {exc}") from None


# --------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------


def _archive_path(source: str) -> str:
    """A local copy of a release archive: an absolute path as it is, salt:// or https://
    cached by the minion (its SHA-256 is checked before unpacking)."""
    if source.startswith("/"):
        return source
    cached = __salt__["cp.cache_file"](source)
    if not cached:
        raise CommandExecutionError(f"cannot fetch the WordPress release {source}")
    return cached


def _copy(app: dict[str, Any], ledger: dict[str, Any]) -> None:
    """Put WordPress's files into the empty document root, as the account."""
    source = app["source"]
    if source["kind"] == "debian" and not os.path.isfile(f"{app['tree']}/{wp.VERSION_FILE}"):
        raise CommandExecutionError(
            f"{app['tree']} holds no WordPress: Debian's packages "
            f"{', '.join(app['packages'])} are not installed"
        )
    archive = _archive_path(source["source"]) if source["kind"] == "archive" else ""
    ledger.clear()
    _record(app, ledger, "copy", copying=True)
    _run_step(app, "creating the document root",
              lambda: apprun.as_account(app, ["mkdir", "-p", app["docroot"]], "mkdir"))  # fmt: skip
    if source["kind"] == "debian":
        _run_step(app, "copying", lambda: apprun.copy_tree(app, app["tree"], wp.DEBIAN_EXCLUDE))
        origin: dict[str, Any] = {"source": "debian"}
    else:
        _run_step(app, "unpacking", lambda: apprun.unpack(app, archive, source["sha256"]))
        origin = {"source": source["source"], "sha256": source["sha256"]}
    version = _version_of(app["docroot"])
    if version is None:
        raise CommandExecutionError(f"{app['docroot']}: no WordPress after copying ({origin})")
    uploads = f"{app['docroot']}/wp-content/uploads"
    _run_step(app, "creating wp-content/uploads",
              lambda: apprun.as_account(app, ["mkdir", "-p", uploads], "mkdir"))  # fmt: skip
    _record(app, ledger, "copy", copying=False, copied=True, version=version, **origin)


def _configure(app: dict[str, Any], ledger: dict[str, Any]) -> None:
    """Write wp-config.php (0600: only the account's pool reads it) and the rewrite
    rules' .htaccess (unless the site has one), as the account."""
    docroot = app["docroot"]
    keys = {name: apprun.random_key(wp.KEY_LENGTH) for name in wp.KEY_NAMES}
    text = wp.config_text(app, keys)
    path = f"{docroot}/wp-config.php"
    _run_step(app, "writing wp-config.php", lambda: apprun.write_as_account(app, path, text))
    htaccess = f"{docroot}/.htaccess"
    if not os.path.lexists(htaccess):
        _run_step(app, "writing .htaccess",
                  lambda: apprun.write_as_account(app, htaccess, wp.HTACCESS, 0o644))  # fmt: skip
    digest = hashlib.sha256(text.encode()).hexdigest()
    _record(app, ledger, "configure", configured=True, config_sha256=digest)


def _install(app: dict[str, Any], ledger: dict[str, Any]) -> str:
    """WordPress's own install (its tables, the admin user, the first post), unless its
    tables are there already; what was done ("installed" or "kept")."""
    throwaway = apprun.random_key(48)
    got = _php(app, wp.install_script(app, throwaway), "WordPress's install")
    version = got.get("version") or _version_of(app["docroot"])
    _record(app, ledger, "install", installed=True, installed_version=version)
    return str(got.get("done"))


# --------------------------------------------------------------------------
# Salt functions
# --------------------------------------------------------------------------


def status(account: str, site: str) -> dict[str, Any]:
    """
    Where ``account``'s WordPress site ``site`` stands: ``{"state", "version",
    "detail"}``.  ``state`` is ``empty`` (nothing in the document root),
    ``copied`` (webarch copied the files), ``configured`` (webarch wrote
    wp-config.php, WordPress's tables are not there yet), ``installed`` (by
    webarch, or any wp-config.php webarch did not write: left as it is) or
    ``foreign`` (other files, or a WordPress webarch did not copy and no
    wp-config.php: left alone).  PHP runs only for ``configured`` candidates.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_wordpress.status alice www
    """
    app = _app(account, site)
    verdict = wp.classify(_facts(app))
    state, detail = verdict.state, verdict.detail
    if verdict.ask_db:
        got = _php(app, wp.check_script(app), "checking WordPress's tables")
        if got.get("installed"):
            state, detail = "installed", "WordPress's tables are installed"
            # Noted, so that the next runs need no PHP to know it.
            _record(app, apprun.read_ledger(app), "install", installed=True, found_installed=True)
        else:
            detail = "wp-config.php written by webarch; WordPress's tables not installed yet"
    return {"state": state, "version": _version_of(app["docroot"]), "detail": detail}


def version(account: str, site: str) -> str | None:
    """
    The WordPress version in ``account``'s site ``site`` (``$wp_version`` of its
    wp-includes/version.php), None when there is none.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_wordpress.version alice www
    """
    return _version_of(_app(account, site)["docroot"])


def install(account: str, site: str) -> dict[str, Any]:
    """
    Install WordPress into ``account``'s site ``site``: what remains of copy
    (Debian's tree or the pillar's release archive), configure (wp-config.php
    with no password, new keys and salts; .htaccess) and install (WordPress's
    own install, headless, as the account in its chroot; the admin is the
    account, its password set later by :py:func:`set_password`).  Returns
    ``{"steps": [...], "version": ..., "seconds": {step: duration}}``; nothing
    for an installed site; refuses a document root with other files.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_wordpress.install alice www
    """
    app = _app(account, site)
    found = status(account, site)
    state = found["state"]
    if state == "foreign":
        raise CommandExecutionError(
            f"{app['docroot']}: {found['detail']}; webarch installs WordPress only into an "
            "empty document root: nothing copied, left alone"
        )
    ledger = apprun.read_ledger(app)
    steps = {"copy": _copy, "configure": _configure, "install": _install}
    done: list[str] = []
    seconds: dict[str, float] = {}
    for step in STEPS[state]:
        began = time.monotonic()
        what = steps[step](app, ledger)
        seconds[step] = round(time.monotonic() - began, 2)
        done.append(step if what in (None, "installed") else f"{step}: {what}")
        log.info("webarch_wordpress: %s/%s: %s done", account, site, step)
    result: dict[str, Any] = {"steps": done, "version": _version_of(app["docroot"])}
    if seconds:
        result["seconds"] = seconds
    return result


def set_password(account: str, site: str, password: str) -> None:
    """
    Set the password of the WordPress admin of ``account``'s site ``site`` (its
    login is the account's name), through WordPress's ``wp_set_password`` run as
    the account in its chroot; the password goes in the script's text on
    standard input, never on a command line, in a log or in the output.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_wordpress.set_password alice www 'a long random password'
    """
    app = _app(account, site)
    if not password:
        raise CommandExecutionError("an empty password is not set")
    found = status(account, site)
    if found["state"] != "installed":
        raise CommandExecutionError(
            f"{account}/{site}: WordPress is not installed ({found['detail']}): no password set"
        )
    _php(app, wp.password_script(app, password), "setting the admin's password")
