"""Brute-force bans (_utils/webarch_fail2ban.py): the pillar, the jail file, the filters.

The filters' regexes are run here as fail2ban runs them (its ``<ADDR>``, the
date cut out of an Apache line, sshd's journal lines as ``HOST IDENT[PID]:
MESSAGE``) against real lines from a test host and crafted ones: a request,
user agent or SSH user name holding another address never yields it.  The
e2e test (test_fail2ban.py) runs fail2ban-regex itself on the host.
"""

from __future__ import annotations

import configparser
import re

import pytest
import webarch_fail2ban as f2b
from conftest import REPO
from unit.model_helpers import problems

FILTER_DIR = REPO / "webarch" / "files" / "fail2ban" / "filter.d"
APACHE_GLOBAL = REPO / "webarch" / "files" / "templates" / "apache-global.conf.jinja"

#: fail2ban's <ADDR> (filter.py), an IPv4 or IPv6 address.
ADDR = (
    r"(?:(?:::f{4,6}:)?(?P<ip4>(?:\d{1,3}\.){3}\d{1,3})"
    r"|\[?(?P<ip6>(?:[0-9a-fA-F]{1,4}::?|::){1,7}(?:[0-9a-fA-F]{1,4}|(?<=:):))\]?)"
)
DATE = "05/Dec/2026:12:17:14 +0000"
DATE_RE = r"\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}"


def build(model, fail2ban: object) -> dict:
    return model.build_model({"fail2ban": fail2ban}, model.HostUsers({}, {}, frozenset()), 12)


def read_filter(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser()
    parser.read(FILTER_DIR / f"{name}.conf")
    return parser["Definition"]


def matcher(name: str):
    """The address a line gives as fail2ban would match it with filter ``name``, or None."""
    definition = read_filter(name)
    failregex = re.compile(definition["failregex"].replace("<ADDR>", ADDR))
    dated = "datepattern" in definition

    def address(line: str) -> str | None:
        if dated:  # fail2ban cuts the first date out before it matches
            assert definition["datepattern"] == "%d/%b/%Y:%H:%M:%S %z"
            line = re.sub(DATE_RE, "", line, count=1)
        found = failregex.search(line)
        return (found["ip4"] or found["ip6"]) if found else None

    return address


# ------------------------------------------------------------------ the pillar


def test_defaults_four_jails_on(model):
    built = build(model, None)["fail2ban"]
    assert built["enabled"] is True
    assert (built["maxretry"], built["findtime"], built["bantime"]) == (6, 600, 3600)
    assert [j["name"] for j in built["jails"]] == ["sshd", "basic_auth", "wordpress", "matomo"]
    assert all(j["enabled"] and j["maxretry"] == 6 for j in built["jails"])
    assert built["logs"] == [
        "/var/log/apache2/webarch-ban-basic-auth.log",
        "/var/log/apache2/webarch-ban-wordpress.log",
        "/var/log/apache2/webarch-ban-matomo.log",
    ]


def test_a_jails_own_settings_override_the_servers(model):
    built = build(
        model,
        {
            "bantime": 60,
            "findtime": 300,
            "jails": {"wordpress": {"maxretry": 3, "bantime": 86400}, "matomo": {"enabled": False}},
        },
    )["fail2ban"]
    jails = {j["name"]: j for j in built["jails"]}
    assert (jails["wordpress"]["maxretry"], jails["wordpress"]["bantime"]) == (3, 86400)
    assert (jails["wordpress"]["findtime"], jails["sshd"]["bantime"]) == (300, 60)
    assert jails["matomo"]["enabled"] is False
    text = built["text"]
    assert "[webarch-matomo]\nenabled = false\n" in text
    assert "[webarch-wordpress]\nenabled = true\n" in text


def test_the_allow_list_is_normalised(model):
    built = build(model, {"ignoreip": ["192.0.2.10", "2001:db8::/32", "192.0.2.10/32"]})
    assert built["fail2ban"]["ignoreip"] == ["192.0.2.10", "2001:db8::/32"]
    assert "ignoreip = 127.0.0.1/8 ::1 192.0.2.10 2001:db8::/32\n" in built["fail2ban"]["text"]


def test_mistakes_are_named_by_path(model):
    found = problems(
        model,
        {
            "fail2ban": {
                "enabled": "yes",
                "maxretry": 0,
                "bantime": "1h",
                "ignoreip": ["10.0.0.5/24", "example.org", 3],
                "jails": {"ssh": {}, "wordpress": {"findtime": 5, "ports": [22]}},
                "backend": "auto",
            }
        },
    )
    expected = [
        "webarch:fail2ban:enabled: must be true or false, not 'yes'",
        "webarch:fail2ban:maxretry: must be between 1 and 1000, not 0",
        "webarch:fail2ban:ignoreip:2: must be an IP address, not 3",
        "webarch:fail2ban:jails:wordpress:findtime: must be between 10 and 604800, not 5",
    ]
    for problem in expected:
        assert problem in found, found
    prefixes = [
        "webarch:fail2ban:bantime: ",
        "webarch:fail2ban:ignoreip:0: '10.0.0.5/24' is not an IP network",
        "webarch:fail2ban:ignoreip:1: 'example.org' is not an IP network",
        "webarch:fail2ban:jails:ssh: unknown key",
        "webarch:fail2ban:jails:wordpress:ports: unknown key",
        "webarch:fail2ban:backend: unknown key",
    ]
    for prefix in prefixes:
        assert any(p.startswith(prefix) for p in found), (prefix, found)


def test_the_jail_file(model):
    text = build(model, {"bantime": 20})["fail2ban"]["text"]
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    # Debian's own sshd jail reads /var/log/auth.log, which Debian 12 does not write.
    assert parser["sshd"]["enabled"] == "false"
    assert "DEFAULT" not in text  # an admin's own jails keep their defaults
    sshd = parser["webarch-sshd"]
    assert (sshd["backend"], sshd["port"], sshd["bantime"]) == ("systemd", "22", "20")
    assert "logpath" not in sshd
    for name in ("basic-auth", "wordpress", "matomo"):
        jail = parser[f"webarch-{name}"]
        assert jail["filter"] == f"webarch-{name}"
        assert jail["logpath"] == f"/var/log/apache2/webarch-ban-{name}.log"
        assert jail["port"] == "80,443"
    for section in parser.sections():
        if section != "sshd":
            # fail2ban's own nftables table (inet f2b-table), not the formula's.
            assert parser[section]["banaction"] == "nftables-multiport"
            assert (FILTER_DIR / f"{parser[section]['filter']}.conf").is_file()


# ------------------------------------------------------------------ Apache's ban logs


def test_apache_writes_the_logs_the_jails_read_address_first():
    text = APACHE_GLOBAL.read_text()
    assert 'LogFormat "%a %t %v %>s \\"%r\\"" webarch_ban\n' in text
    for log in f2b.fail2ban({}, f2b.check.Problems())["logs"]:
        assert re.search(rf"^CustomLog {re.escape(log)} webarch_ban \"expr=", text, re.M), log
    # Only what Apache itself decides: status, method, path, whether credentials came.
    assert "-eq 401 && -n req_novary('Authorization')" in text
    assert "-eq 403 && unescape(%{QUERY_STRING}) =~ /(?:^|&)module=Login(?:&|$)/" in text


# ------------------------------------------------------------------ the filters


@pytest.mark.parametrize("name", ["webarch-basic-auth", "webarch-wordpress", "webarch-matomo"])
def test_apache_filters_take_the_first_field_only(name):
    address = matcher(name)
    # Real lines, as Apache wrote them on a test host.
    assert address(f'10.251.0.2 [{DATE}] bob.example 401 "GET / HTTP/2.0"') == "10.251.0.2"
    assert address(f'2001:db8::5 [{DATE}] x.example 200 "POST /xmlrpc.php HTTP/2.0"') == (
        "2001:db8::5"
    )
    # Crafted: another address (and a date) in the request; it is never taken.
    crafted = [
        f'10.251.0.2 [{DATE}] w.example 200 "POST /wp-login.php?192.0.2.7 HTTP/1.1"',
        f'10.251.0.2 [{DATE}] w.example 200 "POST /192.0.2.7 [{DATE}] 192.0.2.7 HTTP/1.1"',
        f'10.251.0.2 [{DATE}] w.example 200 "GET /\\" 192.0.2.7 [{DATE}] \\"x HTTP/1.1"',
    ]
    for line in crafted:
        assert address(line) == "10.251.0.2", line
    # Lines of another format (an account's access log: the vhost first) give nothing.
    assert address(f'w.example 192.0.2.7 - - [{DATE}] "POST /wp-login.php HTTP/1.1" 200') is None
    assert address(f'192.0.2.7 - - [{DATE}] "POST /wp-login.php HTTP/1.1" 200 5 "-" "x"') is None


def test_the_sshd_filter_takes_the_address_sshd_writes_last():
    address = matcher("webarch-sshd")
    prefix = "wa-fail2ban sshd[2921]: "
    real = prefix + "Failed password for bob from 10.251.0.2 port 56354 ssh2"
    assert address(real) == "10.251.0.2"
    assert address(prefix + "Failed password for invalid user x from 2001:db8::7 port 4 ssh2") == (
        "2001:db8::7"
    )
    # Debian 13's per-connection process.
    assert address("h sshd-session[9]: Failed password for bob from 10.0.0.9 port 2 ssh2") == (
        "10.0.0.9"
    )
    # A user name that writes another address: sshd's own comes last, at the end.
    crafted = "Failed password for invalid user bob from 192.0.2.7 port 22 ssh2"
    assert address(prefix + crafted + " from 10.251.0.2 port 5 ssh2") == "10.251.0.2"
    assert address(prefix + crafted + " [preauth]") is None
    # Other lines of a failed login are not counted again (one per password tried).
    others = [
        "error: maximum authentication attempts exceeded for bob from 10.251.0.2 port 4 ssh2 "
        "[preauth]",
        "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= "
        "rhost=10.251.0.2  user=bob",
        'Connection from 10.251.0.2 port 56354 on 10.251.0.1 port 22 rdomain ""',
        "Accepted password for bob from 10.251.0.2 port 56354 ssh2",
    ]
    for line in others:
        assert address(prefix + line) is None, line
    # Only root's sshd of ssh.service, as journald records it (no client sets these fields).
    match = read_filter("webarch-sshd")["journalmatch"]
    for term in match.split(" + "):
        assert {"_SYSTEMD_UNIT=ssh.service", "_UID=0"} <= set(term.split()), term
