"""Unit tests of the mail and password-notification parts of the model and of
webarch_notify's pure helpers (no Salt, no host)."""

from __future__ import annotations

import email
import email.policy
import grp
import hashlib
import json
import os
import stat

import formula
import pytest
import webarch_paths as paths
from unit.model_helpers import host, one_account, problems


@pytest.fixture(scope="module")
def notify():
    """The webarch_notify execution module, loaded without Salt's loader."""
    return formula.load("_modules/webarch_notify.py")


def build(model, pillar):
    return model.build_model(pillar, host(model))


def test_defaults(model):
    built = build(model, {"hostname": "web1.coop.example", **one_account()})
    mail = built["accounts"]["alice"]["mail"]
    assert mail["sender"] == "alice@web1.coop.example"
    assert mail["rate_limit"] is None
    assert mail["log"] == "/home/alice/logs/mail.log"
    assert "allow_from_override off" in mail["msmtprc"]["lines"]
    assert f"socket {paths.MAIL_SOCKET}" in mail["msmtprc"]["lines"]
    assert built["mail"]["smarthost"] is None
    assert built["mail_accounts"]["senders"] == {"alice": "alice@web1.coop.example"}
    assert built["mail_accounts"]["limits"] == []
    # No email: nothing is generated or mailed.
    assert built["accounts"]["alice"]["notify"]["kinds"] == {}
    assert built["notify_accounts"] == []


def test_account_sender_limits_and_notifications(model):
    pillar = {
        "hostname": "web1.coop.example",
        "admin_email": "hostmaster@coop.example",
        "mail": {"smarthost": "mx.coop.example::587", "rate_limit": 100},
        "accounts": {
            "alice": {
                "email": "alice@alice.example",
                "ssh_password": True,
                "db_password": True,
                "resets": {"ssh": "2026-11-28", "mariadb": 3},
                "mail": {"sender": "web@alice.example", "rate_limit": 5},
            },
            "bob": {"email": "bob@bob.example"},
        },
    }
    built = build(model, pillar)
    alice = built["accounts"]["alice"]
    assert alice["mail"]["sender"] == "web@alice.example"
    assert alice["notify"]["kinds"] == {
        "ssh": {"token": "2026-11-28", "marker": "/home/alice/.notify_passwd"},
        "mariadb": {"token": "3", "marker": "/home/alice/.notify_mariadb"},
    }
    assert built["mail_accounts"]["limits"] == ["alice: 5", "bob: 100"]
    assert built["mail_accounts"]["lines"][1:] == ["alice /home/alice", "bob /home/bob"]
    assert built["notify"]["from"] == "hostmaster@coop.example"
    assert built["notify"]["ssh_host"] == "web1.coop.example"
    assert built["notify_accounts"] == ["alice"]


@pytest.mark.parametrize(
    ("pillar", "expected"),
    [
        ({"mail": {"smarthost": "mx.example.org:587"}}, "webarch:mail:smarthost: "),
        ({"mail": {"smarthost": "mx\nexample.org"}}, "webarch:mail:smarthost: "),
        ({"mail": {"smarthost": "mx.example.org::99999"}}, "webarch:mail:smarthost: "),
        ({"mail": {"rate_limit": 0}}, "webarch:mail:rate_limit: must be between"),
        ({"mail": {"relay": "x"}}, "webarch:mail:relay: unknown key"),
        ({"notify": {"from": "not an address"}}, "webarch:notify:from: "),
        (
            {"notify": {"subject_tag": "[x]\nBcc: victim@example.org"}},
            "webarch:notify:subject_tag:",
        ),
        ({"notify": {"from_name": 'Evil" <x@y>'}}, "webarch:notify:from_name:"),
        ({"notify": {"help_url": "javascript:alert(1)"}}, "webarch:notify:help_url:"),
        ({"notify": {"via": "carrier-pigeon"}}, "webarch:notify:via: must be one of"),
        ({"notify": {"signature": "a\x00b"}}, "webarch:notify:signature:"),
        (
            one_account(mail={"sender": "bob@bob.example\nBcc: x@y.example"}),
            "webarch:accounts:alice:mail:sender:",
        ),
        (one_account(mail={"rate_limit": "10"}), "webarch:accounts:alice:mail:rate_limit:"),
        (one_account(db_password=True), "webarch:accounts:alice:db_password: needs the account"),
        (
            one_account(email="a@alice.example", resets={"ssh": "next week"}),
            "webarch:accounts:alice:resets:ssh:",
        ),
        (one_account(resets={"ftp": "1"}), "webarch:accounts:alice:resets:ftp: unknown key"),
    ],
)
def test_bad_mail_settings(model, pillar, expected):
    found = problems(model, pillar)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_all_mail_problems_reported_at_once(model):
    pillar = {
        "mail": {"smarthost": "::", "rate_limit": -1},
        "notify": {"via": "x", "from": "y"},
        "accounts": {"alice": {"db_password": True, "mail": {"sender": "z"}}},
    }
    assert len(problems(model, pillar)) == 6


def test_chroot_gets_the_mail_socket_and_sendmail(model):
    mounts = {
        m["id"]: m for m in build(model, one_account())["accounts"]["alice"]["chroot"]["mounts"]
    }
    assert mounts["mail"]["device"] == paths.MAIL_GATE_DIR
    assert "ro" in mounts["mail"]["opts"] and "noexec" in mounts["mail"]["opts"]
    assert mounts["sendmail"]["device"] == "/usr/bin/msmtp"
    # The sendmail bind lands inside the /usr bind: that one must not share it with the host.
    assert "slave" in mounts["usr"]["opts"]


# --------------------------------------------------------------------------- smarthost login, TLS

RELAY_SECRET = "Relay-Secret:42^x"


def relay(**mail: object) -> dict:
    """A pillar with a smarthost and ``mail`` on top."""
    return {"hostname": "web1.coop.example", "mail": {"smarthost": "mx.coop.example::587", **mail}}


def test_a_smarthost_login_requires_tls_and_keeps_no_password(model):
    pillar = relay(smarthost_user="web1@coop.example", smarthost_password=RELAY_SECRET)
    mail = build(model, pillar)["mail"]
    assert mail["smarthost_auth"] == {"host": "mx.coop.example", "user": "web1@coop.example"}
    assert mail["smarthost_tls"] == "required"
    assert "REMOTE_SMTP_SMARTHOST_HOSTS_REQUIRE_TLS = *" in mail["exim_macros"]
    assert "REMOTE_SMTP_SMARTHOST_TLS_VERIFY_HOSTS = *" in mail["exim_macros"]
    assert "MAIN_FORCE_SENDER = yes" in mail["exim_macros"]
    assert mail["passwd_client"] == {"path": "/etc/exim4/passwd.client", "group": "Debian-exim"}
    assert mail["exim_main_include"]["lines"][-1] == f".include {paths.EXIM_MACROS}"
    addition = "\n".join(mail["exim_smarthost_addition"]["lines"])
    assert "hosts_require_auth = <; ${if exists{CONFDIR/passwd.client}" in addition
    # The model (and so the SLS, its state arguments, Salt's caches) never has it.
    assert RELAY_SECRET not in json.dumps(build(model, pillar))


@pytest.mark.parametrize(
    ("mail", "tls", "macros"),
    [
        ({}, "opportunistic", []),
        ({"smarthost_tls": "required"}, "required", ["*", "*"]),
        ({"smarthost_tls": "unverified"}, "unverified", ["*", ""]),
        ({"smarthost_user": "u", "smarthost_password": "p", "smarthost_tls": "unverified"},
         "unverified", ["*", ""]),
    ],
)  # fmt: skip
def test_tls_towards_the_smarthost(model, mail, tls, macros):
    built = build(model, relay(**mail))["mail"]
    assert built["smarthost_tls"] == tls
    found = [
        line.split("=", 1)[1].strip()
        for line in built["exim_macros"]
        if line.startswith("REMOTE_SMTP_SMARTHOST_")
    ]
    assert found == macros


def test_no_smarthost_no_tls_setting(model):
    mail = build(model, {})["mail"]
    assert mail["smarthost_tls"] is None and mail["smarthost_auth"] is None
    assert not [line for line in mail["exim_macros"] if "SMARTHOST" in line]


@pytest.mark.parametrize(
    ("mail", "expected"),
    [
        ({"smarthost_user": "u"}, "webarch:mail:smarthost_password: must be given with"),
        ({"smarthost_password": RELAY_SECRET}, "webarch:mail:smarthost_user: must be given"),
        ({"smarthost_user": "u:v", "smarthost_password": "p"}, "webarch:mail:smarthost_user: "),
        ({"smarthost_user": "a b", "smarthost_password": "p"}, "webarch:mail:smarthost_user: "),
        ({"smarthost_user": "u", "smarthost_password": 12345678},
         "webarch:mail:smarthost_password: must be a string, not int (quote it in YAML)"),
        ({"smarthost_user": "u", "smarthost_password": RELAY_SECRET + " x"},
         "webarch:mail:smarthost_password: must be 1-256 printable ASCII"),
        ({"smarthost_user": "u", "smarthost_password": RELAY_SECRET + "\n"},
         "webarch:mail:smarthost_password: must be 1-256 printable ASCII"),
        ({"smarthost_user": "u", "smarthost_password": "p", "smarthost_tls": "opportunistic"},
         "webarch:mail:smarthost_tls: opportunistic cannot go with smarthost_user"),
        ({"smarthost_tls": "always"}, "webarch:mail:smarthost_tls: must be one of required, "),
        ({"smarthost": "[2001:db8::1]::587", "smarthost_user": "u", "smarthost_password": "p"},
         "webarch:mail:smarthost_user: needs a smarthost named by host name or IPv4"),
    ],
)  # fmt: skip
def test_bad_smarthost_login(model, mail, expected):
    found = problems(model, relay(**mail))
    assert len(found) == 1 and found[0].startswith(expected), found
    assert RELAY_SECRET not in "".join(found)


def test_a_login_or_tls_without_a_smarthost(model):
    pillar = {
        "mail": {"smarthost_user": "u", "smarthost_password": "p", "smarthost_tls": "required"}
    }
    assert sorted(problems(model, pillar)) == [
        "webarch:mail:smarthost_tls: needs webarch:mail:smarthost",
        "webarch:mail:smarthost_user: needs webarch:mail:smarthost",
    ]
    # A bad smarthost is one problem, not one more for its login.
    bad = {"mail": {"smarthost": "mx:25", "smarthost_user": "u", "smarthost_password": "p"}}
    assert [p.split(":")[2] for p in problems(model, bad)] == ["smarthost"]


@pytest.fixture
def smarthost_state(tmp_path, monkeypatch):
    """webarch_smarthost over a fake pillar.get; the file in tmp_path, owned by us."""
    from saltfactories.utils.loader import LoaderModuleMock

    module = formula.load("_states/webarch_smarthost.py")
    monkeypatch.setattr(module, "_OWNER", os.getuid())
    pillar = {"webarch:mail:smarthost_password": RELAY_SECRET}
    opts = {"test": False}

    def pillar_get(key, default=None, unmask=False):
        assert unmask, "Salt 3008 masks pillar values unless asked"
        return pillar.get(key, default)

    group = grp.getgrgid(os.getgid()).gr_name
    with LoaderModuleMock({module: {"__salt__": {"pillar.get": pillar_get}, "__opts__": opts}}):

        def login(group: str = group, **kw):
            return module.login(str(tmp_path / "passwd.client"), group=group, **kw)

        yield login, tmp_path / "passwd.client", pillar, opts


def test_the_login_state_writes_the_password_and_never_shows_it(smarthost_state):
    login, path, pillar, opts = smarthost_state
    opts["test"] = True
    ret = login(host="mx.coop.example", user="web1@coop.example")
    assert ret["result"] is None and not path.exists()
    opts["test"] = False
    ret = login(host="mx.coop.example", user="web1@coop.example")
    assert ret["result"] is True
    assert ret["changes"] == {
        "login": "web1@coop.example at mx.coop.example (password not shown)",
        "mode": f"root:{grp.getgrgid(os.getgid()).gr_name} 0640",
    }
    lines = path.read_text().splitlines()
    assert lines[-1] == f"mx.coop.example:web1@coop.example:{RELAY_SECRET}"
    assert lines[0].startswith("# Managed by Salt (webarch)")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    # Nothing to do the second time; a new password is a change, never shown.
    assert login(host="mx.coop.example", user="web1@coop.example")["changes"] == {}
    pillar["webarch:mail:smarthost_password"] = "another-one"
    ret = login(host="mx.coop.example", user="web1@coop.example")
    assert list(ret["changes"]) == ["login"] and path.read_text().endswith(":another-one\n")
    path.chmod(0o644)
    assert list(login(host="mx.coop.example", user="web1@coop.example")["changes"]) == ["mode"]
    # No login in the pillar: the file keeps its header only.
    ret = login()
    assert ret["changes"] == {"login": "none"}
    assert "another-one" not in path.read_text() and path.read_text().startswith("# Managed")
    for shown in (ret, login(host="mx.coop.example", user="u")):
        assert RELAY_SECRET not in json.dumps(shown) and "another-one" not in json.dumps(shown)


def test_the_login_state_without_exim_s_group(smarthost_state):
    login, path, _, opts = smarthost_state
    kw = {"host": "mx.coop.example", "user": "u", "group": "no-such-group-here"}
    ret = login(**kw)
    assert ret["result"] is False and "group no-such-group-here does not exist" in ret["comment"]
    opts["test"] = True  # a first run in test mode, before exim4 is installed
    assert login(**kw)["result"] is None and not path.exists()


def test_the_login_state_fails_on_a_bad_password_without_showing_it(smarthost_state):
    login, path, pillar, _ = smarthost_state
    pillar["webarch:mail:smarthost_password"] = RELAY_SECRET + " with spaces"
    ret = login(host="mx.coop.example", user="u")
    assert ret["result"] is False and not path.exists()
    assert ret["comment"].startswith("webarch:mail:smarthost_password: must be 1-256 printable")
    assert RELAY_SECRET not in ret["comment"]
    del pillar["webarch:mail:smarthost_password"]
    ret = login(host="mx.coop.example", user="u")
    assert ret["result"] is False and "must be given" in ret["comment"]


# --------------------------------------------------------------------------- webarch_notify


def test_passwords_are_random_and_unambiguous(notify):
    seen = {notify._generate_password() for _ in range(200)}
    assert len(seen) == 200
    for password in seen:
        assert len(password) == 20
        assert not set(password) & set("0O1lI")


def test_mysql_native_hash_matches_mariadb(notify):
    # SELECT PASSWORD('secret') on MariaDB.
    assert notify._mysql_native_hash("secret") == "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"
    inner = hashlib.sha1(b"x").digest()
    assert notify._mysql_native_hash("x") == "*" + hashlib.sha1(inner).hexdigest().upper()


def test_mask_email(notify):
    assert notify._mask_email("alice@alice.example") == "a***@alice.example"


@pytest.mark.parametrize(
    ("entry", "token", "marker", "spooled", "reason"),
    [
        (None, "", False, False, "first password"),
        ({"state": "sent", "token": ""}, "", True, False, ""),
        ({"state": "sent", "token": ""}, "2026-11-28", True, False, "reset asked for in pillar"),
        ({"state": "sent", "token": "a"}, "a", False, False, "reset asked for (marker deleted)"),
        # Pending: the marker is not written yet; the spooled secret waits for the MTA.
        ({"state": "pending", "token": ""}, "", False, True, ""),
        (
            {"state": "pending", "token": ""},
            "",
            False,
            False,
            "pending password lost from the spool",
        ),
    ],
)
def test_reason_to_issue(notify, entry, token, marker, spooled, reason):
    assert notify._reason_to_issue(entry, token, marker, spooled) == reason


def test_compose_takes_everything_from_settings(notify):
    settings = {
        "from": "hostmaster@coop.example",
        "from_name": "Coop Hosting",
        "reply_to": "support@coop.example",
        "subject_tag": "[Coop]",
        "signature": "Coop Hosting",
        "ssh_host": "web1.coop.example",
        "help_url": "https://coop.example/help/",
    }
    account = {"name": "alice", "fullname": "Alíce Fernández", "email": "alice@alice.example"}
    msg = notify._compose(account, "ssh", "S3cretPassw0rdXyzAbc", settings, "web1.coop.example", 0)
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "[Coop] Your new SSH and SFTP password on web1.coop.example"
    assert parsed["From"] == "Coop Hosting <hostmaster@coop.example>"
    assert parsed["To"].addresses[0].addr_spec == "alice@alice.example"
    assert parsed["To"].addresses[0].display_name == "Alíce Fernández"
    assert parsed["Reply-To"] == "support@coop.example"
    assert parsed["Auto-Submitted"] == "auto-generated"
    body = parsed.get_content()
    assert "password: S3cretPassw0rdXyzAbc" in body
    assert "https://coop.example/help/" in body and body.rstrip().endswith("Coop Hosting")
    db = notify._compose(account, "mariadb", "x" * 20, settings, "web1.coop.example", 0)
    assert "MariaDB" in db["Subject"] and "need no password" in db.get_content()


def test_a_run_limited_to_some_accounts(model):
    pillar = {
        "accounts": {
            "alice": {"email": "a@alice.example", "ssh_password": True},
            "bob": {"email": "b@bob.example", "ssh_password": True},
            "carol": {"state": "absent"},
        }
    }
    built = model.build_model(pillar, host(model, managed=["carol"]), 12, ["bob"])
    assert built["present"] == ["bob"] and built["only"] == ["bob"]
    assert built["all_present"] == ["alice", "bob"]
    assert built["notify_accounts"] == ["bob"] and built["remove"] == []
    # Server-wide files still list everyone.
    assert built["registry"]["names"] == ["alice", "bob"]
    assert built["mail_accounts"]["lines"][1:] == ["alice /home/alice", "bob /home/bob"]
    # Such a run checks the server-wide services only when a state they watch changed.
    assert built["service_onchanges"] == ["onchanges"]
    full = model.build_model(pillar, host(model, managed=["carol"]), 12)
    assert full["present"] == ["alice", "bob"] and full["only"] is None
    assert full["service_onchanges"] == []
    assert full["remove"] == ["carol"]
    with pytest.raises(model.ModelError) as raised:
        model.build_model(pillar, host(model), 12, ["dave", 3])
    assert raised.value.problems == ["webarch_only: must be a list of account names"]
    with pytest.raises(model.ModelError) as raised:
        model.build_model(pillar, host(model), 12, "dave")
    assert raised.value.problems == ["webarch_only: 'dave' is not an account in the pillar"]


@pytest.mark.parametrize(
    ("release", "line"), [(12, "QUEUERUNNER='queueonly'"), (13, "EXIMSERVICE='-q30m'")]
)
def test_exim_runs_without_an_smtp_listener(model, release, line):
    built = model.build_model(one_account(), host(model), release)
    assert built["mail"]["daemon"]["line"] == line


def test_sysv_ipc_is_off_unless_asked_for(model):
    assert build(model, {})["sysctls"] == {"kernel.shmall": 0, "kernel.msgmni": 0}
    assert build(model, {"sysv_ipc": True})["sysctls"] == {}
    assert problems(model, {"sysv_ipc": "no"})[0].startswith("webarch:sysv_ipc: must be true")


def test_the_spool_of_a_removed_account_is_where_notify_keeps_it(model, notify):
    built = model.build_model({"accounts": {"alice": {"state": "absent"}}}, host(model))
    spool = built["accounts"]["alice"]["notify"]["spool"]
    assert spool == [notify._spool_path("alice", kind) for kind in ("ssh", "mariadb", "matomo")]
