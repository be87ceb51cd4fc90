"""Command line: ``python -m testhost {build,start,stop,reset,reboot,list,shell,exec,...}``."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from . import config, image, system
from .host import SALT_CALL, Host, HostError
from .matomo import example_pillar, provide_matomo
from .system import CommandError

DEMO_HINTS = """\
Host {name} is running a real Debian with systemd; it keeps running after this
command exits.  The formula is mounted read-only at /srv/formula, the pillar is
/srv/pillar/webarch.sls (a copy of pillar.example).  Try:

  make demo-shell                  a root shell on the host; in there:
      salt-call --local webarch.accounts --out=yaml    the validated account model
      salt-call --local webarch.validate               check the pillar, list problems
      getent passwd alice bob carol-stats; ls -la /home /home/alice
      runuser -u alice -- touch /home/alice/x          refused: the home is root's
      cd /home/alice/sites/www/public
      echo '<?php echo posix_getpwuid(posix_geteuid())["name"], "\\n";' > me.php
      curl -k --resolve www.alice.example:443:127.0.0.1 https://www.alice.example/me.php
                                           PHP as alice, in her chroot (self-signed
                                           stand-in certificate: no ACME CA here)
      cat /home/alice/logs/apache-access.log           alice's own access log
  make demo-apply                  apply the formula again: 0 changes expected
  make demo-pillar PILLAR=FILE     install another pillar (YAML with a top key webarch:)
                                   e.g. PILLAR=test/data/pillar-20-mistakes.yaml, then
                                   make demo-apply to see every problem reported
  make demo-stop                   power the host off
"""


def _image_for(args: argparse.Namespace) -> Path:
    """Build or fetch the image of ``args.release`` and report where it is."""
    started = time.monotonic()
    rootfs = image.ensure_image(args.release, Path(args.formula))
    print(f"image {rootfs} ({time.monotonic() - started:.0f}s)", file=sys.stderr)
    return rootfs


def cmd_build(args: argparse.Namespace) -> int:
    """Build (or find cached) the image and print its path, build time and size."""
    started = time.monotonic()
    rootfs = image.ensure_image(args.release, Path(args.formula))
    info = image.describe(rootfs)
    print(rootfs)
    print(f"ensure_image: {time.monotonic() - started:.1f}s; size: {image.image_size(rootfs)}")
    if info:
        print(f"build timings (s): {info.get('timings')}")
        print(f"failed units at smoke boot: {info.get('failed_units') or 'none'}")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    """Start a detached host."""
    host = Host(args.name, _image_for(args), Path(args.formula))
    started = time.monotonic()
    host.start(keep_state=args.keep)
    print(
        f"{args.name} ready in {time.monotonic() - started:.1f}s (nspawn pid {host.nspawn_pid()})"
    )
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Power a host off."""
    Host.attach(args.name).stop()
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    """Power a host off and delete its work dir."""
    Host.attach(args.name).destroy()
    return 0


def _timed_action(action: Callable[[Host], None], name: str) -> int:
    """Run ``action`` on the attached host and print how long it took."""
    host = Host.attach(name)
    started = time.monotonic()
    action(host)
    print(f"{name} ready in {time.monotonic() - started:.1f}s")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    """Restart a host from the clean image."""
    return _timed_action(Host.reset, args.name)


def cmd_reboot(args: argparse.Namespace) -> int:
    """Restart a host keeping its changes."""
    return _timed_action(Host.reboot, args.name)


def cmd_list(args: argparse.Namespace) -> int:
    """List hosts with a work dir and their state."""
    for name in Host.names():
        host = Host.attach(name)
        pid = host.nspawn_pid()
        state = f"running (nspawn pid {pid})" if pid else "stopped"
        print(f"{name:20} {state:28} {host.image}")
    return 0


def _interactive(host: Host, cmd: Sequence[str]) -> int:
    """Run ``cmd`` in the host with this terminal; return its exit status."""
    env = system.sane_env({"TERM": os.environ.get("TERM", "xterm")})
    return subprocess.run(host.nsenter_command(cmd), env=env, check=False).returncode


def cmd_shell(args: argparse.Namespace) -> int:
    """Interactive root shell in the host."""
    return _interactive(Host.attach(args.name), ["bash", "-l"])


def cmd_exec(args: argparse.Namespace) -> int:
    """Run a command in the host."""
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise SystemExit("exec: no command given")
    return _interactive(Host.attach(args.name), cmd)


def cmd_pillar(args: argparse.Namespace) -> int:
    """Install a YAML file (top-level key ``webarch:``) as /srv/pillar/webarch.sls."""
    Host.attach(args.name).write_pillar_text(Path(args.file).read_text())
    return 0


def _apply(host: Host, sls: str) -> int:
    """state.apply SLS with human readable output; return salt-call's exit status."""
    cmd = [SALT_CALL, "--local", "--out=highstate", "--state-output=terse", "state.apply", sls]
    return _interactive(host, cmd)


def cmd_apply(args: argparse.Namespace) -> int:
    """Apply the formula (or one SLS) on the host."""
    return _apply(Host.attach(args.name), args.sls)


def cmd_demo(args: argparse.Namespace) -> int:
    """Fresh host, pillar.example as pillar, formula applied; leave it running."""
    formula = Path(args.formula)
    rootfs = _image_for(args)
    if args.name in Host.names():
        Host.attach(args.name).stop()
    host = Host(args.name, rootfs, formula)
    host.start()
    example = formula / "pillar.example"
    if example.is_file():
        # pillar.example expects Matomo's release on the minion: copied there
        # when this machine has it, else the demo runs without Matomo.
        text = example.read_text()
        if not provide_matomo(host):
            text = yaml.safe_dump(example_pillar(yaml.safe_load(text)))
        host.write_pillar_text(text)
    status = _apply(host, "webarch")
    print(DEMO_HINTS.format(name=args.name))
    return status


def _parser() -> argparse.ArgumentParser:
    """The argument parser of all subcommands."""
    parser = argparse.ArgumentParser(prog="testhost", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(
        name: str, func: Callable[[argparse.Namespace], int], helptext: str
    ) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=helptext, description=helptext)
        cmd.set_defaults(func=func)
        return cmd

    def add_image_opts(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--release", default="bookworm", choices=sorted(config.RELEASES))
        cmd.add_argument("--formula", default=str(config.DEFAULT_FORMULA_DIR), help="checkout")

    add_image_opts(add("build", cmd_build, "build or find the cached image"))
    start = add("start", cmd_start, "boot a detached host")
    start.add_argument("name")
    start.add_argument("--keep", action="store_true", help="keep changes of the previous boot")
    add_image_opts(start)
    demo = add("demo", cmd_demo, "fresh host with pillar.example applied")
    demo.add_argument("name")
    add_image_opts(demo)
    for name, func, helptext in (
        ("stop", cmd_stop, "power a host off"),
        ("reset", cmd_reset, "restart a host from the clean image"),
        ("reboot", cmd_reboot, "restart a host keeping its changes"),
        ("rm", cmd_rm, "power off and delete the host's work dir"),
        ("shell", cmd_shell, "interactive root shell"),
    ):
        add(name, func, helptext).add_argument("name")
    add("list", cmd_list, "list hosts")
    exe = add("exec", cmd_exec, "run a command: exec NAME -- CMD...")
    exe.add_argument("name")
    exe.add_argument("cmd", nargs=argparse.REMAINDER)
    pillar = add("pillar", cmd_pillar, "install FILE.yaml as /srv/pillar/webarch.sls")
    pillar.add_argument("name")
    pillar.add_argument("file")
    apply = add("apply", cmd_apply, "salt-call state.apply SLS (default webarch), human readable")
    apply.add_argument("name")
    apply.add_argument("sls", nargs="?", default="webarch")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if os.geteuid() != 0:
        raise SystemExit("testhost needs root (debootstrap, mounts, systemd-nspawn)")
    try:
        return args.func(args)
    except (HostError, CommandError) as error:
        print(f"testhost {args.command}: {error}", file=sys.stderr)
        return 1
