"""A real salt-master and salt-minion on one test host, for ``salt <id> ...`` and the reactor.

The image's minion is masterless (``/etc/salt/minion.d/webarch.conf``: file_client local).
:class:`SaltMaster` writes ``/etc/salt/master``, switches the minion to that master with
``/etc/salt/minion.d/zz-master.conf`` and runs both daemons from the Salt venv as transient
units, plus an event recorder (``salt-run state.event``) writing every event seen on the
master's bus to ``/var/log/webarch-test/events.log``::

    master = SaltMaster(host)
    master.start(["/srv/formula/webarch/files/salt-master/webarch-reactor.conf"])
    ret = master.call("state.apply", "webarch")            # = salt <id> state.apply webarch
    master.wait_for_event("salt/job/*/ret/*")
    assert "webarch" in master.job_cache_text()
    master.stop()                                          # masterless again

Facts this relies on (Salt 3008, onedir-less pip install in /opt/salt):

* The master and the minion use the same file_roots (/srv/formula) and pillar_roots
  (/srv/pillar) as the masterless setup, so ``host.set_pillar()`` works for both
  (``SaltMaster(host, file_roots=None, pillar_roots=None)``: Salt's defaults instead).
* The minion id is the host's name; its key is auto-accepted (``auto_accept: True``).
* The minion keeps the image's ``module_dirs`` (/srv/formula), and ``state.apply`` also
  syncs ``_modules``/``_states``/``_utils`` from the master: both copies are the formula's.
* Reactor snippets are copied into /etc/salt/master.d/ before the master starts; the master
  reads them only at start.  Reactor SLS files named by absolute path are rendered by the
  master from its own file system (not through the fileserver).
* Default local job cache: /var/cache/salt/master/jobs/<xx>/<hash>/ with ``jid``,
  ``.load.p`` (the job as published) and ``<minion>/return.p`` (msgpack files).
* Transient units are gone after a reboot of the host: start() again then.
* Noise to expect in /var/log/salt/master: ERROR tracebacks "Failed to import returner
  mysql" (saltext-mysql without MySQLdb in the venv), "Task was destroyed but it is
  pending!", and "unclosed ..." warnings of every salt-run.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .host import Host, HostError

log = logging.getLogger(__name__)

SALT_BIN = "/opt/salt/bin"
MASTER_CONF = "/etc/salt/master"
MASTER_D = "/etc/salt/master.d"
MINION_MASTER_CONF = "/etc/salt/minion.d/zz-master.conf"
MASTER_LOG = "/var/log/salt/master"
MINION_LOG = "/var/log/salt/minion"
JOB_CACHE = "/var/cache/salt/master/jobs"
EVENTS_LOG = "/var/log/webarch-test/events.log"
#: Names of the snippets the last start() copied into master.d (removed by the next one).
SNIPPETS_RECORD = "/var/lib/webarch-test/salt-master-snippets"

MASTER_UNIT = "webarch-test-salt-master"
MINION_UNIT = "webarch-test-salt-minion"
EVENTS_UNIT = "webarch-test-salt-events"

#: A year: jobs stay in the cache for the whole test run.
KEEP_JOBS_SECONDS = 365 * 24 * 3600

#: Prints every file under $1 as "=== path" + its text; msgpack files (*.p) decoded to JSON.
_JOB_CACHE_SCRIPT = r"""
import json, os, sys
import salt.payload

def text(path):
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".p"):
        try:
            data = salt.payload.loads(raw)
        except Exception as exc:
            return "(undecodable msgpack: %r) %r" % (exc, raw)
        return json.dumps(data, indent=1, sort_keys=True, default=repr, ensure_ascii=False)
    return raw.decode("utf-8", "replace")

for root, dirs, files in os.walk(sys.argv[1]):
    dirs.sort()
    for name in sorted(files):
        path = os.path.join(root, name)
        print("=== " + path)
        print(text(path))
"""

#: Exits 1 with a message unless every file given is a YAML mapping (as master.d needs).
_SNIPPET_CHECK_SCRIPT = r"""
import sys
import salt.utils.yaml
for path in sys.argv[1:]:
    try:
        with open(path, encoding="utf-8") as f:
            data = salt.utils.yaml.safe_load(f)
    except Exception as exc:
        sys.exit("%s: %s" % (path, exc))
    if not isinstance(data, dict):
        sys.exit("%s: not a YAML mapping" % path)
"""

#: Start of an event in the recorder's output: the tag at a line start, then a tab.
_EVENT_START = re.compile(r"(?m)^(\S[^\t\n]*)\t")


class SaltMasterError(HostError):
    """The master or minion did not come up or answer in time."""


@dataclass
class SaltMaster:
    """salt-master + salt-minion (+ event recorder) as transient units of one test host."""

    host: Host
    minion_id: str = ""
    start_timeout: float = 120.0
    #: The master's file_roots and pillar_roots (base); None leaves the setting out of
    #: /etc/salt/master: Salt's defaults then (/srv/salt and /srv/pillar).
    file_roots: Sequence[str] | None = ("/srv/formula",)
    pillar_roots: Sequence[str] | None = ("/srv/pillar",)
    #: Snippets the last start() copied into master.d (paths in the host).
    snippets: list[str] = field(default_factory=list, init=False)
    #: Seconds the last start() took until master, minion and recorder were up.
    start_seconds: float = field(default=0.0, init=False)
    #: Epoch seconds of the last start() (journal lines before it are not shown).
    _since: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        """The minion id defaults to the host's name."""
        self.minion_id = self.minion_id or self.host.name

    # ------------------------------------------------------------------ configuration

    def master_config(self) -> str:
        """Text of /etc/salt/master."""
        roots = ""
        for key, dirs in (("file_roots", self.file_roots), ("pillar_roots", self.pillar_roots)):
            if dirs is not None:
                roots += f"{key}:\n  base:\n" + "".join(f"    - {d}\n" for d in dirs)
        return (
            "# Written by test/testhost/saltmaster.py: a master for this host's own minion.\n"
            "interface: 127.0.0.1\n"
            f"{roots}"
            "auto_accept: True\n"
            f"log_file: {MASTER_LOG}\n"
            "log_level_logfile: info\n"
            "job_cache: True\n"
            f"keep_jobs_seconds: {KEEP_JOBS_SECONDS}\n"
        )

    def minion_config(self) -> str:
        """Text of /etc/salt/minion.d/zz-master.conf (overrides the image's webarch.conf)."""
        return (
            "# Written by test/testhost/saltmaster.py: this minion uses the master on the host.\n"
            "# saltmaster.SaltMaster.stop() removes this file (masterless again).\n"
            "file_client: remote\n"
            "master: 127.0.0.1\n"
            f"id: {json.dumps(self.minion_id)}\n"
            f"log_file: {MINION_LOG}\n"
            "log_level_logfile: info\n"
            # Retry quickly while the master is not up or has not accepted the key yet.
            "acceptance_wait_time: 1\n"
            "random_reauth_delay: 0\n"
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self, reactor_snippets: Sequence[str] = ()) -> None:
        """Configure and start master, minion and event recorder; wait for test.ping.

        ``reactor_snippets`` are paths of files inside the host, copied into
        /etc/salt/master.d/ (same base name) before the master starts; each must be a
        YAML mapping (salt-master would skip a broken one with just a logged error).
        Restarts everything if already running.  On failure everything is stopped again
        (masterless) and SaltMasterError carries the end of the logs.
        """
        started = time.monotonic()
        deadline = started + self.start_timeout
        self._stop_units()
        self._since = time.time() - 1.0  # containers share this machine's clock
        try:
            self._install_snippets(reactor_snippets)
            self.host.write_file(MASTER_CONF, self.master_config(), mode=0o644)
            self.host.write_file(MINION_MASTER_CONF, self.minion_config(), mode=0o644)
            self.host.run(["mkdir", "-p", "/var/log/salt", "/var/log/webarch-test"], check=True)
            self.host.run(["rm", "-f", EVENTS_LOG], check=True)

            self._run_unit(MASTER_UNIT, [f"{SALT_BIN}/salt-master", "-l", "warning"])
            what = "salt-master listens on 127.0.0.1:4505 and 4506"
            self._wait(deadline, what, self._master_up, [MASTER_UNIT])
            # salt-minion needs ~10 s to act on SIGTERM and exit; nothing to lose in a test.
            minion = [f"{SALT_BIN}/salt-minion", "-l", "warning"]
            self._run_unit(MINION_UNIT, minion, "TimeoutStopSec=3")
            what = f"salt {self.minion_id} test.ping answers True"
            self._wait(deadline, what, self._pings, [MASTER_UNIT, MINION_UNIT])
            self._start_event_recorder(deadline)
        except BaseException:
            try:
                self.stop()
            except (HostError, subprocess.SubprocessError) as exc:
                log.warning("cannot stop the salt daemons of %s: %s", self.host.name, exc)
            raise
        self.start_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Stop recorder, minion and master; remove zz-master.conf (masterless again).

        Logs, the job cache, events.log and the master's keys stay for inspection.
        """
        self._stop_units()
        self.host.run(["rm", "-f", MINION_MASTER_CONF], check=True)

    def is_running(self) -> bool:
        """Tell whether master and minion units are active."""
        cmd = ["systemctl", "is-active", "--quiet", MASTER_UNIT, MINION_UNIT]
        return self.host.run(cmd).returncode == 0

    # ------------------------------------------------------------------ commands

    def salt(self, *args: str, timeout: float = 600.0) -> dict[str, Any]:
        """Run ``salt --out=json ARGS`` on the host; return {minion id: return}.

        E.g. ``salt("wa-x", "state.apply", "webarch")``.  One JSON document per returning
        minion is printed; they are merged.  A minion that did not answer maps to Salt's
        "Minion did not return. [No response]..." text.  The CompletedProcess is kept in
        ``host.last`` (exit 1 also when a minion's retcode is not 0).  Raises
        SaltMasterError if the output has no JSON object or after ``timeout`` seconds.

        No ``--static``: in Salt 3008 it goes through the batch code, which publishes an
        extra ``test.ping`` job first and gives up on a job that runs longer than ``-t``
        (5 s) + gather_job_timeout (10 s), printing ``{}`` ("No return received").  Without
        it the CLI keeps asking the minion (``saltutil.find_job``) and waits for long runs.
        """
        cmd = [f"{SALT_BIN}/salt", "--out=json", *args]
        proc = self._run(cmd, timeout)
        try:
            return _parse_json_documents(proc.stdout)
        except ValueError:
            what = f"salt returned no JSON (exit {proc.returncode})"
            raise self._error(what, cmd, proc) from None

    def call(self, fun: str, *args: str, timeout: float = 600.0) -> Any:
        """``salt <minion id> FUN ARGS``: the return of this host's minion alone."""
        ret = self.salt(self.minion_id, fun, *args, timeout=timeout)
        if self.minion_id not in ret:
            raise SaltMasterError(
                f"no return of {self.minion_id} for {fun}: {ret}\n{self.logs_tail()}"
            )
        return ret[self.minion_id]

    def run_salt_run(self, *args: str, timeout: float = 600.0) -> Any:
        """Run ``salt-run --out=json ARGS`` on the host; return the parsed JSON (any type)."""
        cmd = [f"{SALT_BIN}/salt-run", "--out=json", *args]
        proc = self._run(cmd, timeout)
        try:
            return _parse_json_any(proc.stdout)
        except ValueError:
            raise self._error(
                f"salt-run returned no JSON (exit {proc.returncode})", cmd, proc
            ) from None

    # ------------------------------------------------------------------ what happened

    def events_text(self) -> str:
        """Everything the event recorder wrote: ``tag<TAB>pretty JSON`` per event."""
        return self.host.run(["cat", "--", EVENTS_LOG]).stdout

    def events(self) -> list[tuple[str, Any]]:
        """The recorded events as (tag, data), oldest first (a half-written last one omitted)."""
        return _parse_events(self.events_text())

    def wait_for_event(
        self,
        tag_glob: str,
        timeout: float = 30.0,
        start_at: int = 0,
        where: Callable[[Any], bool] | None = None,
    ) -> tuple[str, Any]:
        """Wait for an event whose tag matches ``tag_glob`` (fnmatch); return (tag, data).

        Only events from index ``start_at`` of :meth:`events` on count: pass
        ``len(master.events())`` taken before an action to see only newer events.
        ``where``, if given, must also be true for the event's data.
        """
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()[start_at:]
            for tag, data in events:
                if fnmatch.fnmatchcase(tag, tag_glob) and (where is None or where(data)):
                    return tag, data
            if time.monotonic() > deadline:
                tags = [tag for tag, _ in events]
                raise SaltMasterError(
                    f"no event {tag_glob!r} after {timeout:.0f}s; tags seen since "
                    f"#{start_at}: {tags[-30:]}\n{self.logs_tail()}"
                )
            time.sleep(0.2)

    def job_cache_text(self) -> str:
        """All files of the master's job cache, msgpack files decoded to JSON (searchable)."""
        cmd = [f"{SALT_BIN}/python", "-c", _JOB_CACHE_SCRIPT, JOB_CACHE]
        proc = self.host.run(cmd, timeout=120)
        if proc.returncode != 0:
            raise SaltMasterError(f"cannot read the job cache:\n{proc.stderr[-4000:]}")
        return proc.stdout

    def logs_text(self, lines: int | None = None) -> str:
        """Master and minion log files and the journals of the units (last ``lines`` each).

        The journals are those since the last start(); the log files are appended to by
        every start.
        """
        parts = []
        limit = ["-n", str(lines)] if lines else []
        for path in (MASTER_LOG, MINION_LOG):
            text = self.host.run(["tail", *(limit or ["-n", "+1"]), "--", path]).stdout
            parts.append(f"--- {path} ---\n{text}")
        for unit in (MASTER_UNIT, MINION_UNIT, EVENTS_UNIT):
            cmd = ["journalctl", "-u", unit, "--no-pager", "-o", "short-precise", *limit]
            cmd += [f"--since=@{self._since:.0f}"] if self._since else []
            parts.append(f"--- journal of {unit} ---\n{self.host.run(cmd).stdout}")
        return "\n".join(parts)

    def logs_tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines of each log (for error messages)."""
        return self.logs_text(lines)

    # ------------------------------------------------------------------ internals

    def _run(self, cmd: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in the host; a timeout becomes a SaltMasterError with the logs."""
        try:
            proc = self.host.run(cmd, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SaltMasterError(
                f"timeout after {timeout:.0f}s: {shlex.join(cmd)}\n{self.logs_tail()}"
            ) from None
        self.host.last = proc
        return proc

    def _error(
        self, what: str, cmd: Sequence[str], proc: subprocess.CompletedProcess[str]
    ) -> SaltMasterError:
        """A SaltMasterError with the command's output and the end of the logs."""
        return SaltMasterError(
            f"{what}: {shlex.join(cmd)}\n--- stdout ---\n{proc.stdout[-4000:]}\n"
            f"--- stderr ---\n{proc.stderr[-4000:]}\n{self.logs_tail()}"
        )

    def _install_snippets(self, snippets: Sequence[str]) -> None:
        """Remove the snippets of the last start(), copy ``snippets`` into master.d."""
        script = r"""
set -eu
record=$1 dir=$2; shift 2
mkdir -p "$dir" "$(dirname "$record")"
if [ -f "$record" ]; then
    while IFS= read -r name; do rm -f -- "$dir/$name"; done < "$record"
fi
: > "$record"
for src in "$@"; do
    name=$(basename -- "$src")
    cp -- "$src" "$dir/$name"
    chmod 644 "$dir/$name"
    printf '%s\n' "$name" >> "$record"
done
"""
        if snippets:  # salt-master only logs an error for a broken file and ignores it
            check = [f"{SALT_BIN}/python", "-c", _SNIPPET_CHECK_SCRIPT, *snippets]
            proc = self.host.run(check)
            if proc.returncode != 0:
                raise SaltMasterError(f"bad master config snippet: {proc.stdout}{proc.stderr}")
        cmd = ["sh", "-c", script, "sh", SNIPPETS_RECORD, MASTER_D, *snippets]
        proc = self.host.run(cmd)
        if proc.returncode != 0:
            raise SaltMasterError(f"cannot copy reactor snippets {list(snippets)}: {proc.stderr}")
        self.snippets = list(snippets)

    def _run_unit(self, unit: str, argv: Sequence[str], *properties: str) -> None:
        """Start ``argv`` as the transient service ``unit``."""
        cmd = [
            "systemd-run",
            f"--unit={unit}",
            "--collect",
            "--quiet",
            "--property=Type=exec",
            "--setenv=PYTHONUNBUFFERED=1",
            "--property=TimeoutStopSec=30",
            *(f"--property={p}" for p in properties),
            *argv,
        ]
        proc = self.host.run(cmd)
        if proc.returncode != 0:
            raise SaltMasterError(f"cannot start {unit}: {proc.stderr.strip()}")

    def _stop_units(self) -> None:
        """Stop the recorder, minion and master units (if loaded); forget failed states.

        One by one in this order: a minion whose master is gone first tries to reconnect
        and reacts to SIGTERM only seconds later.
        """
        units = [EVENTS_UNIT, MINION_UNIT, MASTER_UNIT]
        for unit in units:
            self.host.run(["systemctl", "stop", unit], timeout=120)
        self.host.run(["systemctl", "reset-failed", *units])

    def _inactive(self, units: Sequence[str]) -> str | None:
        """'<unit> is <state>' for the first of ``units`` that is not active, or None.

        A transient unit started with --collect is unloaded once it failed: "inactive".
        """
        for unit in units:
            state = self.host.run(["systemctl", "is-active", unit]).stdout.strip()
            if state not in ("active", "reloading"):
                return f"{unit} is {state or 'gone'}"
        return None

    def _wait(
        self, deadline: float, what: str, ready: Callable[[], bool], units: Sequence[str]
    ) -> None:
        """Poll ``ready()`` until true while ``units`` stay active; else SaltMasterError."""
        while True:
            if ready():
                return
            inactive = self._inactive(units)
            if inactive:
                raise SaltMasterError(f"waiting for: {what}: {inactive}\n{self.logs_tail()}")
            if time.monotonic() > deadline:
                raise SaltMasterError(
                    f"not ready after {self.start_timeout:.0f}s: {what}\n{self.logs_tail()}"
                )
            time.sleep(0.25)

    def _master_up(self) -> bool:
        """Tell whether the master's publish and request ports listen."""
        proc = self.host.run(["ss", "-Hltn", "src", "127.0.0.1"])
        ports = {line.split()[3].rsplit(":", 1)[-1] for line in proc.stdout.splitlines()}
        return {"4505", "4506"} <= ports

    def _pings(self) -> bool:
        """Tell whether ``salt <id> test.ping`` returns True."""
        cmd = [f"{SALT_BIN}/salt", "--out=json", "-t", "5", self.minion_id, "test.ping"]
        proc = self.host.run(cmd, timeout=60)
        try:
            return _parse_json_documents(proc.stdout).get(self.minion_id) is True
        except ValueError:
            return False

    def _start_event_recorder(self, deadline: float) -> None:
        """Run ``salt-run state.event pretty=True`` into events.log; wait until it records."""
        self._run_unit(
            EVENTS_UNIT,
            [f"{SALT_BIN}/salt-run", "state.event", "pretty=True"],
            f"StandardOutput=append:{EVENTS_LOG}",
            "SuccessExitStatus=1",  # how salt-run state.event ends on SIGTERM
        )
        tag = "webarch-test/recorder-ready"
        while True:
            cmd = [f"{SALT_BIN}/salt-run", "--out=json", "event.send", tag]
            self.host.run(cmd, timeout=60)
            if any(t == tag for t, _ in self.events()):
                return
            if time.monotonic() > deadline:
                raise SaltMasterError(
                    f"the event recorder wrote nothing to {EVENTS_LOG}\n{self.logs_tail()}"
                )
            time.sleep(0.5)


def _parse_json_any(stdout: str) -> Any:
    """Parse JSON output of any type, skipping non-JSON lines printed before it."""
    decoder = json.JSONDecoder()
    text = stdout.strip()
    start = 0
    while start != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            pass
        else:
            if not text[end:].strip():
                return value
        start = text.find("\n", start)
        start = start + 1 if start != -1 else -1
    raise ValueError("no JSON in output")


def _parse_json_documents(stdout: str) -> dict[str, Any]:
    """Merge the JSON objects printed one after the other (non-JSON lines before skipped)."""
    decoder = json.JSONDecoder()
    text = stdout.strip()
    start = text.find("{")
    while start != -1:
        merged: dict[str, Any] = {}
        pos = start
        try:
            while pos < len(text):
                value, pos = decoder.raw_decode(text, pos)
                if not isinstance(value, dict):
                    raise ValueError("not an object")
                merged.update(value)
                while pos < len(text) and text[pos].isspace():
                    pos += 1
        except ValueError:  # also json.JSONDecodeError
            start = text.find("\n{", start + 1)
            start = start + 1 if start != -1 else -1
            continue
        return merged
    raise ValueError("no JSON object in output")


def _parse_events(text: str) -> list[tuple[str, Any]]:
    """Split the recorder's output into (tag, data)."""
    decoder = json.JSONDecoder()
    events = []
    for match in _EVENT_START.finditer(text):
        try:
            data, _ = decoder.raw_decode(text, match.end())
        except json.JSONDecodeError:
            continue  # half written, or a line of JSON that happens to contain a tab
        events.append((match.group(1), data))
    return events
