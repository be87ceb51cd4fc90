"""Unit tests of the account model's pure logic (_utils/webarch_model.py and its parts)."""

from __future__ import annotations

import copy

import pytest
from unit.model_helpers import EMPTY_HOST, host, one_account, problems, site

# -- valid input -----------------------------------------------------------


def test_example_pillar_is_valid_and_normalised(model, example_pillar):
    result = model.build_model(example_pillar["webarch"], host(model))
    assert result["present"] == ["alice", "bob", "carol-stats"]
    alice = result["accounts"]["alice"]
    assert alice["home"] == "/home/alice"
    assert alice["uid"] == 2001 and alice["gid"] == 2001
    assert alice["sites"]["www"]["docroot"] == "/home/alice/sites/www/public"
    assert alice["sites"]["wiki"]["docroot"] == "/home/alice/sites/wiki"
    assert alice["sites"]["www"]["aliases"] == ["alice.example"]
    bob = result["accounts"]["bob"]
    assert bob["uid"] is None and bob["shell"] == "/bin/bash"
    assert bob["sites"]["shop"]["type"] == "php"
    assert result["registry"]["names"] == ["alice", "bob", "carol-stats"]


def test_defaults(model):
    result = model.build_model(one_account(), host(model))
    alice = result["accounts"]["alice"]
    assert alice == {
        **alice,
        "state": "present",
        "fullname": "alice",
        "email": None,
        "shell": "/bin/bash",
        "sites": {},
    }
    dirs = {d["id"]: (d["path"], d["user"], d["group"], d["mode"]) for d in alice["dirs"]}
    assert dirs["home"] == ("/home/alice", "root", "alice", "0750")
    assert dirs["logs"] == ("/home/alice/logs", "root", "alice", "0750")
    assert dirs["sites"] == ("/home/alice/sites", "alice", "www-data", "2750")
    assert set(dirs) == {"home", "sites", "logs", "tmp", "private", "ssh"}
    assert alice["dirs"][0]["id"] == "home"


@pytest.mark.parametrize("pillar", [None, {}, {"accounts": None}, {"accounts": {}}])
def test_empty_pillar_means_no_accounts(model, pillar):
    result = model.build_model(pillar, host(model))
    assert result["accounts"] == {} and result["present"] == []


def test_absent_account_is_not_present_and_skips_host_checks(model):
    pillar = {"accounts": {"olduser": {"state": "absent"}}}
    result = model.build_model(pillar, host(model, users={"olduser": 1500}))
    assert result["present"] == [] and result["absent"] == ["olduser"]


def test_managed_existing_user_is_fine_and_stays_registered(model):
    snapshot = dict(
        users={"alice": 2001, "gone": 2002, "kept": 2003},
        groups={"alice": 2001},
        managed={"alice", "gone", "kept"},
    )
    snapshot["users"].pop("gone")
    result = model.build_model(one_account(uid=2001), host(model, **snapshot))
    # "gone" no longer exists on the host: dropped; "kept" still exists: kept.
    assert result["registry"]["names"] == ["alice", "kept"]
    assert result["registry"]["lines"][1:] == ["alice", "kept"]


# -- every mistake at once -------------------------------------------------


def test_twenty_mistakes_are_all_reported_with_paths(model, twenty_mistakes):
    found = problems(model, twenty_mistakes["webarch"])
    expected_paths = [
        "webarch:hostname:",
        "webarch:admin_email:",
        "webarch:colour: unknown key",
        "webarch:accounts:Bob: username must match ^[a-z][a-z0-9-]{1,30}$",
        "webarch:accounts:root: username 'root' is reserved",
        "webarch:accounts:x: username must match",
        "webarch:accounts:carol:uid: must be between 1000 and 59999",
        "webarch:accounts:carol:gid: must be an integer",
        "webarch:accounts:carol:fullname: must not contain",
        "webarch:accounts:carol:email: 'carol@localhost' is not a valid email",
        "webarch:accounts:carol:shell: must be one of",
        "webarch:accounts:carol:state: must be one of present, absent",
        "webarch:accounts:carol:disk_quota: unknown key",
        "webarch:accounts:dave:sites:www:type: must be one of",
        "webarch:accounts:dave:sites:www:aliases: must be a list",
        "webarch:accounts:dave:sites:www:docroot: '../../etc' must stay inside",
        "webarch:accounts:dave:sites:Blog: site name must be",
        "webarch:accounts:dave:sites:Blog:servername: unknown key",
        "webarch:accounts:erin:uid: 3001 is also the uid of account 'dave'",
        "webarch:accounts:erin:sites:www:server_name: www.dave.example is already used",
    ]
    assert len(found) == 20, "\n".join(found)
    for prefix in expected_paths:
        assert sum(p.startswith(prefix) for p in found) == 1, (prefix, found)


def test_error_message_lists_every_problem(model, twenty_mistakes):
    with pytest.raises(model.ModelError) as info:
        model.build_model(twenty_mistakes["webarch"], host(model))
    text = str(info.value)
    assert text.startswith("webarch pillar is invalid (20 problems)")
    assert text.count("\n  - webarch:") == 20


# -- one rule at a time ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a", "username must match"),
        ("1abc", "username must match"),
        ("ab_c", "username must match"),
        ("abc.d", "username must match"),
        ("a" * 32, "username must match"),
        ("Alice", "username must match"),
        ("аlice", "username must match"),  # noqa: RUF001 (a Cyrillic a)
        ("alice\n", "username must match"),
        ("www-data", "is reserved"),
        ("postmaster", "is reserved"),
        ("mysql", "is reserved"),
    ],
)
def test_bad_usernames(model, name, message):
    found = problems(model, {"accounts": {name: {}}})
    assert any(p.startswith(f"webarch:accounts:{name}: ") and message in p for p in found), found


def test_username_at_max_length_is_fine(model):
    assert problems(model, {"accounts": {"a" * 31: {}}}) == []


def test_extra_reserved_usernames(model):
    found = problems(model, {"reserved_usernames": ["billing"], "accounts": {"billing": {}}})
    assert found == ["webarch:accounts:billing: username 'billing' is reserved"]


@pytest.mark.parametrize(
    ("snapshot", "message"),
    [
        ({"users": {"alice": 998}}, "is a system user on this host (uid 998)"),
        ({"users": {"alice": 1001}}, "clashes with existing user (uid 1001)"),
        ({"groups": {"alice": 120}}, "is a system group on this host (gid 120)"),
        ({"groups": {"alice": 1500}}, "group 'alice' already exists"),
    ],
)
def test_clash_with_host_users(model, snapshot, message):
    base = {"users": dict(EMPTY_HOST["users"]), "groups": dict(EMPTY_HOST["groups"])}
    for key, extra in snapshot.items():
        base[key].update(extra)
    found = problems(model, one_account(), **base)
    assert len(found) == 1 and found[0].startswith("webarch:accounts:alice: "), found
    assert message in found[0]


def test_pinned_ids_already_taken_on_host(model):
    found = problems(
        model,
        one_account(uid=1500, gid=1600),
        users={"root": 0, "someone": 1500},
        groups={"root": 0, "others": 1600},
    )
    assert found == [
        "webarch:accounts:alice:uid: 1500 is already used by 'someone' on this host",
        "webarch:accounts:alice:gid: 1600 is already used by 'others' on this host",
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (999, "must be between 1000 and 59999, not 999"),
        (60000, "must be between 1000 and 59999, not 60000"),
        (True, "must be an integer"),
        ("2001", "must be an integer"),
        (2001.0, "must be an integer"),
    ],
)
def test_numeric_limits(model, value, message):
    found = problems(model, one_account(uid=value))
    assert found == [f"webarch:accounts:alice:uid: {message}"] or (
        len(found) == 1 and message in found[0]
    ), found


def test_duplicate_gid_across_accounts(model):
    pillar = {"accounts": {"alice": {"gid": 2000}, "bob": {"gid": 2000}}}
    assert problems(model, pillar) == [
        "webarch:accounts:bob:gid: 2000 is also the gid of account 'alice'"
    ]


@pytest.mark.parametrize(
    "name",
    [
        "localhost",
        "WWW.example.org",
        "www.exämple.org",
        "www.xn--exmple-cua.org.",
        "-www.example.org",
        "www-.example.org",
        "www..example.org",
        "www.example.123",
        "under_score.example.org",
        "*.example.org",
        "www.example.org/evil",
        "www.example.org\nServerAlias evil.org",
        "www.example.org\n",
        "a" * 64 + ".example.org",
        ("a" * 60 + ".") * 5 + "org",
        "",
        42,
    ],
)
def test_bad_server_names(model, name):
    found = problems(model, site(server_name=name))
    assert len(found) == 1, found
    assert found[0].startswith("webarch:accounts:alice:sites:www:server_name: "), found


def test_punycode_name_is_fine(model):
    assert problems(model, site(server_name="www.xn--exmple-cua.org")) == []


def test_missing_server_name(model):
    found = problems(model, one_account(sites={"www": {"type": "static"}}))
    assert found == ["webarch:accounts:alice:sites:www:server_name: is required"]


def test_bad_alias_is_reported_with_its_index(model):
    found = problems(model, site(aliases=["ok.alice.example", "Bad.Example"]))
    assert found == ["webarch:accounts:alice:sites:www:aliases:1: 'Bad.Example' must be lower case"]


def test_host_names_unique_across_accounts_and_sites(model):
    pillar = {
        "accounts": {
            "alice": {
                "sites": {
                    "www": {
                        "server_name": "a.example.org",
                        "aliases": ["b.example.org"],
                    },
                    "two": {
                        "server_name": "c.example.org",
                        "aliases": ["c.example.org"],
                    },
                }
            },
            "bob": {
                "sites": {
                    "shop": {"server_name": "b.example.org"},
                    "blog": {
                        "server_name": "d.example.org",
                        "aliases": ["a.example.org"],
                    },
                }
            },
        }
    }
    found = problems(model, pillar)
    assert sorted(found) == sorted(
        [
            "webarch:accounts:alice:sites:two:aliases:0: repeats the server_name",
            "webarch:accounts:bob:sites:shop:server_name: "
            "b.example.org is already used by alice:sites:www",
            "webarch:accounts:bob:sites:blog:aliases:0: "
            "a.example.org is already used by alice:sites:www",
        ]
    )


@pytest.mark.parametrize(
    "email",
    [
        "alice",
        "alice@",
        "@example.org",
        "alice@example",
        "al ice@example.org",
        "alice@@example.org",
        "alice@example.org\nBcc: x@y.org",
        "a..b@example.org",
        "alice@EXAMPLE.org",
        "<alice@example.org>",
        "alice@example.org\n",
        7,
    ],
)
def test_bad_emails(model, email):
    found = problems(model, one_account(email=email))
    assert len(found) == 1 and found[0].startswith("webarch:accounts:alice:email: "), found


@pytest.mark.parametrize("email", ["alice@example.org", "a.b+tag@mail.example.co.uk"])
def test_good_emails(model, email):
    assert problems(model, one_account(email=email)) == []


@pytest.mark.parametrize(
    "docroot",
    [
        "../bob",
        "/etc",
        "public/../../x",
        ".ssh",
        "public/.git",
        "a//b/..",
        "a b",
        "public\n",
        "x" * 201,
    ],
)
def test_docroot_must_stay_inside_site(model, docroot):
    found = problems(model, site(docroot=docroot))
    assert len(found) == 1, found
    assert found[0].startswith("webarch:accounts:alice:sites:www:docroot: "), found


@pytest.mark.parametrize("docroot", ["public", "public/html", "web_root", "v2.0/public/"])
def test_good_docroots(model, docroot):
    result = model.build_model(site(docroot=docroot), host(model))
    path = result["accounts"]["alice"]["sites"]["www"]["docroot"]
    assert path == "/home/alice/sites/www/" + docroot.strip("/")


@pytest.mark.parametrize(
    ("pillar", "path"),
    [
        ({"acounts": {}}, "webarch:acounts"),
        (one_account(emial="a@b.org"), "webarch:accounts:alice:emial"),
        (site(alias=["x.example.org"]), "webarch:accounts:alice:sites:www:alias"),
    ],
)
def test_unknown_keys_are_errors(model, pillar, path):
    found = problems(model, pillar)
    assert found and found[0].startswith(f"{path}: unknown key (known keys: "), found


@pytest.mark.parametrize(
    ("pillar", "path", "message"),
    [
        ([], "webarch", "must be a mapping, not list"),
        ({"accounts": ["alice"]}, "webarch:accounts", "must be a mapping, not list"),
        ({"accounts": {"alice": "yes"}}, "webarch:accounts:alice", "must be a mapping"),
        (
            one_account(sites=["www"]),
            "webarch:accounts:alice:sites",
            "must be a mapping",
        ),
        (
            one_account(fullname=["A"]),
            "webarch:accounts:alice:fullname",
            "must be a string",
        ),
        (
            one_account(fullname="A\nB"),
            "webarch:accounts:alice:fullname",
            "must not contain",
        ),
        (
            one_account(fullname='A "B"'),
            "webarch:accounts:alice:fullname",
            "must not contain",
        ),
        (
            one_account(fullname="x" * 101),
            "webarch:accounts:alice:fullname",
            "at most 100",
        ),
        ({"reserved_usernames": "x"}, "webarch:reserved_usernames", "list of strings"),
        (one_account(state=None), "webarch:accounts:alice:state", "must be one of"),
    ],
)
def test_wrong_types(model, pillar, path, message):
    found = problems(model, pillar)
    assert len(found) == 1 and found[0].startswith(f"{path}: "), found
    assert message in found[0]


def test_input_is_not_modified(model, example_pillar):
    before = copy.deepcopy(example_pillar)
    model.build_model(example_pillar["webarch"], host(model))
    assert example_pillar == before


# -- SSH keys, chroot and archive paths ------------------------------------

ED25519 = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDD1nboLDXFcfzxm84N2c02Kr514qRlBnmAXRwfCBdev alice-laptop"
)
RSA_3072 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQC2lYVSJGXzdiGvcnsbmGW9CtKH0du5wzE9uy/u6M99Qo1r3THx6AMJMU10ZaRGYf8DHTKgxj/tLkvxqyWtHpkyEEceFJHfS1GEHIIRX44YGZzNjz9CpDruSh3h7fYLRe6imMqA51NavJ/VBApULALFsVkbaTw7cevrDyi9fq5cSCrElz0gUt8CQ7fImYcCxYdb22xSABGCR4c9DCq9bUnmhS4FkO8lRWfgbZrCk9llKKjQ5Z9UsJMhOrxa2DlJXlAi691K9hJ3vxrc6MWiWB/NwgKCMqpxAhmS9pagGpSRwewg1nTqGwBn6Hv6FEI9A6lDVi5qV1HTjh+mL8r5XUuBjLi5W9D7xRh2t8Yqc7pH6ALVOxLUgtjqopT1fXcMFbjdDvKjEIn1dlIG+WS1qvsJYmZD/gRPK1oTeaeQn5e8GhFbA9m5hrgDveAkXL522aWxklbHUDdIMEX6pNb64VtLizCVFCgM1wSIHvmujpyOEss8Kzk9TILO1Q1VGU89138= alice-old"  # noqa: E501
RSA_1024 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC8Q1q0ga8+e7YHeGDwtVxlx2/g233amjoeI6HiQozoreNmLsX8bqF5lYcIZu8GtBynPS4K1vc8qAFdldv2lD/XCXs9jGBcLEdsS+UC+gDEV63MaG2hh4i9EXZrw4sa0rxmCG7lrzG5GyY/PAn5iD8hemr7S/Oa3bCDxFkQPQNv8w== old"  # noqa: E501
ECDSA = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHo47o+Ymlx9cFtczfUKuaDZnvenzJYhQguz8CFjYMTPOuQILC9m1pFWgb0kYH34pTateIi3pWZuGSEhf9/8TvA= ec"  # noqa: E501


def test_good_ssh_keys_are_normalised(model):
    keys = [
        "  " + ED25519 + "  ",
        RSA_3072,
        ECDSA,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDD1nboLDXFcfzxm84N2c02Kr514qRlBnmAXRwfCBdev",
    ]
    keys[3] = keys[3].replace(
        "AAAAC3NzaC1lZDI1NTE5AAAAIDD1nboLDXFcfzxm84N2c02Kr514qRlBnmAXRwfCBdev",
        "AAAAC3NzaC1lZDI1NTE5AAAAIGfJrVhnfwn1iRr4b7tzWtq1ur/fDeN/LoqBWeHKF4ew",
    )
    result = model.build_model(one_account(ssh_keys=keys, ssh_password=True), host(model))
    ssh = result["accounts"]["alice"]["ssh"]
    assert ssh["keys"] == [ED25519, RSA_3072, ECDSA, keys[3]]
    assert ssh["password"] is True
    assert result["ssh_password_accounts"] == ["alice"]


def test_ssh_defaults(model):
    result = model.build_model(one_account(), host(model))
    assert result["accounts"]["alice"]["ssh"] == {
        "keys": [],
        "password": False,
        "authorized_keys": "/etc/ssh/authorized_keys/alice",
    }
    assert result["ssh_password_accounts"] == []


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("ssh-ed25519", "must be 'TYPE BASE64 [COMMENT]'"),
        ("ssh-dss AAAAB3NzaC1kc3M= x", "key type must be one of"),
        ('from="10.0.0.1" ' + ED25519, "must not carry options"),
        ('command="/bin/sh" ' + ED25519, "must not carry options"),
        ("ssh-ed25519 AAAAnot*base64 x", "not valid base64"),
        ("ssh-ed25519 AAAA x", "too short"),
        ("ssh-rsa " + ED25519.split()[1], "does not hold a ssh-rsa key"),
        ("ssh-ed25519 " + ED25519.split()[1][:-8] + " x", "not a whole ed25519 key"),
        (RSA_1024, "at least 2048 bits"),
        (ED25519 + "\nssh-ed25519 AAAA", "must be one line"),
        (ED25519 + " \x1b[31m", "comment must be printable ASCII"),
        (42, "must be a string"),
    ],
)
def test_bad_ssh_keys(model, key, message):
    found = problems(model, one_account(ssh_keys=[key]))
    assert len(found) == 1, found
    assert found[0].startswith("webarch:accounts:alice:ssh_keys:0: "), found
    assert message in found[0], found


def test_duplicate_ssh_key(model):
    found = problems(model, one_account(ssh_keys=[ED25519, ED25519.replace("laptop", "other")]))
    assert found == ["webarch:accounts:alice:ssh_keys:1: repeats an earlier key"]


@pytest.mark.parametrize(
    ("pillar", "expected"),
    [
        (one_account(ssh_keys=ED25519), "webarch:accounts:alice:ssh_keys: must be a list"),
        (one_account(ssh_password="yes"), "webarch:accounts:alice:ssh_password: must be true"),
    ],
)
def test_bad_ssh_settings(model, pillar, expected):
    found = problems(model, pillar)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_chroot_spec(model):
    result = model.build_model({"chroot_base": "/srv/jails", **one_account()}, host(model))
    chroot = result["accounts"]["alice"]["chroot"]
    assert chroot["path"] == "/srv/jails/alice"
    mounts = {m["id"]: (m["name"], m["device"], m["fstype"]) for m in chroot["mounts"]}
    assert mounts == {
        "usr": ("/srv/jails/alice/usr", "/usr", "none"),
        "home": ("/srv/jails/alice/home/alice", "/home/alice", "none"),
        "tmp": ("/srv/jails/alice/tmp", "/home/alice/tmp", "none"),
        "mysqld": ("/srv/jails/alice/run/mysqld", "/run/mysqld", "none"),
        "mail": ("/srv/jails/alice/run/webarch-mail", "/run/webarch-mail", "none"),
        "sendmail": ("/srv/jails/alice/usr/sbin/exim4", "/usr/bin/msmtp", "none"),
        "proc": ("/srv/jails/alice/proc", "proc", "proc"),
    }
    # Every mount but /proc is a bind that cannot carry setuid binaries or devices.
    for mount in chroot["mounts"]:
        assert {"nosuid", "nodev"} <= set(mount["opts"]), mount
    opts = {m["id"]: m["opts"] for m in chroot["mounts"]}
    assert {"ro", "nosuid", "nodev"} <= set(opts["usr"])
    assert "ro" not in opts["home"] and {"nosuid", "nodev"} <= set(opts["home"])
    assert "hidepid=invisible" in opts["proc"]
    assert result["archive_dir"] == "/var/backups/webarch"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"chroot_base": "/home/chroots"},
            "webarch:chroot_base: '/home/chroots' must not be inside /home",
        ),
        ({"chroot_base": "/home"}, "webarch:chroot_base: '/home' must not be inside /home"),
        ({"chroot_base": "chroots"}, "webarch:chroot_base: 'chroots' must be an absolute path"),
        (
            {"chroot_base": "/srv/../home"},
            "webarch:chroot_base: '/srv/../home' must be an absolute",
        ),
        ({"chroot_base": "/srv/jails/"}, "webarch:chroot_base: '/srv/jails/' must be an absolute"),
        ({"chroot_base": "/"}, "webarch:chroot_base: '/' must be an absolute"),
        ({"chroot_base": "/etc/x"}, "webarch:chroot_base: '/etc/x' must not be inside /etc"),
        ({"chroot_base": "/srv/a b"}, "webarch:chroot_base: '/srv/a b' must be an absolute"),
        (
            {"archive_dir": "/tmp/archive"},
            "webarch:archive_dir: '/tmp/archive' must not be inside /tmp",
        ),
        (
            {"archive_dir": "/chroots/archive"},
            "webarch:archive_dir: must not be inside chroot_base",
        ),
        (
            {"chroot_base": "/srv/a/b", "archive_dir": "/srv/a"},
            "webarch:chroot_base: must not be inside archive_dir",
        ),
        ({"archive_dir": 7}, "webarch:archive_dir: must be a string"),
    ],
)
def test_bad_server_paths(model, settings, expected):
    found = problems(model, {**settings, **one_account()})
    assert len(found) == 1 and found[0].startswith(expected), found


def test_remove_lists_only_absent_accounts_webarch_made(model):
    pillar = {"accounts": {"alice": {"state": "absent"}, "bob": {"state": "absent"}, "carol": {}}}
    snapshot = host(model, users={"root": 0, "alice": 2001, "bob": 2002}, managed={"alice"})
    result = model.build_model(pillar, snapshot)
    assert result["remove"] == ["alice"]
    assert result["absent"] == ["alice", "bob"]
