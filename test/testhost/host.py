"""A booted test host: overlayfs over a cached image + ``systemd-nspawn --boot``.

Per host work dir (env WEBARCH_TEST_RUN, default /var/tmp/webarch-test-run)/<name>/::

    upper/ work/ merged/    overlayfs layers; merged is the container's root
    home.img home-fs/       with home_fs: the ext4 image bound at /home, its loop mount
    limits                  with limits: this machine's cgroups that cap the host (one a line)
    nspawn.log              console + nspawn messages of the current boot (.prev: the one before)
    pid                     pid of systemd-nspawn (Host.attach() reconnects from another process)
    host.json               image and formula dir, for attach()
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from . import config, system
from .homefs import HomeFs
from .homefs import detach as detach_image

log = logging.getLogger(__name__)

SALT_CALL = "/opt/salt/bin/salt-call"

#: formula_dir entries bound read-only into the container (source name -> container path).
FORMULA_BINDS: tuple[tuple[str, str], ...] = (
    ("webarch", "/srv/formula/webarch"),
    ("_modules", "/srv/formula/_modules"),
    ("_states", "/srv/formula/_states"),
    ("_utils", "/srv/formula/_utils"),
    ("pillar.example", "/srv/formula/pillar.example"),
    # The minion settings the README tells users to install.
    ("webarch/files/salt-minion/webarch-loader.conf", "/etc/salt/minion.d/webarch-loader.conf"),
)

#: Each host gets its own cgroup below this one in every hierarchy systemd tracks processes in.
#: Without it all containers share the caller's cgroup, so the systemd of one container
#: waits for (and kills) the services of another one when stopping them.
CGROUP_PARENT = "webarch-test"

PILLAR_TOP = "base:\n  '*':\n    - webarch\n"


@dataclass(frozen=True)
class Limits:
    """A safety net around a whole test host: this machine's memory, pids and cpu
    controllers (cgroup v1) cap the container, whatever its own systemd can do.

    Each gets a cgroup ``webarch-test-NAME`` below this process's own cgroup of
    that controller (nested: no limit of the caller is left).  In its cpu cgroup
    the whole host weighs as one task group against this machine's others;
    ``cpus`` also caps it (a hard quota throttles every process of the host once
    an attack has used it up, whatever their niceness).
    """

    memory_mb: int = 6144
    tasks: int = 4096
    cpus: float | None = None

    def settings(self) -> dict[str, dict[str, str]]:
        """Controller -> its files and values."""
        quota = "-1" if self.cpus is None else str(int(self.cpus * 1e5))
        return {
            "memory": {"memory.limit_in_bytes": str(self.memory_mb << 20)},
            "pids": {"pids.max": str(self.tasks)},
            "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": quota},
        }

    def make(self, name: str) -> list[Path]:
        """Create and set the cgroups of host ``name``; return them."""
        own = {}
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            own.update(dict.fromkeys(controllers.split(","), path.lstrip("/")))
        made = []
        for controller, files in self.settings().items():
            points = [p for p, fstype, opts in system.mounts()
                      if fstype == "cgroup" and controller in opts.split(",")]  # fmt: skip
            if not points or controller not in own:
                raise HostError(f"no cgroup v1 {controller} controller to limit the host with")
            cgroup = Path(points[0]) / own[controller] / f"{CGROUP_PARENT}-{name}"
            cgroup.mkdir(exist_ok=True)
            made.append(cgroup)
            for file, value in files.items():
                (cgroup / file).write_text(value)
        return made


class HostError(RuntimeError):
    """A test host failed to boot, stop or answer."""


class Host:
    """One Debian test host booted with systemd-nspawn on an overlay of ``image``."""

    def __init__(
        self,
        name: str,
        image: Path,
        formula_dir: Path | None = config.DEFAULT_FORMULA_DIR,
        run_root: Path | None = None,
        boot_timeout: float = 120.0,
        home_fs: HomeFs | None = None,
        limits: Limits | None = None,
    ) -> None:
        """Describe a host; nothing happens until start().  formula_dir=None binds no formula.

        ``home_fs`` gives the host a file system of its own at /home (see testhost.homefs),
        e.g. ``HomeFs(quota=True)`` for disk quotas.  ``limits`` caps the whole host
        from this machine (a safety net for tests that attack its resources).
        """
        self.name = name
        self.image = Path(image)
        self.formula_dir = Path(formula_dir) if formula_dir is not None else None
        self.run_dir = (run_root or config.run_root()) / name
        self.boot_timeout = boot_timeout
        self.home_fs = home_fs
        self.limits = limits
        self._home_device: str | None = None
        self.last: subprocess.CompletedProcess[str] | None = None
        self._popen: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ paths

    @property
    def upper(self) -> Path:
        """Overlay upper dir (everything the host changed)."""
        return self.run_dir / "upper"

    @property
    def merged(self) -> Path:
        """Overlay mount point = the container's root directory."""
        return self.run_dir / "merged"

    @property
    def log_path(self) -> Path:
        """systemd-nspawn output of the current boot."""
        return self.run_dir / "nspawn.log"

    @property
    def pid_path(self) -> Path:
        """File holding the pid of systemd-nspawn."""
        return self.run_dir / "pid"

    @property
    def home_image(self) -> Path:
        """The image of the /home file system (with home_fs)."""
        return self.run_dir / "home.img"

    @property
    def home_mount(self) -> Path:
        """Where this machine mounts the /home file system (with home_fs)."""
        return self.run_dir / "home-fs"

    @property
    def instance(self) -> str:
        """This machine's name for the host: its name, plus its run root's if not the default.

        Hosts of the same name under two run roots (``make test`` runs the Debian 12 and
        Debian 13 suites at once, each with its own WEBARCH_TEST_RUN) get their own
        cgroups and systemd-nspawn machine names; the host's hostname stays ``name``.
        """
        root = self.run_dir.parent
        if root == config.DEFAULT_RUN_ROOT:
            return self.name
        return f"{self.name}-{hashlib.sha256(str(root).encode()).hexdigest()[:6]}"

    def cgroups(self) -> list[Path]:
        """The host's own cgroup in each hierarchy systemd tracks processes in."""
        return [root / CGROUP_PARENT / self.instance for root in system.systemd_cgroup_roots()]

    # ------------------------------------------------------------------ reconnect

    @classmethod
    def attach(cls, name: str, run_root: Path | None = None) -> Host:
        """Return a Host for ``name`` as recorded by a start() (maybe of another process)."""
        run_dir = (run_root or config.run_root()) / name
        try:
            meta = json.loads((run_dir / "host.json").read_text())
        except FileNotFoundError:
            raise HostError(f"no host {name!r} under {run_dir.parent}") from None
        formula = meta.get("formula_dir")
        formula_dir = Path(formula) if formula else None
        home_fs = HomeFs(**meta["home_fs"]) if meta.get("home_fs") else None
        return cls(name, Path(meta["image"]), formula_dir, run_root, meta["boot_timeout"], home_fs)

    @staticmethod
    def names(run_root: Path | None = None) -> list[str]:
        """Names of all hosts that have a work dir."""
        root = run_root or config.run_root()
        return sorted(p.parent.name for p in root.glob("*/host.json"))

    # ------------------------------------------------------------------ processes

    def nspawn_pid(self) -> int | None:
        """Pid of this host's running systemd-nspawn, or None."""
        if self._popen is not None:  # started by this object (maybe not exec'ed yet)
            return self._popen.pid if self._popen.poll() is None else None
        try:
            pid = int(self.pid_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        argv = system.pid_cmdline(pid)
        ours = bool(argv) and "systemd-nspawn" in argv[0] and f"--machine={self.instance}" in argv
        return pid if ours and system.pid_alive(pid) else None

    def is_running(self) -> bool:
        """Tell whether systemd-nspawn of this host is alive."""
        return self.nspawn_pid() is not None

    def init_pid(self) -> int | None:
        """Pid (host namespace) of the container's init, or None if not (yet) there."""
        pid = self.nspawn_pid()
        if pid is None:
            return None
        for child in system.pid_children(pid):
            argv = system.pid_cmdline(child)
            if argv and "systemd-nspawn" not in argv[0]:
                return child
        return None

    def _require_init(self) -> int:
        """Pid of the container's init; raise HostError if the host is not running."""
        init = self.init_pid()
        if init is None:
            raise HostError(f"host {self.name} is not running")
        return init

    # ------------------------------------------------------------------ lifecycle

    def start(self, keep_state: bool = False) -> None:
        """Mount the overlay and boot; wait until the system is running or degraded.

        keep_state=False discards changes of earlier boots (a fresh host); True keeps them.
        """
        if self.is_running():
            raise HostError(f"host {self.name} is already running")
        if not (self.image / "etc/os-release").exists():
            raise HostError(f"{self.image} is not an image rootfs")
        system.ensure_nspawn_runtime_dir()
        for cgroup in self.cgroups():  # leftovers of a crashed run
            system.remove_cgroup(cgroup)
        system.umount_all(self.run_dir)
        if self.home_image.exists():  # leftovers of a crashed run
            detach_image(self.home_image)
        if not keep_state:
            self._discard_state()
        for directory in (self.upper, self.run_dir / "work", self.merged):
            directory.mkdir(parents=True, exist_ok=True)
        self._write_meta()
        try:
            self._mount_home_fs()
            self._mount_overlay()
            self._prepare_identity()
            self._spawn()
        except BaseException:
            self.stop()
            raise
        try:
            state = self._wait_ready()
            self._writable_sysctls()
        except BaseException:
            self.stop()
            raise
        log.info("host %s is %s", self.name, state)

    def _writable_sysctls(self) -> None:
        """Make /proc/sys writable, as on a real server (nspawn mounts it read-only).

        The formula sets IPC sysctls (kernel.shmall, kernel.msgmni): they belong to
        the container's own IPC namespace, so this machine's values do not change.
        The boot's systemd-sysctl skipped them (read-only): apply them again.
        """
        self.run(["mount", "-o", "remount,rw", "/proc/sys"], check=True)
        self.run(["sh", "-c", "test ! -e /etc/sysctl.d/90-webarch.conf ||"
                  " sysctl -q -p /etc/sysctl.d/90-webarch.conf"], check=True)  # fmt: skip

    def stop(self, timeout: float = 90.0) -> None:
        """Power off cleanly (SIGTERM/SIGKILL as fallbacks) and unmount; idempotent."""
        pid = self.nspawn_pid()
        if pid is not None:
            self._poweroff(pid, timeout)
        if self._popen is not None:
            self._popen.wait()
            self._popen = None
        for cgroup in self.cgroups():
            system.remove_cgroup(cgroup)
        self._remove_limits()
        system.umount_all(self.run_dir)
        if self.home_image.exists():
            detach_image(self.home_image)
        self._home_device = None
        self.pid_path.unlink(missing_ok=True)

    def reboot(self) -> None:
        """Stop and start again, keeping the host's changes."""
        self.stop()
        self.start(keep_state=True)

    def reset(self) -> None:
        """Stop, drop every change since the image, and start a fresh host."""
        self.stop()
        self.start(keep_state=False)

    def destroy(self) -> None:
        """Stop and delete the host's work dir."""
        self.stop()
        if self.run_dir.exists() and not system.mounts_under(self.run_dir):
            shutil.rmtree(self.run_dir)

    def __enter__(self) -> Host:
        """Start the host."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the host (its work dir is kept for inspection)."""
        self.stop()

    def _remove_limits(self) -> None:
        """Remove the cgroups of ``limits`` (recorded by _spawn(), maybe by another process)."""
        recorded = self.run_dir / "limits"
        if recorded.exists():
            for line in recorded.read_text().split():
                system.remove_cgroup(Path(line))
            recorded.unlink()

    def _discard_state(self) -> None:
        """Delete the overlay upper and work dirs."""
        for directory in (self.upper, self.run_dir / "work"):
            if directory.exists():
                shutil.rmtree(directory)
        self.home_image.unlink(missing_ok=True)

    def _write_meta(self) -> None:
        """Record what attach() needs."""
        meta = {
            "image": str(self.image),
            "formula_dir": str(self.formula_dir) if self.formula_dir else None,
            "boot_timeout": self.boot_timeout,
            "home_fs": self.home_fs.to_json() if self.home_fs else None,
        }
        (self.run_dir / "host.json").write_text(json.dumps(meta, indent=2) + "\n")

    def _mount_home_fs(self) -> None:
        """With home_fs: make its image (unless kept from the last boot) and loop-mount it."""
        if self.home_fs is None:
            return
        if not self.home_image.exists():
            self.home_fs.make(self.home_image)
        self._home_device = self.home_fs.mount(self.home_image, self.home_mount)

    def _mount_overlay(self) -> None:
        """Mount image (lower) + upper at merged."""
        options = f"lowerdir={self.image},upperdir={self.upper},workdir={self.run_dir / 'work'}"
        system.mount(["-t", "overlay", "overlay", "-o", options, str(self.merged)])

    def _prepare_identity(self) -> None:
        """Give the host its own machine-id (once per fresh state) and an /etc/hosts entry."""
        if not (self.upper / "etc/machine-id").exists():
            (self.merged / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        hosts = self.merged / "etc/hosts"
        if not hosts.is_symlink():
            text = hosts.read_text() if hosts.exists() else "127.0.0.1\tlocalhost\n"
            if f"\t{self.name}\n" not in text:
                hosts.write_text(text + f"127.0.1.1\t{self.name}\n")

    def nspawn_command(self) -> list[str]:
        """The systemd-nspawn command line booting this host."""
        cmd = [
            "systemd-nspawn",
            f"--directory={self.merged}",
            "--boot",
            "--register=no",
            "--keep-unit",
            "--private-network",
            f"--machine={self.instance}",
            f"--hostname={self.name}",
            "--console=read-only",
            "--link-journal=no",
            "--resolv-conf=off",
            "--timezone=off",
        ]
        if self.formula_dir is not None:
            for source, target in FORMULA_BINDS:
                if (self.formula_dir / source).exists():
                    cmd.append(f"--bind-ro={self.formula_dir / source}:{target}")
        if self.home_fs is not None and self._home_device is not None:
            cmd += self.home_fs.nspawn_args(self.home_mount, self._home_device)
        return cmd

    def _spawn(self) -> None:
        """Start systemd-nspawn in its own session and cgroups, output to nspawn.log."""
        if self.log_path.exists():
            self.log_path.replace(self.log_path.with_suffix(".log.prev"))
        procs = []
        for cgroup in self.cgroups():
            cgroup.mkdir(parents=True, exist_ok=True)
            procs.append(str(cgroup / "cgroup.procs"))
        if self.limits is not None:
            self._remove_limits()  # leftovers of a crashed run
            limited = self.limits.make(self.instance)
            (self.run_dir / "limits").write_text("".join(f"{c}\n" for c in limited))
            procs += [str(cgroup / "cgroup.procs") for cgroup in limited]
        # sh moves itself into the cgroups, then becomes systemd-nspawn (same pid).
        enter = 'while [ "$1" != -- ]; do echo $$ > "$1"; shift; done; shift; exec "$@"'
        with self.log_path.open("wb") as out:
            self._popen = subprocess.Popen(
                ["sh", "-c", enter, "sh", *procs, "--", *self.nspawn_command()],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=system.sane_env(),
            )
        self.pid_path.write_text(f"{self._popen.pid}\n")

    def _wait_ready(self) -> str:
        """Wait for ``systemctl is-system-running --wait``: return 'running' or 'degraded'."""
        deadline = time.monotonic() + self.boot_timeout
        state = "no init yet"
        while time.monotonic() < deadline:
            if self.nspawn_pid() is None:
                tail = system.tail(self.log_path)
                raise HostError(f"systemd-nspawn of {self.name} exited:\n{tail}")
            if self.init_pid() is not None:
                try:
                    proc = self.run(
                        ["systemctl", "is-system-running", "--wait"],
                        timeout=max(1.0, deadline - time.monotonic()),
                    )
                    state = proc.stdout.strip() or proc.stderr.strip()
                except subprocess.TimeoutExpired:
                    break
                if state in ("running", "degraded"):
                    return state
                if state in ("maintenance", "stopping"):
                    break
            time.sleep(0.2)
        raise HostError(
            f"host {self.name} not ready after {self.boot_timeout:.0f}s (state: {state})\n"
            f"--- {self.log_path} ---\n{system.tail(self.log_path)}"
        )

    def _poweroff(self, pid: int, timeout: float) -> None:
        """Ask init to power off (SIGRTMIN+4); escalate to SIGTERM then SIGKILL of nspawn."""
        init = self.init_pid()
        if init is not None:
            os.kill(init, signal.SIGRTMIN + 4)
            if system.wait_pid_exit(pid, timeout):
                return
            log.warning("host %s did not power off in %.0fs; sending SIGTERM", self.name, timeout)
        os.kill(pid, signal.SIGTERM)
        if system.wait_pid_exit(pid, 15):
            return
        log.warning("host %s: killing systemd-nspawn session %d", self.name, pid)
        os.killpg(pid, signal.SIGKILL)
        if not system.wait_pid_exit(pid, 15):
            raise HostError(f"systemd-nspawn {pid} of {self.name} does not die")

    # ------------------------------------------------------------------ inside the host

    def nsenter_command(self, cmd: Sequence[str]) -> list[str]:
        """Command line running ``cmd`` inside the host's namespaces."""
        return ["nsenter", "-t", str(self._require_init()), "-a", "-r", "-w", "--", *cmd]

    def run(
        self,
        cmd: Sequence[str],
        check: bool = False,
        input: str | None = None,
        timeout: float | None = 600.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in the host (text mode, output captured, sane PATH/LANG/HOME)."""
        return subprocess.run(
            self.nsenter_command(cmd),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            env=system.sane_env(env),
        )

    def net_run(
        self,
        cmd: Sequence[str],
        check: bool = False,
        input: str | None = None,
        timeout: float | None = 120.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` from outside the host, in its network namespace only.

        The program, its files and its user are this machine's: this is a
        client reaching the host's services over the host's loopback network,
        as a user on another machine would.
        """
        return subprocess.run(
            ["nsenter", "-t", str(self._require_init()), "-n", "--", *cmd],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            env=system.sane_env(env),
        )

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Create/replace the file ``path`` in the running host (parents created as needed)."""
        script = 'mkdir -p "$(dirname "$1")" && (umask 077 && cat > "$1") && chmod "$2" "$1"'
        self.run(["sh", "-c", script, "sh", path, f"{mode:o}"], check=True, input=text)

    def untar(self, archive: bytes, target: str) -> None:
        """Unpack the tar ``archive`` into the directory ``target`` of the running host.

        ``target`` is created if missing; what is already in it stays (unless overwritten).
        """
        script = 'mkdir -p "$1" && tar -x -C "$1" -f -'
        proc = subprocess.run(
            self.nsenter_command(["sh", "-c", script, "sh", target]),
            input=archive,
            capture_output=True,
            timeout=600,
            check=False,
            env=system.sane_env(),
        )
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace")[-4000:]
            raise HostError(f"cannot unpack a tar into {target} on {self.name}:\n{err}")

    def read_file(self, path: str) -> str:
        """Return the text of the file ``path`` in the running host."""
        return self.run(["cat", "--", path], check=True).stdout

    def exists(self, path: str) -> bool:
        """Tell whether ``path`` exists in the running host."""
        return self.run(["test", "-e", path]).returncode == 0

    def failed_units(self) -> list[str]:
        """Names of failed systemd units."""
        cmd = ["systemctl", "list-units", "--failed", "--plain", "--no-legend"]
        proc = self.run(cmd, check=True)
        return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]

    def set_pillar(self, data: Mapping[str, Any]) -> None:
        """Write /srv/pillar/top.sls and /srv/pillar/webarch.sls = YAML of ``data``.

        ``data`` is written as is, so it normally has the top-level key ``webarch``.
        """
        text = yaml.safe_dump(dict(data), default_flow_style=False, sort_keys=False)
        self.write_pillar_text(text)

    def write_pillar_text(self, text: str) -> None:
        """Like set_pillar() but with ready YAML text (comments are kept)."""
        self.write_file("/srv/pillar/top.sls", PILLAR_TOP, mode=0o600)
        self.write_file("/srv/pillar/webarch.sls", text, mode=0o600)

    def salt_call(
        self,
        args: Sequence[str],
        extra_args: Sequence[str] = (),
        timeout: float | None = 1800.0,
    ) -> dict[str, Any]:
        """Run ``salt-call --local --out=json [extra_args] args``; return the parsed JSON.

        A non-zero exit (e.g. failed states) does not raise; the CompletedProcess is kept
        in ``self.last``.  Raises HostError only if the output is not JSON.
        """
        cmd = [SALT_CALL, "--local", "--out=json", *extra_args, *args]
        proc = self.run(cmd, timeout=timeout)
        self.last = proc
        try:
            return _parse_json_output(proc.stdout)
        except ValueError:
            raise HostError(
                f"salt-call returned no JSON (exit {proc.returncode}): {' '.join(cmd)}\n"
                f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
            ) from None


def _parse_json_output(stdout: str) -> dict[str, Any]:
    """Parse salt's JSON output, skipping any non-JSON lines printed before it."""
    text = stdout.strip()
    start = text.find("{")
    while start != -1:
        try:
            value = json.loads(text[start:])
        except json.JSONDecodeError:
            start = text.find("\n{", start + 1)
            start = start + 1 if start != -1 else -1
            continue
        if isinstance(value, dict):
            return value
        break
    raise ValueError("no JSON object in output")
