"""
Render the whole formula with Salt's own loader, in this process.

What ``salt-call --local state.show_sls webarch`` does, compiled further to low
chunks as ``state.apply`` would: a throw-away minion config in a temporary
directory (``file_roots`` and ``module_dirs`` = the formula's root, the pillar
from ``pillar.example``, caches inside the temporary directory), grains given
rather than detected, so Debian 12 and 13 render on any machine, as any user.
"""

from __future__ import annotations

import copy
import getpass
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from formula_check.problems import sls_file

#: The formula's top SLS: the whole formula is it and what it includes.
TOP_SLS = "webarch"
SALTENV = "base"
MINION_ID = "webarch-check"


@dataclass(frozen=True)
class Variant:
    """A way to run the formula: a pillar override and the host's registry."""

    label: str
    override: dict = field(default_factory=dict)
    #: Accounts the host's registry (/var/lib/webarch/managed-accounts) lists.
    registry: frozenset[str] = frozenset()


@dataclass
class Rendering:
    """The formula as Salt compiled it for one release and variant."""

    label: str
    #: High data as the SLS files declare it (before requisite_in).
    declared: dict
    #: High data after requisite_in and excludes: what Salt makes low chunks of.
    compiled: dict
    #: Low chunks, as ``state.show_lowstate`` shows them.
    chunks: list[dict]
    #: Errors Salt reported while rendering the SLS files (the data is partial then).
    render_errors: list[str]
    #: Errors Salt reported while compiling the rendered data.
    compile_errors: list[str]
    #: SLS names rendered (also those that declare no state).
    rendered_sls: set[str]


def variants(pillar: dict) -> list[Variant]:
    """The full run, a run limited by ``webarch_only``, an account switched to absent,
    a site with an application switched to absent (its database too)."""
    accounts = (pillar.get("webarch") or {}).get("accounts") or {}
    present = sorted(
        name for name, data in accounts.items() if (data or {}).get("state", "present") == "present"
    )
    found = [Variant("full")]
    if present:
        found.append(Variant(f"only {present[0]}", {"webarch_only": [present[0]]}))
        gone = present[-1]
        found.append(
            Variant(
                f"{gone} absent",
                {"webarch": {"accounts": {gone: {"state": "absent"}}}},
                frozenset(str(name) for name in accounts),
            )
        )
        found += _site_removed(accounts, present)
    return found


def _site_removed(accounts: dict, present: list[str]) -> list[Variant]:
    """The first site with an application switched to absent, its database too."""
    for name in present:
        for site, data in ((accounts[name] or {}).get("sites") or {}).items():
            database = ((data or {}).get("app") or {}).get("database")
            if database:
                overlay = {
                    "sites": {site: {"state": "absent"}},
                    "databases": {database: {"state": "absent"}},
                }
                return [
                    Variant(
                        f"{name}:{site} absent",
                        {"webarch": {"accounts": {name: overlay}}},
                        frozenset(str(n) for n in accounts),
                    )
                ]
    return []


def grains(osmajorrelease: int, codename: str) -> dict:
    """The grains of a Debian host of that release (not detected: given)."""
    return {
        "id": MINION_ID,
        "kernel": "Linux",
        "os": "Debian",
        "os_family": "Debian",
        "osfullname": "Debian GNU/Linux",
        "osarch": "amd64",
        "osmajorrelease": osmajorrelease,
        "osrelease": str(osmajorrelease),
        "oscodename": codename,
        "osfinger": f"Debian-{osmajorrelease}",
        "init": "systemd",
    }


def _quiet_salt() -> None:
    """Salt logs render errors at CRITICAL: the check reports them itself."""
    import salt  # noqa: F401  (sets its own warning filters: these go in front)

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    salt_log = logging.getLogger("salt")
    salt_log.addHandler(logging.NullHandler())
    salt_log.propagate = False


def _minion_config(root: Path, work: Path) -> str:
    """A throw-away masterless minion config: everything Salt writes stays in ``work``."""
    (work / "pillar").mkdir()
    (work / "pillar" / "top.sls").write_text(f"{SALTENV}:\n  '*':\n    - webarch\n")
    (work / "pillar" / "webarch.sls").write_text((root / "pillar.example").read_text())
    config = {
        "id": MINION_ID,
        "file_client": "local",
        "file_roots": {SALTENV: [str(root)]},
        "pillar_roots": {SALTENV: [str(work / "pillar")]},
        # Salt finds _modules, _states and _utils in each module dir.
        "module_dirs": [str(root)],
        "cachedir": str(work / "cache"),
        "pki_dir": str(work / "pki"),
        "sock_dir": str(work / "sock"),
        "extension_modules": str(work / "extmods"),
        "log_file": str(work / "minion.log"),
        "user": getpass.getuser(),
        "state_verbose": False,
    }
    path = work / "minion"
    path.write_text(yaml.safe_dump(config))
    return str(path)


class Session:
    """Salt's minion opts for the formula at ``root``, with a temporary home."""

    def __init__(self, root: Path, work: Path) -> None:
        _quiet_salt()
        import salt.config
        import salt.version

        self.root = root
        self.work = work
        self.opts = salt.config.minion_config(_minion_config(root, work))
        self.salt_version = salt.version.__version__
        self._tempdir = tempfile.tempdir

    def __enter__(self) -> Session:
        # Templates rendered by file.get_managed land in temporary files: keep them here.
        tempfile.tempdir = str(self.work)
        return self

    def __exit__(self, *_exc: object) -> None:
        tempfile.tempdir = self._tempdir

    def locate(self, sls: str) -> str:
        """The file an SLS name comes from, relative to the formula's root."""
        return sls_file(self.root, sls)

    def pillar(self) -> dict:
        """pillar.example compiled by Salt's pillar system (its renderers, its top file)."""
        import salt.pillar

        opts = self._opts(12, "bookworm")
        compiled = salt.pillar.get_pillar(opts, opts["grains"], MINION_ID, saltenv=SALTENV)
        try:
            return compiled.compile_pillar()
        finally:
            compiled.destroy()

    def _opts(self, osmajorrelease: int, codename: str) -> dict:
        opts = copy.deepcopy(self.opts)
        opts["grains"] = grains(osmajorrelease, codename)
        return opts

    @contextmanager
    def highstate(
        self, osmajorrelease: int, codename: str, pillar: dict, variant: Variant
    ) -> Iterator[Any]:
        """A Salt HighState for that release, pillar and variant (the registry patched)."""
        import salt.state
        import salt.utils.dictupdate

        merged = salt.utils.dictupdate.merge(
            copy.deepcopy(pillar), copy.deepcopy(variant.override), "smart", "yaml", False
        )
        with salt.state.HighState(
            self._opts(osmajorrelease, codename), initial_pillar=merged
        ) as highstate:
            patch_registry(highstate.state.functions, variant.registry)
            yield highstate

    def render(self, highstate: Any, label: str) -> Rendering:
        """Render and compile the whole formula, as ``state.apply webarch`` would."""
        highstate.push_active()
        try:
            high, render_errors = highstate.render_highstate({SALTENV: [TOP_SLS]})
        finally:
            highstate.pop_active()
        state = highstate.state
        errors = list(state.verify_high(high))
        declared = copy.deepcopy(high)
        high, found = state.requisite_in(high)
        errors += found
        high = state.apply_exclude(high)
        chunks, found = state.compile_high_data(high)
        errors += found
        rendered = set(getattr(state, "_processed_sls_files", set()))
        rendered |= {body["__sls__"] for body in declared.values() if isinstance(body, dict)}
        return Rendering(
            label,
            declared,
            high,
            chunks,
            [str(e) for e in render_errors],
            [str(e) for e in errors],
            rendered,
        )


def patch_registry(functions: Any, registry: frozenset[str]) -> None:
    """Have ``webarch.config`` read ``registry`` instead of this host's registry file.

    The model removes only accounts webarch's registry lists; the file is
    /var/lib/webarch/managed-accounts, which the check must not touch.
    """
    try:
        config = functions["webarch.config"]
    except KeyError:
        raise RuntimeError(functions.missing_fun_string("webarch.config")) from None
    module_globals: dict[str, Any] = config.__globals__
    if "_read_registry" not in module_globals:
        raise RuntimeError("_modules/webarch.py has no _read_registry() to stand in for")

    def read_registry(*_args: Any, **_kwargs: Any) -> frozenset[str]:
        return registry

    reader: Callable[..., frozenset[str]] = read_registry
    module_globals["_read_registry"] = reader
