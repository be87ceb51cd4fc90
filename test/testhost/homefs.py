"""A file system of its own for a test host's /home: an ext4 image on a loop device.

Test hosts live on an overlay, which has no disk quotas.  ``HomeFs`` makes an
ext4 image in the host's work dir (``home.img``), mounts it on this machine
with ``-o loop`` (autoclear: the loop device goes away with the last unmount)
at ``home-fs/`` and has the host bind it at /home, with the loop device's node
(``quotactl`` takes the device's path) and the ``quotactl`` system call
(nspawn's seccomp filter refuses it otherwise)::

    HomeFs(quota=True)    ext4 with the quota feature (journaled quota, no
                          quota files), mounted usrquota,grpquota: quotas on
    HomeFs(quota=False)   a plain ext4 on a real block device: no quotas

Quota-capable ext4 needs a kernel built with CONFIG_QFMT_V2 (Debian's is);
:py:func:`kernel_quota_problem` says why a kernel cannot mount one.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import system

#: Where the file system is mounted in the test host.
TARGET = "/home"

#: mkfs.ext4 feature and extended option of journaled user and group quotas.
QUOTA_FEATURE = "quota"
QUOTA_TYPES = "quotatype=usrquota:grpquota"


@dataclass(frozen=True)
class HomeFs:
    """The /home file system of a test host: its size and whether it has quotas."""

    size_mb: int = 256
    quota: bool = True

    def to_json(self) -> dict:
        """What Host records in host.json (for attach())."""
        return asdict(self)

    def mkfs_args(self) -> list[str]:
        """mkfs.ext4 options."""
        # No lazy init: no kernel thread writing the image in the background.
        extended = ["lazy_itable_init=0", "lazy_journal_init=0"]
        if not self.quota:
            return ["-q", "-F", "-E", ",".join(extended)]
        return ["-q", "-F", "-O", QUOTA_FEATURE, "-E", ",".join([*extended, QUOTA_TYPES])]

    def mount_options(self) -> str:
        """Options of the loop mount on this machine (usrquota: enforcement on)."""
        return "loop,usrquota,grpquota" if self.quota else "loop"

    def make(self, image: Path) -> None:
        """Create the empty file system in ``image`` (replacing an older one)."""
        image.unlink(missing_ok=True)
        with image.open("wb") as handle:
            handle.truncate(self.size_mb << 20)
        _run(["mkfs.ext4", *self.mkfs_args(), str(image)])

    def mount(self, image: Path, mountpoint: Path) -> str:
        """Mount ``image`` at ``mountpoint``; return its loop device (``/dev/loopN``)."""
        mountpoint.mkdir(parents=True, exist_ok=True)
        system.mount(["-o", self.mount_options(), str(image), str(mountpoint)])
        return device_of(mountpoint)

    def nspawn_args(self, mountpoint: Path, device: str) -> list[str]:
        """What the host's systemd-nspawn needs to see the file system at /home."""
        return [
            f"--bind={mountpoint}:{TARGET}",
            f"--bind={device}",
            "--system-call-filter=quotactl",
        ]


def device_of(mountpoint: Path) -> str:
    """The source device of the mount at ``mountpoint``."""
    out = _run(["findmnt", "-n", "-o", "SOURCE", "--mountpoint", str(mountpoint)])
    return out.strip()


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
            fs.mount(image, mountpoint)
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
