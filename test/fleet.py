"""A fleet for the tests: one Salt master on this machine, minions in test hosts, one LAN.

The master is pytest-salt-factories' master daemon (``FactoriesManager.salt_master_daemon``)
with its event listener: every event on the master's bus reaches this process (the
factories' ``pytest`` engine forwards them), where :meth:`FleetMaster.wait_for_event`
finds them.  The minions run in test hosts (testhost.Host, ``--private-network``) that
:class:`Lan` joins to a bridge of this machine; nothing else is on that bridge::

    lan = Lan()                        # bridge wafleet0, 10.251.0.1/24 on this machine
    lan.up()
    lan.attach(host, 11)               # host's lan0 = 10.251.0.11/24
    master = FleetMaster(tmp, repo, lan.address)
    master.start()                     # salt-master listening on 10.251.0.1
    minion = FleetMinion(host, master) # salt-minion in the host, key auto-accepted
    minion.start()
    master.salt("*", "state.highstate")

Facts this relies on:

* The pytest plugins of salt-factories stay off (pyproject.toml: Salt's import hook and
  pytest's importlib mode clash); its classes work without them: the event listener and
  the log server are started here.
* The master's file_roots are a copy of the formula (``webarch``, ``_modules``,
  ``_states``, ``_utils``) and a top file applying ``webarch`` to every minion, under
  the master's root dir: a test may change a file there as an upgrade of the formula.
  The minions get the SLS files and the custom modules from the master only (the hosts
  are started without the formula bound in).
* The event listener keeps events an hour (salt-factories' default: 120 s, shorter
  than a first highstate).
"""

from __future__ import annotations

import fnmatch
import itertools
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from testhost import Host
from testhost.saltmaster import _parse_json_documents

log = logging.getLogger(__name__)

SALT_BIN = "/opt/salt/bin"
MINION_CONF = "/etc/salt/minion.d/zz-fleet.conf"
MINION_UNIT = "webarch-test-fleet-minion"
FORMULA_PARTS = ("webarch", "_modules", "_states", "_utils")
LOADER_CONF = "webarch/files/salt-minion/webarch-loader.conf"
REACTOR_CONF = "webarch/files/salt-master/webarch-reactor.conf"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Lan:
    """A private network: a bridge on this machine (the master's side) and a veth per host."""

    def __init__(self, bridge: str = "wafleet0", prefix: str = "10.251.0") -> None:
        self.bridge = bridge
        self.prefix = prefix
        self.address = f"{prefix}.1"

    def up(self) -> None:
        """Create the bridge with this machine's address (a leftover is removed first)."""
        self.down()
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def down(self) -> None:
        """Remove the bridge and the hosts' veth ends on this machine (if any)."""
        for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(f"{self.bridge}v"):
                _ip("link", "del", name, check=False)
        _ip("link", "del", self.bridge, check=False)

    def attach(self, host: Host, number: int) -> str:
        """Give ``host`` the interface lan0 = PREFIX.NUMBER on the bridge; return the address.

        Again after every boot of the host (its network namespace is new).
        """
        outer, inner = f"{self.bridge}v{number}", f"{self.bridge}p{number}"
        _ip("link", "del", outer, check=False)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", outer, "master", self.bridge, "up")
        _ip("link", "set", inner, "netns", str(host.init_pid()))
        address = f"{self.prefix}.{number}"
        script = (
            f"ip link set {inner} name lan0 && ip addr add {address}/24 dev lan0"
            " && ip link set lan0 up"
        )
        host.run(["sh", "-c", script], check=True)
        return address


class FleetMaster:
    """salt-master (salt-factories' daemon) on this machine, for the minions on the LAN."""

    def __init__(self, root: Path, repo: Path, interface: str, master_id: str = "wa-fleet-master"):
        self.root = root
        self.repo = repo
        self.interface = interface
        self.master_id = master_id
        self.state_tree = root / "state-tree"
        self.pillar_tree = root / "pillar-tree"
        #: The saltenv ``webarch-move``: a move's artifacts, served to its target only.
        self.move_tree = root / "move-tree"
        self.daemon: Any = None
        self.listener: Any = None
        self._log_server: Any = None
        #: Seconds the last start() took until the master's start event arrived.
        self.start_seconds = 0.0
        #: Exit code of the last salt command.
        self.last_exit = 0

    # ------------------------------------------------------------------ lifecycle

    def copy_formula(self) -> None:
        """The master's file_roots: a fresh copy of the formula's SLS files and modules."""
        shutil.rmtree(self.state_tree, ignore_errors=True)
        self.state_tree.mkdir(parents=True)
        for part in FORMULA_PARTS:
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(self.repo / part, self.state_tree / part, ignore=ignore)
        (self.state_tree / "top.sls").write_text("base:\n  '*':\n    - webarch\n")

    def config(self) -> dict[str, Any]:
        """The overrides of salt-factories' master defaults."""
        reactor = yaml.safe_load((self.repo / REACTOR_CONF).read_text())["reactor"]
        return {
            "interface": self.interface,
            "file_roots": {"base": [str(self.state_tree)], "webarch-move": [str(self.move_tree)]},
            # A move's artifacts come to the master with cp.push (docs/fleet.rst).
            "file_recv": True,
            "file_recv_max_size": 1024,
            "pillar_roots": {"base": [str(self.pillar_tree)]},
            "runner_dirs": [str(self.repo / "_runners")],
            "utils_dirs": [str(self.repo / "_utils")],
            "reactor": reactor,
            "auto_accept": True,
            "keep_jobs_seconds": 365 * 24 * 3600,
            "log_level_logfile": "info",
            "timeout": 600,
            # What salt-factories forwards of the master's log into pytest's logging.
            "pytest-master": {"log": {"level": "warning"}},
        }

    def start(self) -> None:
        """Start the event listener, the log server and salt-master; wait for its start event."""
        from saltfactories.manager import FactoriesManager
        from saltfactories.plugins.event_listener import EventListener
        from saltfactories.plugins.log_server import LogServer

        started = time.monotonic()
        self.copy_formula()
        self.pillar_tree.mkdir(parents=True, exist_ok=True)
        self.move_tree.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.listener = EventListener(timeout=3600)
        self.listener.start()
        self._log_server = LogServer(log_host="127.0.0.1", log_level="warning")
        self._log_server.start()
        factories = FactoriesManager(
            root_dir=self.root / "factories",
            log_server_port=self._log_server.log_port,
            log_server_level="warning",
            log_server_host="127.0.0.1",
            event_listener=self.listener,
            code_dir=self.repo,
            start_timeout=120,
        )
        self.daemon = factories.salt_master_daemon(self.master_id, overrides=self.config())
        self.daemon.start()
        self.start_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Stop salt-master, the log server and the event listener."""
        if self.daemon is not None and self.daemon.is_running():
            self.daemon.terminate()
        if self._log_server is not None:
            self._log_server.stop()
        if self.listener is not None:
            self.listener.stop()

    @property
    def ret_port(self) -> int:
        """The master's request port (the minions' ``master_port``)."""
        return int(self.daemon.config["ret_port"])

    # ------------------------------------------------------------------ pillar

    def set_pillars(self, pillars: dict[str, dict[str, Any]]) -> None:
        """One pillar file per minion and a top file giving each minion its own."""
        for old in self.pillar_tree.glob("*.sls"):
            old.unlink()
        top: dict[str, list[str]] = {}
        for minion, data in pillars.items():
            name = "fleet_" + minion.replace("-", "_")
            (self.pillar_tree / f"{name}.sls").write_text(yaml.safe_dump(data, sort_keys=False))
            top[minion] = [name]
        (self.pillar_tree / "top.sls").write_text(yaml.safe_dump({"base": top}))

    # ------------------------------------------------------------------ commands

    def salt(
        self, tgt: str, *args: str, tgt_type: str = "glob", timeout: int = 30, hard: int = 1800
    ) -> dict:
        """``salt --out=json --timeout=TIMEOUT TGT ARGS``: {minion id: return}.

        The exit code is kept in ``last_exit``.  Salt waits as long as the targeted
        minions say (``saltutil.find_job``) that they run the job; a minion that does not
        answer for ``timeout`` seconds is "Minion did not return".  ``hard``: when to
        kill the CLI (an explicit --timeout keeps salt-factories from raising salt's own
        timeout to it).
        """
        flag = {"glob": [], "list": ["-L"], "compound": ["-C"]}[tgt_type]
        cli = self.daemon.salt_cli()
        proc = cli.run(f"--timeout={timeout}", *flag, *args, minion_tgt=tgt, _timeout=hard)
        self.last_exit = proc.returncode
        # Not proc.data: salt-factories unwraps the return of a single minion target.
        try:
            return _parse_json_documents(proc.stdout)
        except ValueError:
            what = f"salt {tgt} {args}: no JSON"
            raise AssertionError(f"{what}\n{proc.stdout}\n{proc.stderr}") from None

    def run(self, *args: str, timeout: int = 300) -> tuple[int, Any, str]:
        """``salt-run --out=json ARGS``: (exit code, parsed output, stderr)."""
        proc = self.daemon.salt_run_cli(timeout=timeout).run(*args, _timeout=timeout)
        return proc.returncode, proc.data, proc.stderr

    # ------------------------------------------------------------------ events

    def events(self, pattern: str = "*", after: float = 0.0) -> list[tuple[str, dict]]:
        """The master's events since ``after`` (epoch seconds) whose tags match ``pattern``."""
        when = datetime.fromtimestamp(after, tz=UTC)
        found = self.listener.get_events([(self.master_id, pattern)], after_time=when)
        return [(e.tag, e.data) for e in sorted(found, key=lambda e: e.stamp)]

    def wait_for_event(
        self,
        pattern: str,
        after: float,
        timeout: float = 60.0,
        where: Callable[[dict], bool] | None = None,
    ) -> tuple[str, dict]:
        """The first event since ``after`` matching ``pattern`` (and ``where``); else fail."""
        deadline = time.monotonic() + timeout
        while True:
            for tag, data in self.events(pattern, after):
                if fnmatch.fnmatchcase(tag, pattern) and (where is None or where(data)):
                    return tag, data
            if time.monotonic() > deadline:
                tags = [tag for tag, _ in self.events("*", after)][-30:]
                raise AssertionError(f"no event {pattern!r} in {timeout:.0f}s; seen: {tags}")
            time.sleep(0.25)

    def log_text(self) -> str:
        """The master's log file."""
        path = Path(self.daemon.config["log_file"])
        return path.read_text(errors="replace") if path.exists() else ""


class FleetMinion:
    """salt-minion of one test host, connected to a :class:`FleetMaster` over the LAN."""

    def __init__(self, host: Host, master: FleetMaster, master_address: str) -> None:
        self.host = host
        self.master = master
        self.master_address = master_address
        self.id = host.name

    def config(self) -> str:
        """Text of the minion's zz-fleet.conf (overrides the image's masterless settings)."""
        loader = (self.master.repo / LOADER_CONF).read_text()
        settings = {
            "file_client": "remote",
            "master": self.master_address,
            "master_port": self.master.ret_port,
            "id": self.id,
            "module_dirs": [],
            "log_file": "/var/log/salt/minion",
            "log_level_logfile": "info",
            "acceptance_wait_time": 1,
            "random_reauth_delay": 0,
            "recon_default": 1000,
            "recon_max": 3000,
            "recon_randomize": False,
        }
        text = yaml.safe_dump(settings, sort_keys=False)
        return f"# test/fleet.py: a minion of the fleet's master\n{loader}{text}"

    def start(self, timeout: float = 120.0) -> None:
        """Write the config, start salt-minion (a transient unit); wait until it answers."""
        self.host.write_file(MINION_CONF, self.config())
        self.host.run(["mkdir", "-p", "/var/log/salt"], check=True)
        self.host.run(["systemctl", "reset-failed", MINION_UNIT])
        cmd = [
            "systemd-run", f"--unit={MINION_UNIT}", "--collect", "--quiet",
            "--property=Type=exec", "--property=TimeoutStopSec=5",
            f"{SALT_BIN}/salt-minion", "-l", "warning",
        ]  # fmt: skip
        self.host.run(cmd, check=True)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.id} does not answer test.ping\n{self.log_tail()}")
            time.sleep(1)

    def answers(self) -> bool:
        """Tell whether ``salt ID test.ping`` returns True (the key accepted, connected)."""
        try:
            return self.master.salt(self.id, "test.ping", timeout=5, hard=60).get(self.id) is True
        except AssertionError:  # no JSON: the minion is not known yet
            return False

    def stop(self) -> None:
        """Stop salt-minion (the host keeps running)."""
        self.host.run(["systemctl", "stop", MINION_UNIT], timeout=60)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the minion's log and journal."""
        log_file = self.host.run(["tail", "-n", str(lines), "/var/log/salt/minion"]).stdout
        cmd = ["journalctl", "-u", MINION_UNIT, "--no-pager", "-n", str(lines)]
        return f"{log_file}\n{self.host.run(cmd).stdout}"


def states_of(ret: Any) -> dict[str, dict]:
    """The per-state results of one minion's state run; fails with the text otherwise."""
    assert isinstance(ret, dict), f"not a state run: {ret}"
    return ret


def changed_states(ret: Any) -> dict[str, Any]:
    """The states of one minion's run that reported changes."""
    return {k: v["changes"] for k, v in states_of(ret).items() if v["changes"]}


def failed_states(ret: Any) -> dict[str, str]:
    """The states of one minion's run whose result is not True, with their comments."""
    return {k: v["comment"] for k, v in states_of(ret).items() if v["result"] is not True}


def ids_of(keys: Sequence[str]) -> list[str]:
    """The state ids (``__id__``) of state keys ``mod_|-id_|-name_|-fun``."""
    return sorted(key.split("_|-")[1] for key in keys)


class Prober:
    """Polls ``https://NAME/`` every ``interval`` seconds in a thread, at the address
    written in ``target`` (a file: what a move's switch command rewrites), and keeps
    each answer's (monotonic time, HTTP status; 0 when there was none, address)."""

    def __init__(self, name: str, target: Path, interval: float = 0.1) -> None:
        self.name = name
        self.target = target
        self.interval = interval
        self.answers: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._context = ssl.create_default_context()
        self._context.check_hostname = False
        self._context.verify_mode = ssl.CERT_NONE

    def status(self, address: str) -> int:
        """One GET / at ``address``: its status (0 when it failed)."""
        request = f"GET / HTTP/1.1\r\nHost: {self.name}\r\nConnection: close\r\n\r\n"
        try:
            with (
                socket.create_connection((address, 443), timeout=5) as raw,
                self._context.wrap_socket(raw, server_hostname=self.name) as tls,
            ):
                tls.sendall(request.encode())
                line = tls.recv(64).split(b"\r\n", 1)[0].decode(errors="replace")
        except OSError:
            return 0
        parts = line.split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0

    def _run(self) -> None:
        while not self._stop.is_set():
            address = self.target.read_text().strip()
            self.answers.append((time.monotonic(), self.status(address), address))
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def wait_for(self, status: int, address: str, timeout: float = 120.0) -> None:
        """Until an answer ``status`` from ``address`` came; else fail."""
        deadline = time.monotonic() + timeout
        while not any(s == status and a == address for _t, s, a in list(self.answers)):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {status} from {address}: {self.answers[-5:]}")
            time.sleep(0.2)

    def longest_gap(self) -> float:
        """The longest time between two answers 200 in a row (seconds)."""
        times = [t for t, s, _a in self.answers if s == 200]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)
