"""A file system of its own for a test host's /home: an ext4 or btrfs image on a loop device.

Test hosts live on an overlay, which has no disk quotas.  ``HomeFs`` makes an
image in the host's work dir (``home.img``), attaches it to a loop device and
binds the device's node into the host, whose systemd mounts it at /home
(``home.mount``, from ``home-fs/``, bound into /etc/systemd/system).  The
mount lives in the host's own mount namespace only: mounted on this machine,
every container started meanwhile (another engineer's test host) would keep a
detached copy of it, and the loop device with it, until that container stops.
ext4 also needs the ``quotactl`` system call (nspawn's seccomp filter refuses
it otherwise; it takes the device's path)::

    HomeFs(quota=True)      ext4 with the quota feature (journaled quota, no
                            quota files), mounted usrquota,grpquota: quotas on
    HomeFs(quota=False)     a plain ext4 on a real block device: no quotas
    HomeFs(fstype="btrfs")  a btrfs with its quotas (qgroups) off: the formula
                            switches them on (``quota`` does not apply)

Quota-capable ext4 needs a kernel built with CONFIG_QFMT_V2 (Debian's is);
:py:func:`kernel_quota_problem` says why a kernel cannot mount one.  btrfs
qgroups need no more than btrfs itself (and ``mkfs.btrfs``: btrfs-progs).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import system

#: Where the file system is mounted in the test host, by this unit.
TARGET = "/home"
UNIT = "home.mount"
WANTS = "local-fs.target.wants"

#: mkfs.ext4 feature and extended option of journaled user and group quotas.
QUOTA_FEATURE = "quota"
QUOTA_TYPES = "quotatype=usrquota:grpquota"


FSTYPES = ("ext4", "btrfs")


@dataclass(frozen=True)
class HomeFs:
    """The /home file system of a test host: its size, kind and whether it has quotas."""

    size_mb: int = 256
    quota: bool = True
    fstype: str = "ext4"

    def __post_init__(self) -> None:
        if self.fstype not in FSTYPES:
            raise ValueError(f"fstype must be one of {FSTYPES}, not {self.fstype!r}")

    def to_json(self) -> dict:
        """What Host records in host.json (for attach())."""
        return asdict(self)

    def mkfs_args(self) -> list[str]:
        """mkfs.ext4 (or mkfs.btrfs) options."""
        if self.fstype == "btrfs":
            return ["-q", "-f"]
        # No lazy init: no kernel thread writing the image in the background.
        extended = ["lazy_itable_init=0", "lazy_journal_init=0"]
        if not self.quota:
            return ["-q", "-F", "-E", ",".join(extended)]
        return ["-q", "-F", "-O", QUOTA_FEATURE, "-E", ",".join([*extended, QUOTA_TYPES])]

    def mount_options(self) -> str:
        """Options of the mount in the host (usrquota: enforcement on)."""
        return "usrquota,grpquota" if self.quota and self.fstype == "ext4" else "defaults"

    def mount_unit(self, device: str) -> str:
        """The host's ``home.mount``: ``device`` at /home, early in its boot."""
        return (
            "# Made by testhost.homefs: the test host's /home, a loop device of the machine.\n"
            "[Unit]\nDescription=Test file system at /home\nBefore=local-fs.target\n\n"
            f"[Mount]\nWhat={device}\nWhere={TARGET}\nType={self.fstype}\n"
            f"Options={self.mount_options()}\n"
        )

    def make(self, image: Path) -> None:
        """Create the empty file system in ``image`` (replacing an older one)."""
        image.unlink(missing_ok=True)
        with image.open("wb") as handle:
            handle.truncate(self.size_mb << 20)
        _run([f"mkfs.{self.fstype}", *self.mkfs_args(), str(image)])

    def mount(self, image: Path, unit_dir: Path) -> str:
        """Attach ``image`` to a loop device; write the host's mount unit of it in
        ``unit_dir``; return the device (``/dev/loopN``).  Nothing is mounted here."""
        device = _run(["losetup", "--find", "--show", str(image)]).strip()
        wants = unit_dir / WANTS
        wants.mkdir(parents=True, exist_ok=True)
        (unit_dir / UNIT).write_text(self.mount_unit(device))
        # systemd follows only symlinks in a .wants directory (resolved in the host).
        link = wants / UNIT
        link.unlink(missing_ok=True)
        link.symlink_to(f"/etc/systemd/system/{UNIT}")
        return device

    def nspawn_args(self, unit_dir: Path, device: str) -> list[str]:
        """What the host's systemd-nspawn needs to mount the file system at /home."""
        unit = unit_dir / UNIT
        args = [
            f"--bind={device}",
            f"--bind-ro={unit}:/etc/systemd/system/{UNIT}",
            f"--bind-ro={unit_dir / WANTS}:/etc/systemd/system/{WANTS}",
        ]
        if self.fstype == "ext4":  # btrfs's qgroups are ioctls on a file of it
            args.append("--system-call-filter=quotactl")
        return args


def loop_devices(image: Path) -> list[str]:
    """The loop devices backed by ``image``."""
    return _run(["losetup", "-n", "-O", "NAME", "-j", str(image)]).split()


def detach(image: Path, timeout: float = 120.0) -> None:
    """Detach the loop devices still backed by ``image``; wait until they are gone.

    The last unmount normally detached it (autoclear); a device still held (the
    kernel drops a dead container's mounts a little later) is detached when
    released, and this waits for that.  Raises CommandError if it is not.
    """
    for device in loop_devices(image):
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)
    deadline = time.monotonic() + timeout
    while (left := loop_devices(image)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        raise system.CommandError(f"loop device {' '.join(left)} of {image} still attached")


def kernel_quota_problem() -> str | None:
    """Why this machine's kernel cannot mount an ext4 with quotas, or None if it can."""
    with tempfile.TemporaryDirectory(prefix="webarch-quota-probe-") as tmp:
        image, mountpoint = Path(tmp) / "probe.img", Path(tmp) / "mnt"
        fs = HomeFs(size_mb=16, quota=True)
        fs.make(image)
        try:
            mountpoint.mkdir()
            system.mount(["-o", "loop," + fs.mount_options(), str(image), str(mountpoint)])
        except system.CommandError as err:
            return f"{err}{_kernel_says()}"
        finally:
            system.umount_all(mountpoint)
            detach(image)
    return None


def _kernel_says() -> str:
    """The kernel's last ext4 message, if it can be read (it names what is missing)."""
    proc = subprocess.run(["dmesg"], capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if "EXT4-fs" in line]
    return f"; kernel: {lines[-1].split(']', 1)[-1].strip()}" if lines else ""


def _run(cmd: list[str]) -> str:
    """Run ``cmd``; return its output; raise CommandError on failure."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise system.CommandError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc.stdout
