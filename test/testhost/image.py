"""Build and cache Debian root filesystems for test hosts (debootstrap + apt + a Salt venv).

Layout under the cache dir (env WEBARCH_TEST_CACHE, default /var/cache/webarch-test)::

    locks/<release>.lock                 fcntl lock held while building
    bootstrap/<release>-<key>/rootfs     bare debootstrap result, reused across package changes
    images/<release>-<key>/rootfs        finished image (the overlay lower dir of test hosts)
    images/<release>-<key>/build.log     output of the build
    images/<release>-<key>/info.json     packages, timings, failed units at the smoke boot
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from . import config, system

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Packages debootstrap installs on top of the minbase variant.
BOOTSTRAP_INCLUDE: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "ca-certificates",
)

#: Packages the tests themselves need (also handy when debugging a host).
TEST_PACKAGES: tuple[str, ...] = (
    "python3",
    "python3-venv",
    "python3-yaml",
    "iproute2",
    "procps",
    "less",
    "curl",
    "openssh-client",
    "file",
    "acl",
    "rsync",
    # A real ACME server for mod_md, HTTP/2 clients and load generators.
    "pebble",
    "nghttp2-client",
    "wrk",
    # The auditor's tool of test_lynis (no network inside a test host).
    "lynis",
)

#: Extra test packages per Debian major release.
TEST_PACKAGES_BY_RELEASE: dict[int, tuple[str, ...]] = {}

#: Needed only while pip installs Salt (timelib is an sdist with a C extension); purged after.
BUILD_PACKAGES: tuple[str, ...] = ("gcc", "python3-dev")

#: Packages the formula will manage in later work; pre-installed so the image stays stable.
PREINSTALLED_PACKAGES: tuple[str, ...] = (
    "apache2",
    "php-fpm",
    "php-cli",
    "php-mysql",
    "mariadb-server",
    "mariadb-client",
    "openssh-server",
    "exim4-daemon-light",
    "msmtp",
    "quota",
    "libpam-systemd",
    "logrotate",
    "bash-completion",
    "nano",
    "tar",
    "gzip",
    "zstd",
)

#: Pre-installed packages per Debian major release (Debian 13 ships mod_md in apache2).
PREINSTALLED_PACKAGES_BY_RELEASE: dict[int, tuple[str, ...]] = {12: ("libapache2-mod-md",)}

#: Units that cannot work in an unprivileged nspawn container; masked in the image.
MASKED_UNITS: tuple[str, ...] = ("console-getty.service",)

REQUIREMENTS_FILE = Path(__file__).with_name("host-requirements.txt")
SALT_VENV = "/opt/salt"
BUILD_HOSTNAME = "webarch-image"
HOST_CA_IN_ROOTFS = "/etc/ssl/certs/host-ca.crt"

MINION_CONF = """\
# Written by test/testhost: masterless minion for webarch tests.
file_client: local
file_roots:
  base:
    - /srv/formula
pillar_roots:
  base:
    - /srv/pillar
# Salt finds _modules, _states and _utils in each module dir (as with
# salt-call --module-dirs=/srv/formula).
module_dirs:
  - /srv/formula
# The id comes from the hostname (= machine name) on every run; nothing written to /etc.
minion_id_caching: False
"""

APT_NONINTERACTIVE = {
    "DEBIAN_FRONTEND": "noninteractive",
    "APT_LISTCHANGES_FRONTEND": "none",
}


# --------------------------------------------------------------------------- package list


def formula_packages(release: str, formula_dir: Path = config.DEFAULT_FORMULA_DIR) -> list[str]:
    """Packages the formula installs, from ``<formula_dir>/_modules/webarch.py:packages()``.

    Returns [] while that module or function does not exist yet.  The module imports
    salt, so run this from an interpreter that has salt installed.
    """
    path = formula_dir / "_modules" / "webarch.py"
    if not path.is_file():
        return []
    spec = importlib.util.spec_from_file_location("_webarch_formula_module", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and friends look their module up here
    # The module imports the account model from _utils, as Salt's loader lets it.
    utils = str(formula_dir / "_utils")
    sys.path.insert(0, utils)
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
        sys.path.remove(utils)
    func = getattr(module, "packages", None)
    if func is None:
        log.warning("%s has no packages(osmajorrelease) function; no formula packages", path)
        return []
    # The applications' packages too: test hosts have no network to install them.
    apps = getattr(module, "app_packages", lambda _major: [])
    major = config.osmajorrelease(release)
    return [str(p) for p in [*func(major), *apps(major)]]


def image_packages(release: str, formula_dir: Path = config.DEFAULT_FORMULA_DIR) -> list[str]:
    """The single place that decides what apt installs into the image of ``release``."""
    major = config.osmajorrelease(release)
    wanted = [
        *formula_packages(release, formula_dir),
        *TEST_PACKAGES,
        *TEST_PACKAGES_BY_RELEASE.get(major, ()),
        *PREINSTALLED_PACKAGES,
        *PREINSTALLED_PACKAGES_BY_RELEASE.get(major, ()),
    ]
    return sorted(set(wanted))


def requirements_text() -> str:
    """The pip requirements installed into the Salt venv of the image."""
    return REQUIREMENTS_FILE.read_text()


def _short_hash(*parts: str) -> str:
    """Short sha256 over ``parts``."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def image_key(release: str, packages: Sequence[str], requirements: str) -> str:
    """Cache key of an image: release, packages, requirements and this builder's source."""
    return _short_hash(release, "\n".join(packages), requirements, Path(__file__).read_text())


def bootstrap_key(release: str) -> str:
    """Cache key of the bare debootstrap tree of ``release``."""
    return _short_hash(release, ",".join(BOOTSTRAP_INCLUDE))


# --------------------------------------------------------------------------- public entry


def ensure_image(
    release: str = "bookworm",
    formula_dir: Path = config.DEFAULT_FORMULA_DIR,
    smoke_boot: bool = True,
) -> Path:
    """Return the rootfs of a cached, ready image for ``release``, building it if needed."""
    packages = image_packages(release, formula_dir)
    key = image_key(release, packages, requirements_text())
    images = config.cache_dir() / "images"
    final = images / f"{release}-{key}"
    if (final / "rootfs").is_dir():
        return final / "rootfs"
    with _locked(release):
        if not (final / "rootfs").is_dir():
            _build_image(release, packages, final, smoke_boot)
            _remove_stale_images(release, keep=final)
    return final / "rootfs"


@contextlib.contextmanager
def _locked(release: str) -> Iterator[None]:
    """Hold an exclusive fcntl lock for building images of ``release``."""
    lock_dir = config.cache_dir() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"{release}.lock").open("w") as handle:
        log.debug("waiting for build lock of %s", release)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_image(release: str, packages: list[str], final: Path, smoke_boot: bool) -> None:
    """Build the image into a temp dir next to ``final`` and rename it into place."""
    tmp = final.with_name(f".build-{final.name}")
    _remove_tree(tmp)
    tmp.mkdir(parents=True)
    logfile = tmp / "build.log"
    timings: dict[str, float] = {}
    started = time.monotonic()
    log.info("building image %s (log: %s)", final.name, logfile)
    try:
        bootstrap = _ensure_bootstrap(release, logfile, timings)
        root = tmp / "rootfs"
        _timed(
            timings,
            "copy_bootstrap",
            lambda: system.run_logged(["cp", "-a", str(bootstrap), str(root)], logfile),
        )
        with _chroot_mounts(root):
            _write_apt_sources(root, release)
            build_only = [p for p in BUILD_PACKAGES if p not in packages]
            _timed(timings, "apt", lambda: _install_packages(root, packages + build_only, logfile))
            _timed(timings, "pip", lambda: _install_salt(root, logfile))
            _timed(timings, "purge", lambda: _purge_packages(root, build_only, logfile))
            _configure_system(root, logfile)
            _cleanup_rootfs(root, logfile)
        failed: list[str] = []
        if smoke_boot:
            failed = _timed(timings, "smoke_boot", lambda: _smoke_boot(root, final.name, logfile))
        timings["total"] = round(time.monotonic() - started, 1)
        info = {
            "release": release,
            "packages": packages,
            "timings": timings,
            "failed_units": failed,
        }
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        tmp.rename(final)
    except BaseException:
        system.umount_all(tmp)
        log.error("image build failed; see %s", logfile)
        raise
    log.info("image %s built in %.0fs: %s", final.name, timings["total"], timings)


def _timed(timings: dict[str, float], name: str, func: Callable[[], T]) -> T:
    """Call ``func`` and record its duration (seconds) under ``name``."""
    started = time.monotonic()
    result = func()
    timings[name] = round(time.monotonic() - started, 1)
    return result


def _remove_tree(path: Path) -> None:
    """Unmount anything below ``path`` and delete it."""
    if path.exists():
        system.umount_all(path)
        shutil.rmtree(path)


def _image_in_use(image: Path) -> bool:
    """Tell whether an overlay mount uses ``image`` as its lower dir."""
    needle = f"lowerdir={image}"
    return any(fstype == "overlay" and needle in opts for _, fstype, opts in system.mounts())


def _remove_stale_images(release: str, keep: Path) -> None:
    """Delete other images of ``release`` that no running host uses."""
    images = config.cache_dir() / "images"
    for leftover in images.glob(f".build-{release}-*"):  # crashed builds (we hold the lock)
        _remove_tree(leftover)
    for old in sorted(images.glob(f"{release}-*")):
        if old == keep or not old.is_dir():
            continue
        if _image_in_use(old / "rootfs"):
            log.info("keeping stale image %s: in use", old)
            continue
        log.info("removing stale image %s", old)
        _remove_tree(old)


# --------------------------------------------------------------------------- debootstrap


def _ensure_bootstrap(release: str, logfile: Path, timings: dict[str, float]) -> Path:
    """Return the cached bare debootstrap tree of ``release``, creating it if needed."""
    base = config.cache_dir() / "bootstrap"
    final = base / f"{release}-{bootstrap_key(release)}"
    if (final / "rootfs").is_dir():
        return final / "rootfs"
    tmp = base / f".build-{final.name}"
    _remove_tree(tmp)
    tmp.mkdir(parents=True)
    cmd = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(BOOTSTRAP_INCLUDE)}",
        release,
        str(tmp / "rootfs"),
        config.debian_mirror(),
    ]
    _timed(timings, "debootstrap", lambda: system.run_logged(cmd, logfile))
    for stale in base.glob(f"{release}-*"):
        _remove_tree(stale)
    tmp.rename(final)
    return final / "rootfs"


# --------------------------------------------------------------------------- chroot work


@contextlib.contextmanager
def _chroot_mounts(root: Path) -> Iterator[None]:
    """Mount proc, sys, dev, devpts into ``root``; add a policy-rc.d blocking service starts."""
    policy = root / "usr/sbin/policy-rc.d"
    try:
        system.mount(["-t", "proc", "proc", str(root / "proc")])
        system.mount(["-t", "sysfs", "-o", "ro", "sysfs", str(root / "sys")])
        system.mount(["--bind", "/dev", str(root / "dev")])
        system.mount(["--bind", "/dev/pts", str(root / "dev/pts")])
        policy.write_text(
            "#!/bin/sh\n# testhost: no service starts while building the image\nexit 101\n"
        )
        policy.chmod(0o755)
        yield
    finally:
        policy.unlink(missing_ok=True)
        system.umount_all(root)


def _chroot(
    root: Path, cmd: Sequence[str], logfile: Path, env: dict[str, str] | None = None
) -> None:
    """Run ``cmd`` in a chroot of ``root`` with a sane environment (plus host proxy settings).

    A private UTS namespace with a fixed hostname keeps the build machine's name out of
    the image (postinst scripts write it to /etc/mailname, exim's config, ssh key comments).
    """
    with_hostname = 'hostname "$0" && exec chroot "$@"'
    wrapped = ["unshare", "--uts", "--", "sh", "-c", with_hostname, BUILD_HOSTNAME, str(root), *cmd]
    system.run_logged(wrapped, logfile, env=system.sane_env(env, passthrough=True))


def _write_apt_sources(root: Path, release: str) -> None:
    """Configure the release, -updates and (if known) -security suites from the host's mirrors."""
    stanzas = [
        f"Types: deb\nURIs: {config.debian_mirror()}\nSuites: {release} {release}-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    ]
    security = config.security_mirror()
    if security:
        stanzas.append(
            f"Types: deb\nURIs: {security}\nSuites: {release}-security\n"
            "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text("\n".join(stanzas))


def _install_packages(root: Path, packages: Sequence[str], logfile: Path) -> None:
    """apt-get update, upgrade and install ``packages`` without recommends."""
    apt = [
        "apt-get",
        "-y",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
    ]
    _chroot(root, ["apt-get", "update"], logfile, APT_NONINTERACTIVE)
    _chroot(root, [*apt, "dist-upgrade"], logfile, APT_NONINTERACTIVE)
    _chroot(
        root,
        [*apt, "install", "--no-install-recommends", *packages],
        logfile,
        APT_NONINTERACTIVE,
    )


def _purge_packages(root: Path, packages: Sequence[str], logfile: Path) -> None:
    """Purge ``packages`` and whatever was installed only for them."""
    if packages:
        apt = ["apt-get", "-y", "purge", "--auto-remove", *packages]
        _chroot(root, apt, logfile, APT_NONINTERACTIVE)


def _install_salt(root: Path, logfile: Path) -> None:
    """Create the /opt/salt venv and pip install host-requirements.txt into it."""
    shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", root / HOST_CA_IN_ROOTFS.lstrip("/"))
    shutil.copyfile(REQUIREMENTS_FILE, root / "tmp/host-requirements.txt")
    pip_env = {
        "PIP_CERT": HOST_CA_IN_ROOTFS,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_CACHE_DIR": "1",
    }
    _chroot(root, ["python3", "-m", "venv", SALT_VENV], logfile)
    _chroot(
        root,
        [f"{SALT_VENV}/bin/pip", "install", "-r", "/tmp/host-requirements.txt"],
        logfile,
        pip_env,
    )
    (root / "tmp/host-requirements.txt").unlink()
    (root / HOST_CA_IN_ROOTFS.lstrip("/")).unlink()
    link = root / "usr/local/bin/salt-call"
    link.unlink(missing_ok=True)
    link.symlink_to(f"{SALT_VENV}/bin/salt-call")


def _configure_system(root: Path, logfile: Path) -> None:
    """Minion config, /srv dirs, host identity files and masked units."""
    (root / "etc/salt/minion.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/salt/minion.d/webarch.conf").write_text(MINION_CONF)
    for directory in ("srv/pillar", "srv/formula", "etc/salt/pki/minion"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    # Created by the first salt-call otherwise; pre-created so runs only change formula state.
    (root / "etc/salt/pki/minion").chmod(0o700)
    (root / "srv/pillar").chmod(0o700)
    # The container's hostname comes from `systemd-nspawn -M`; /etc/hosts is written per host.
    (root / "etc/hostname").unlink(missing_ok=True)
    (root / "etc/hosts").write_text(
        "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
    )
    # No network inside the container: no name server (fails fast instead of timing out).
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    dbus_id.unlink(missing_ok=True)
    dbus_id.symlink_to("/etc/machine-id")
    if MASKED_UNITS:
        _chroot(root, ["systemctl", "mask", *MASKED_UNITS], logfile)


def _cleanup_rootfs(root: Path, logfile: Path) -> None:
    """Drop apt caches and build leftovers."""
    _chroot(root, ["apt-get", "clean"], logfile)
    for leftover in ("var/log/apt/eipp.log.xz",):
        (root / leftover).unlink(missing_ok=True)
    for cache in (root / "root/.cache", root / "var/cache/debconf/templates.dat-old"):
        if cache.is_dir():
            shutil.rmtree(cache)


# --------------------------------------------------------------------------- smoke boot


def _smoke_boot(root: Path, image_name: str, logfile: Path) -> list[str]:
    """Boot the fresh image once (throwaway overlay); return its failed units."""
    from .host import Host  # local import: host imports config/system only

    name = f"wa-build-{hashlib.sha256(image_name.encode()).hexdigest()[:6]}"
    host = Host(name=name, image=root, formula_dir=None)
    try:
        host.start()
        state = host.run(["systemctl", "is-system-running"], check=False).stdout.strip()
        failed = host.failed_units()
        version = host.run(["salt-call", "--local", "test.version"], check=True).stdout.split()
    finally:
        host.stop()
        host.destroy()
    with logfile.open("a") as out:
        out.write(f"\nsmoke boot: state={state} failed={failed} salt={version}\n")
    log.info(
        "smoke boot: state=%s failed units=%s salt=%s",
        state,
        failed or "none",
        version[-1:],
    )
    return failed


def describe(rootfs: Path) -> dict:
    """Return the info.json of an image (empty dict if missing)."""
    try:
        return json.loads((rootfs.parent / "info.json").read_text())
    except FileNotFoundError:
        return {}


def image_size(rootfs: Path) -> str:
    """Human readable disk usage of an image (``du -sh``)."""
    proc = subprocess.run(["du", "-sh", str(rootfs)], capture_output=True, text=True, check=False)
    return proc.stdout.split("\t")[0] if proc.returncode == 0 else "?"
