"""A derived bench image: the cached test image plus the legacy stacks and WordPress.

The serving benchmark compares the formula's stack with the old platform's (Apache
mpm-itk + mod_php, each virtual host running as its account; and prefork + mod_php
running as the account) on the same host, and serves a real PHP application
(WordPress from Debian's package).  Those packages are not in the test image, and
adding them there would change its cache key (and switch Apache to prefork and itk in
their postinst), so they go into a copy of it, cached on its own::

    /var/cache/webarch-test/bench/<release>-<key>/rootfs     the derived image
    /var/cache/webarch-test/bench/<release>-<key>/build.log
    /var/cache/webarch-test/bench/locks/<release>.lock

The key covers the test image it was copied from, the extra packages and BUILD_REVISION.
apt runs in a chroot of the copy, with this machine's network and the Debian mirror the
image's own apt sources name.  Afterwards the Apache modules are put back as the test
image had them (event MPM, no mod_php, no mpm_itk), and the build checks that the
enabled modules, configurations and sites of ``/etc/apache2`` are exactly the test
image's: the formula's Apache is untouched, the legacy instances load what they need
from their own configurations.

Build (or find) it alone: ``PYTHONPATH=test .venv/bin/python bench/benchimage.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from common import cached_image, progress  # also puts test/ on sys.path
from testhost import config
from testhost.image import APT_NONINTERACTIVE, _chroot, _chroot_mounts
from testhost.system import run_logged, umount_all

#: Extra Debian packages of the bench image, per PHP version ({php} is filled in).
EXTRA_PACKAGES: tuple[str, ...] = (
    "libapache2-mod-php{php}",
    "libapache2-mpm-itk",
    "wordpress",
    "wordpress-theme-twentytwentythree",
)

#: Bump when the build steps below change (part of the cache key).
BUILD_REVISION = 2

#: PHP's version per Debian release.
PHP_VERSIONS: dict[str, str] = {"bookworm": "8.2", "trixie": "8.4"}


def bench_cache() -> Path:
    """Where bench images live (beside, never inside, the test image cache)."""
    return config.cache_dir() / "bench"


def extra_packages(release: str) -> list[str]:
    """The packages added on top of the test image of ``release``."""
    php = PHP_VERSIONS[release]
    return [p.format(php=php) for p in EXTRA_PACKAGES]


def bench_key(base: Path, release: str) -> str:
    """Cache key: the base image's directory name, the extra packages, BUILD_REVISION."""
    digest = hashlib.sha256()
    for part in (base.parent.name, *extra_packages(release), str(BUILD_REVISION)):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def _locked(release: str) -> Iterator[None]:
    """Hold an exclusive lock while building the bench image of ``release``."""
    locks = bench_cache() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{release}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_bench_image(release: str = "bookworm") -> Path:
    """Return the rootfs of the bench image of ``release``, building it if needed."""
    base = cached_image(release)
    final = bench_cache() / f"{release}-{bench_key(base, release)}"
    if (final / "rootfs").is_dir():
        return final / "rootfs"
    with _locked(release):
        if not (final / "rootfs").is_dir():
            _build(base, release, final)
    return final / "rootfs"


def _build(base: Path, release: str, final: Path) -> None:
    """Copy ``base``, apt-get install the extra packages into the copy, rename into place."""
    tmp = final.with_name(f".build-{final.name}")
    if tmp.exists():
        umount_all(tmp)
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    log = tmp / "build.log"
    root = tmp / "rootfs"
    started = time.monotonic()
    progress(f"building bench image {final.name} from {base} (log: {log})")
    try:
        with log.open("a") as out:
            out.write(f"copy of {base}\n")
        _run(["cp", "-a", "--reflink=auto", str(base), str(root)], log)
        php = PHP_VERSIONS[release]
        apt = ["apt-get", "-y", "-o", "Dpkg::Options::=--force-confold"]
        resolv = root / "etc/resolv.conf"
        offline = resolv.read_text()
        # The image has no name server (its hosts have no network); apt needs one.
        shutil.copyfile("/etc/resolv.conf", resolv)
        with _chroot_mounts(root):
            _chroot(root, ["apt-get", "update"], log, APT_NONINTERACTIVE)
            install = [*apt, "install", "--no-install-recommends", *extra_packages(release)]
            _chroot(root, install, log, APT_NONINTERACTIVE)
            # The postinsts of libapache2-mod-php and libapache2-mpm-itk switched the
            # formula's Apache to prefork (+ itk): back to the test image's modules (the
            # legacy instances have their own configurations).
            dismod = ["a2dismod", "-q", "-f", "mpm_itk", f"php{php}", "mpm_prefork"]
            _chroot(root, dismod, log)
            _chroot(root, ["a2enmod", "-q", "mpm_event"], log)
            _chroot(root, ["apt-get", "clean"], log)
        resolv.write_text(offline)
        changed = _enabled_apache(base) ^ _enabled_apache(root)
        if changed:
            raise RuntimeError(f"/etc/apache2 differs from the test image's: {sorted(changed)}")
        tmp.rename(final)
    except BaseException:
        umount_all(tmp)
        progress(f"bench image build failed; see {log}")
        raise
    progress(f"bench image {final.name} built in {time.monotonic() - started:.0f}s")


def _enabled_apache(root: Path) -> set[str]:
    """The enabled modules, configurations and sites of ``root``'s Apache (and targets)."""
    enabled = set()
    for kind in ("mods", "conf", "sites"):
        for link in (root / f"etc/apache2/{kind}-enabled").iterdir():
            target = link.readlink() if link.is_symlink() else "(file)"
            enabled.add(f"{kind}-enabled/{link.name} -> {target}")
    return enabled


def _run(cmd: list[str], log: Path) -> None:
    """Run ``cmd`` on this machine, output appended to ``log``; raise on failure."""
    run_logged(cmd, log)


def main() -> int:
    """Build or find the bench image and print its rootfs."""
    release = sys.argv[1] if len(sys.argv) > 1 else "bookworm"
    print(ensure_bench_image(release))
    return 0


if __name__ == "__main__":
    sys.exit(main())
