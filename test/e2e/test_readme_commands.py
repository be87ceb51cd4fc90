"""The README's commands for using the formula, run as written on a test host.

The commands are taken from README.rst itself (the literal blocks and the inline
``salt ...`` commands of "Using the formula", and the reactor snippet's block of
"Password notifications"), so this test breaks when they stop working.  The
host is a minion with no webarch configuration of its own: the image's
/etc/salt/minion.d/webarch.conf is moved aside, no formula is bound
(``formula_dir=None``), and the checkout is copied to /srv/webarch, where every
command runs (as a user at the top of the checkout).  Only the example target
``web1`` is replaced by the host's minion id.

1. Masterless: the setup commands, then the ``salt-call --local`` command on a
   fresh host (pillar.example as the README has it installed): no failed
   state, a site answers over HTTPS, a second run changes nothing.
2. Master/minion on the same host: a real salt-master with Salt's default
   file_roots and pillar_roots (/srv/salt, /srv/pillar: the README's commands
   fill them), the reactor snippet, and a minion that has only its master's
   address.  The pillar gets one more account (dave, with a site and a
   password mailed through the reactor), then every ``salt ...`` command runs
   in the README's order: the sync brings the custom modules, validate says
   valid, test=True fails nothing, the real run converges (dave's site
   answers), a re-run changes nothing, the targeted run touches alice only.

WEBARCH_TEST_README names another README to run (to try a README change).
Also under WEBARCH_TEST_RELEASE=trixie.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from docutils import nodes
from docutils.core import publish_doctree
from e2e.conftest import MATOMO_ARCHIVE, provide_matomo
from testhost import Host
from testhost.saltmaster import SaltMaster

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
README = Path(os.environ.get("WEBARCH_TEST_README") or REPO / "README.rst")
#: The README sections whose commands run (the second only: its literal blocks).
USING_SECTION = "Using the formula"
REACTOR_SECTION = "Password notifications"
#: Where the README has the checkout (its masterless command names it).
CHECKOUT = "/srv/webarch"
#: Example minion ids the README targets; replaced by the host's minion id.
EXAMPLE_TARGETS = ("web1",)
IMAGE_MINION_CONF = "/etc/salt/minion.d/webarch.conf"
ENV = {"PATH": "/opt/salt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

#: dave: added through the master (a new account, site and mailed password).
DAVE = {
    "fullname": "Dave Added",
    "email": "dave@dave.example",
    "ssh_password": True,
    "sites": {"www": {"type": "static", "server_name": "www.dave.example"}},
}
#: name -> (site content file, text): pages put up to see the sites answer.
PAGES = {
    "shop.bob.example": ("/home/bob/sites/shop/index.html", "bob shop via README\n"),
    "www.dave.example": ("/home/dave/sites/www/index.html", "dave www via README\n"),
}


# ---------------------------------------------------------------------- README


@dataclass(frozen=True)
class Command:
    """One shell command of the README."""

    kind: str  # install, setup, master-setup, restart, masterless, master
    line: str  # as written (comments kept; sh runs it)
    argv: tuple[str, ...]


def _section(doctree: nodes.document, title: str) -> nodes.section:
    for section in doctree.findall(nodes.section):
        if section[0].astext() == title:
            return section
    raise AssertionError(f"README.rst has no section {title!r}")


def _shell_lines(block: str) -> list[str]:
    """The commands of a literal block: one per line, backslash continuations joined."""
    text = re.sub(r"\\\n\s*", "", block)
    return [line.strip() for line in text.splitlines() if line.strip()]


def _classify(line: str) -> Command:
    argv = tuple(shlex.split(line, comments=True))
    assert argv, f"README: not a command: {line!r}"
    name = argv[0]
    if name == "salt-pip":
        kind = "install"
    elif name == "systemctl" and argv[1:2] == ("restart",):
        assert set(argv[2:]) <= {"salt-minion", "salt-master"}, f"README: {line}"
        kind = "restart"
    elif name == "salt-call":
        assert "--local" in argv, f"README: salt-call without --local: {line}"
        kind = "masterless"
    elif name == "salt":
        kind = "master"
    else:
        kind = "setup"
    return Command(kind, line, argv)


def readme_commands(path: Path = README) -> list[Command]:
    """The commands of the README's USING_SECTION and REACTOR_SECTION, in order.

    The reactor snippet's commands come with the setup: they must be in place
    before a state run that mails passwords through the master.
    """
    settings = {"report_level": 5, "halt_level": 5}
    doctree = publish_doctree(path.read_text(), settings_overrides=settings)
    lines: list[str] = []
    using = _section(doctree, USING_SECTION)
    for node in using.findall(lambda n: isinstance(n, (nodes.literal_block, nodes.literal))):
        if isinstance(node, nodes.literal_block):
            lines += _shell_lines(node.astext())
        elif node.astext().startswith("salt "):  # inline, as ``salt '*' saltutil.sync_all``
            lines.append(node.astext())
    reactor = [
        line
        for block in _section(doctree, REACTOR_SECTION).findall(nodes.literal_block)
        for line in _shell_lines(block.astext())
    ]
    commands = [_classify(line) for line in dict.fromkeys(lines)]  # in order, once each
    first_salt = next(i for i, c in enumerate(commands) if c.kind in ("master", "masterless"))
    for line in reversed(reactor):
        command = _classify(line)
        if command.kind == "setup":
            command = Command("master-setup", command.line, command.argv)
        commands.insert(first_salt, command)
    return commands


def of_kind(commands: list[Command], *kinds: str) -> list[Command]:
    return [c for c in commands if c.kind in kinds]


def test_the_readme_has_the_commands_this_test_runs():
    commands = readme_commands()
    masterless = of_kind(commands, "masterless")
    assert len(masterless) == 1, masterless
    assert masterless[0].argv[-2:] == ("state.apply", "webarch")
    master = [c.argv[1:] for c in of_kind(commands, "master")]
    for expected in (
        ("*", "saltutil.sync_all"),
        ("*", "webarch.validate"),
        ("*", "state.apply", "webarch", "test=True"),
        ("*", "state.apply", "webarch"),
        ("web1", "state.apply", "webarch", 'pillar={"webarch_only": ["alice"]}'),
    ):
        assert expected in master, f"README.rst no longer shows: salt {shlex.join(expected)}"
    names = [c[1] for c in master]
    assert names.index("saltutil.sync_all") < names.index("webarch.validate")
    setup = " ; ".join(c.line for c in of_kind(commands, "setup"))
    assert "webarch-loader.conf" in setup, setup
    setup = " ; ".join(c.line for c in of_kind(commands, "master-setup"))
    assert "webarch-reactor.conf" in setup, setup


# ---------------------------------------------------------------------- state output


@dataclass(frozen=True)
class State:
    """One state in a state run's text output."""

    id: str
    function: str
    name: str
    result: str
    changed: bool

    def __str__(self) -> str:
        return f"{self.id} ({self.function})"


@dataclass
class Run:
    """A state run's text output (Salt's highstate outputter), as a user sees it."""

    proc: subprocess.CompletedProcess[str]

    @property
    def text(self) -> str:
        return self.proc.stdout

    def states(self) -> list[State]:
        """Every state of the output."""
        found = []
        pattern = r"(?ms)^ {10}ID: (.+?)\n(.*?)(?=^-{10}\n {10}ID: |^Summary for )"
        for match in re.finditer(pattern, self.text):
            body = match.group(2)
            fields = dict(re.findall(r"(?m)^ +(Function|Name|Result): (.*)$", body))
            changes = body.split("Changes:", 1)[1] if "Changes:" in body else ""
            changed = bool(re.sub(r"(?m)^-{10}$", "", changes).strip())
            found.append(
                State(
                    match.group(1),
                    fields.get("Function", "?"),
                    fields.get("Name", "?"),
                    fields.get("Result", "?"),
                    changed,
                )
            )
        return found

    def summary(self) -> dict[str, int]:
        """succeeded, changed, failed (and unchanged, in test mode) of the summary."""
        match = re.search(r"(?m)^Succeeded: +(\d+)(?: \(([^)]*)\))?\nFailed: +(\d+)$", self.text)
        assert match, f"no state run summary in:\n{self.tail()}"
        counts = {"succeeded": int(match.group(1)), "failed": int(match.group(3)), "changed": 0}
        for part in (match.group(2) or "").split(","):
            if "=" in part:
                key, value = part.strip().split("=")
                counts[key] = int(value)
        return counts

    def failed(self, test: bool = False) -> list[str]:
        """States whose result is not True (nor None, in test mode: a predicted change)."""
        ok = ("True", "None") if test else ("True",)
        return [f"{s}: {s.result}" for s in self.states() if s.result not in ok]

    def changed(self) -> list[str]:
        return [str(s) for s in self.states() if s.changed]

    def tail(self, chars: int = 6000) -> str:
        return f"{self.text[-chars:]}\n--- stderr ---\n{self.proc.stderr[-2000:]}"

    def check(self, changes: bool | None, test: bool = False) -> dict[str, int]:
        """Exit 0, no failed state, and changes (True), none (False) or either (None)."""
        counts = self.summary()
        failed = self.failed(test)
        assert counts["failed"] == 0 and not failed, f"failed: {failed}"
        assert self.proc.returncode == 0, self.tail()
        assert counts["succeeded"] > 100, counts
        assert len(self.states()) == counts["succeeded"], "the parser sees every state"
        if changes is not None:
            assert (counts["changed"] > 0) is changes, f"changed: {self.changed()}"
        assert len(self.changed()) == counts["changed"]
        return counts


# ---------------------------------------------------------------------- host


def checkout_tar(repo: Path) -> bytes:
    """The checkout's files (tracked, and new ones not ignored; no .git) as a tar."""
    listed = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    names = b"\0".join(n for n in listed if n and (repo / os.fsdecode(n)).exists())
    cmd = ["tar", "-c", "-C", str(repo), "--owner=0", "--group=0", "--numeric-owner"]
    return subprocess.run(
        [*cmd, "--null", "-T", "-", "-f", "-"], input=names, capture_output=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def commands() -> list[Command]:
    return readme_commands()


@pytest.fixture(scope="module")
def host(image: Path) -> Iterator[Host]:
    """A minion without webarch configuration, the checkout at CHECKOUT."""
    with Host("wa-readme", image, formula_dir=None) as running:
        running.run(["mv", IMAGE_MINION_CONF, "/root/webarch.conf.aside"], check=True)
        running.untar(checkout_tar(REPO), CHECKOUT)
        # Where pillar.example expects Matomo's release archive (put there by
        # the user beforehand, as the README says).
        provide_matomo(running)
        yield running


def sh(host: Host, command: Command, target: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``command`` as written in CHECKOUT; ``target`` replaces an example minion id."""
    line = command.line
    if target and command.kind == "master" and command.argv[1] in EXAMPLE_TARGETS:
        line = re.sub(rf"^salt +{re.escape(command.argv[1])} ", f"salt {target} ", line)
    started = time.monotonic()
    proc = host.run(["sh", "-c", f"cd {CHECKOUT} && {line}"], env=ENV, timeout=1800)
    print(f"\n$ {line}  # exit {proc.returncode}, {time.monotonic() - started:.1f}s")
    return proc


def setup(host: Host, commands: list[Command], *kinds: str) -> None:
    """The install and setup commands (the daemons are started by the caller)."""
    for command in of_kind(commands, "install", "setup", *kinds):
        if command.kind == "install":
            # No network on a test host: the image has the extensions already.
            packages = [a for a in command.argv[2:] if not a.startswith("-")]
            modules = [p.replace("-", ".", 1).replace("-", "_") for p in packages]
            check = ["/opt/salt/bin/python", "-c", f"import {', '.join(modules)}"]
            assert host.run(check).returncode == 0, f"{packages} not in Salt's environment"
            continue
        proc = sh(host, command)
        assert proc.returncode == 0, f"{command.line}\n{proc.stdout}{proc.stderr}"


def curl(host: Host, name: str) -> str:
    cmd = ["curl", "-sS", "-k", "--max-time", "20", "--resolve", f"{name}:443:127.0.0.1"]
    return host.net_run([*cmd, f"https://{name}/"]).stdout


def put_page(host: Host, name: str) -> None:
    path, text = PAGES[name]
    owner = path.split("/")[2]
    host.write_file(path, text, mode=0o640)
    host.run(["chown", f"{owner}:www-data", path], check=True)


# ---------------------------------------------------------------------- masterless


@pytest.fixture(scope="module")
def masterless(host: Host, commands: list[Command]) -> Host:
    """The README's setup done on the fresh host (no daemon: masterless)."""
    setup(host, commands)
    assert host.exists("/etc/salt/minion.d/webarch-loader.conf")
    assert host.exists("/srv/pillar/top.sls"), "the README's commands install no pillar"
    if not MATOMO_ARCHIVE.is_file():
        # No Matomo release on this machine: the example without its Matomo.
        pillar = yaml.safe_load(host.read_file("/srv/pillar/webarch.sls"))
        del pillar["webarch"]["matomo"]
        host.write_file("/srv/pillar/webarch.sls", yaml.safe_dump(pillar), mode=0o600)
    return host


def masterless_run(host: Host, commands: list[Command]) -> Run:
    (command,) = of_kind(commands, "masterless")
    return Run(sh(host, command))


def test_masterless_command_converges_a_fresh_host(masterless, commands):
    run = masterless_run(masterless, commands)
    counts = run.check(changes=True)
    print(f"masterless first run: {counts}")
    assert "webarch-alice-user (user.present)" in run.changed()
    put_page(masterless, "shop.bob.example")
    assert curl(masterless, "shop.bob.example") == PAGES["shop.bob.example"][1]


def test_masterless_command_again_changes_nothing(masterless, commands):
    masterless_run(masterless, commands).check(changes=False)


# ---------------------------------------------------------------------- master/minion


@pytest.fixture(scope="module")
def master(masterless: Host, commands: list[Command]) -> Iterator[SaltMaster]:
    """Master (Salt's default roots) and minion, after the README's setup; dave added.

    The README's ``systemctl restart`` of salt-master/salt-minion is this start.
    """
    masterless.run(["mkdir", "-p", "/etc/salt/master.d"], check=True)  # as salt-master's package
    setup(masterless, commands, "master-setup")
    pillar = yaml.safe_load(masterless.read_file("/srv/pillar/webarch.sls"))
    pillar["webarch"]["accounts"]["dave"] = DAVE
    masterless.write_file("/srv/pillar/webarch.sls", yaml.safe_dump(pillar), mode=0o600)
    running = SaltMaster(masterless, file_roots=None, pillar_roots=None)
    running.start()
    assert running.call("config.get", "module_dirs") == []
    assert running.run_salt_run("config.get", "file_roots")["base"][0] == "/srv/salt"
    assert running.run_salt_run("config.get", "reactor")  # the README's snippet
    yield running
    running.stop()


def master_command(commands: list[Command], *args: str) -> Command:
    return next(c for c in of_kind(commands, "master") if c.argv[1:] == args)


def test_sync_all_brings_the_custom_modules(master, commands):
    proc = sh(master.host, master_command(commands, "*", "saltutil.sync_all"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for module in (
        "modules.webarch",
        "modules.webarch_chroot",
        "states.webarch_chroot",
        "states.webarch_notify",
        *(f"utils.{p.stem}" for p in (REPO / "_utils").glob("*.py")),
    ):
        assert f"- {module}\n" in proc.stdout, f"{module} not synced:\n{proc.stdout}"


def test_validate(master, commands):
    proc = sh(master.host, master_command(commands, "*", "webarch.validate"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"(?m)^ +valid:\n +True$", proc.stdout), proc.stdout
    assert "problems:" in proc.stdout and "webarch:" not in proc.stdout


def test_test_mode_fails_nothing_and_changes_nothing(master, commands):
    run = Run(sh(master.host, master_command(commands, "*", "state.apply", "webarch", "test=True")))
    counts = run.check(changes=True, test=True)
    predicted = {state.id for state in run.states() if state.result == "None"}
    assert "webarch-dave-user" in predicted, counts
    assert not [i for i in predicted if re.match(r"webarch-(alice|bob|carol-stats)-", i)]
    assert master.host.run(["getent", "passwd", "dave"]).returncode == 2


def test_apply_converges_through_the_master(master, commands):
    mark = len(master.events())
    run = Run(sh(master.host, master_command(commands, "*", "state.apply", "webarch")))
    run.check(changes=True)
    assert "webarch-dave-user (user.present)" in run.changed()
    wait_for_reactor_send(master, "webarch/notify/dave/ssh", mark)
    put_page(master.host, "www.dave.example")
    assert curl(master.host, "www.dave.example") == PAGES["www.dave.example"][1]
    assert curl(master.host, "shop.bob.example") == PAGES["shop.bob.example"][1]


def test_apply_again_changes_nothing(master, commands):
    Run(sh(master.host, master_command(commands, "*", "state.apply", "webarch"))).check(False)


def test_targeted_run_applies_alice_only(master, commands):
    targeted = next(
        c for c in of_kind(commands, "master") if "webarch_only" in c.line and c.argv[1] != "*"
    )
    run = Run(sh(master.host, targeted, target=master.minion_id))
    assert f"{master.minion_id}:" in run.text, run.tail()
    run.check(changes=False)
    ids = [state.id for state in run.states()]
    assert any(i.startswith("webarch-alice-") for i in ids)
    others = [i for i in ids if re.match(r"webarch-(bob|dave|carol-stats)-", i)]
    assert others == [], f"the targeted run applied other accounts' states: {others}"


def wait_for_reactor_send(master: SaltMaster, event: str, start_at: int) -> None:
    """The reactor had the minion run webarch_notify.send for ``event``."""
    master.wait_for_event(event, start_at=start_at, timeout=60)
    _tag, data = master.wait_for_event(
        f"salt/job/*/ret/{master.minion_id}",
        start_at=start_at,
        timeout=60,
        where=lambda d: d.get("fun") == "webarch_notify.send" and "dave" in str(d["fun_args"]),
    )
    assert data["retcode"] == 0, data
