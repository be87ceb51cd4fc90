"""Unit tests of the web side of the account model (_utils/webarch_web.py, webarch_php.py).

The PHP-FPM pool settings of an account, a site's switches, headers,
redirects and basic auth, the server's ACME settings and the derived data the
Apache, PHP and log states render from.
"""

from __future__ import annotations

from types import ModuleType

import pytest
import webarch_check
import webarch_paths as paths
import webarch_php
import webarch_web
from hypothesis import given, settings
from hypothesis import strategies as st
from unit.model_helpers import host, one_account, problems, site

PHP = "webarch:accounts:alice:php"
SITE = "webarch:accounts:alice:sites:www"
#: A well-formed bcrypt hash (htpasswd -nB): $2y$, cost, 53 characters.
HASH = "$2y$05$" + ("./ABCxyz0189" * 5)[:53]


def build(model: ModuleType, pillar: object, release: int = 12) -> dict:
    """The model of a pillar that must be valid."""
    return model.build_model(pillar, host(model), release)


def php(**settings: object) -> dict:
    """A pillar with account alice whose ``php:`` block holds ``settings``."""
    return one_account(php=settings)


def only(found: list[str], path: str, message: str) -> None:
    """Assert ``found`` is the one problem at ``path`` whose message holds ``message``."""
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}: "), found
    assert message in found[0], found


# -- the php: block ----------------------------------------------------------


def test_php_defaults_when_absent(model):
    result = build(model, one_account())["accounts"]["alice"]["php"]
    assert result == {
        "pm": "ondemand",
        "max_children": 2,
        "process_idle_timeout": 10,
        "memory_limit": "256M",
        "upload_max_filesize": "32M",
        "post_max_size": "32M",
        "max_execution_time": 60,
        "request_terminate_timeout": 300,
        "disable_functions": list(webarch_php.PHP_DEFAULTS["disable_functions"]),
        "open_basedir": [],
        "admin_values": {},
        "admin_flags": {},
    }
    assert "exec" in result["disable_functions"] and "proc_open" in result["disable_functions"]


def test_php_null_block_means_defaults(model):
    assert build(model, one_account(php=None))["accounts"]["alice"]["php"]["pm"] == "ondemand"


def test_php_settings_are_taken(model):
    settings = {
        "pm": "static",
        "max_children": 64,
        "process_idle_timeout": 3600,
        "memory_limit": "4G",
        "upload_max_filesize": "2G",
        "post_max_size": "2048M",
        "max_execution_time": 3600,
        "request_terminate_timeout": 3600,
        "disable_functions": ["exec", "exec", "mail"],
    }
    result = build(model, php(**settings))["accounts"]["alice"]["php"]
    assert result == {**result, **settings, "disable_functions": ["exec", "mail"]}


@pytest.mark.parametrize("pm", ["ondemand", "dynamic", "static"])
def test_php_pm_choices(model, pm):
    assert build(model, php(pm=pm))["accounts"]["alice"]["php"]["pm"] == pm


@pytest.mark.parametrize("pm", ["Static", "", None, 1, ["static"]])
def test_php_bad_pm(model, pm):
    only(problems(model, php(pm=pm)), f"{PHP}:pm", "must be one of ondemand, dynamic, static")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_children", 0, "must be between 1 and 64, not 0"),
        ("max_children", 65, "must be between 1 and 64, not 65"),
        ("max_children", True, "must be an integer, not True"),
        ("max_children", "4", "must be an integer, not '4'"),
        ("max_children", 4.0, "must be an integer, not 4.0"),
        ("process_idle_timeout", 0, "must be between 1 and 3600, not 0"),
        ("max_execution_time", 3601, "must be between 1 and 3600, not 3601"),
        ("request_terminate_timeout", -1, "must be between 0 and 3600, not -1"),
    ],
)
def test_php_bad_integers(model, key, value, message):
    only(problems(model, php(**{key: value})), f"{PHP}:{key}", message)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("memory_limit", "16M"),
        ("memory_limit", "16384K"),
        ("memory_limit", "1G"),
        ("memory_limit", "4G"),
        ("memory_limit", "4096M"),
        ("upload_max_filesize", "1M"),
        ("upload_max_filesize", "1024K"),
    ],
)
def test_php_good_sizes(model, key, value):
    assert build(model, php(**{key: value}))["accounts"]["alice"]["php"][key] == value


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("memory_limit", "15M", "must be between 16M and 4G, not 15M"),
        ("memory_limit", "4097M", "must be between 16M and 4G, not 4097M"),
        ("memory_limit", "5G", "must be between 16M and 4G, not 5G"),
        ("memory_limit", "256", "must be a size like 64M or 1G, not '256'"),
        ("memory_limit", "256MB", "must be a size like 64M or 1G, not '256MB'"),
        ("memory_limit", "0M", "must be a size like 64M or 1G, not '0M'"),
        ("memory_limit", "256m", "must be a size like 64M or 1G"),
        ("memory_limit", " 256M", "must be a size like 64M or 1G"),
        ("memory_limit", "256M\n", "must be a size like 64M or 1G"),
        ("memory_limit", "-1", "must be a size like 64M or 1G"),
        ("memory_limit", 256, "must be a size like 64M or 1G, not 256"),
        ("memory_limit", "", "must be a size like 64M or 1G, not ''"),
        ("upload_max_filesize", "1023K", "must be between 1M and 2G, not 1023K"),
        ("upload_max_filesize", "3G", "must be between 1M and 2G, not 3G"),
        ("post_max_size", "2049M", "must be between 1M and 2G, not 2049M"),
    ],
)
def test_php_bad_sizes(model, key, value, message):
    pillar = php(**{key: value})
    if key == "upload_max_filesize":  # keep post_max_size out of the way
        pillar = php(**{key: value, "post_max_size": "2G"})
    only(problems(model, pillar), f"{PHP}:{key}", message)


def test_php_post_max_size_below_upload_is_refused(model):
    found = problems(model, php(upload_max_filesize="64M", post_max_size="32M"))
    only(found, f"{PHP}:post_max_size", "must be at least upload_max_filesize (64M)")


def test_php_post_max_size_equal_to_upload_in_other_units_is_fine(model):
    result = build(model, php(upload_max_filesize="1G", post_max_size="1024M"))
    assert result["accounts"]["alice"]["php"]["post_max_size"] == "1024M"


def test_php_terminate_timeout_below_execution_time_is_refused(model):
    found = problems(model, php(max_execution_time=120, request_terminate_timeout=60))
    only(
        found,
        f"{PHP}:request_terminate_timeout",
        "must be 0 (off) or at least max_execution_time (120)",
    )


@pytest.mark.parametrize("timeout", [0, 120, 3600])
def test_php_terminate_timeout_zero_or_at_least_execution_time(model, timeout):
    result = build(model, php(max_execution_time=120, request_terminate_timeout=timeout))
    assert result["accounts"]["alice"]["php"]["request_terminate_timeout"] == timeout


def test_php_empty_disable_functions_disables_nothing(model):
    result = build(model, php(disable_functions=[]))
    assert result["accounts"]["alice"]["php"]["disable_functions"] == []


@pytest.mark.parametrize(
    ("value", "path", "message"),
    [
        ("exec", "", "must be a list of PHP function names"),
        ({"exec": True}, "", "must be a list of PHP function names"),
        (None, "", "must be a list of PHP function names"),
        (["exec", "Exec"], ":1", "'Exec' is not a PHP function name"),
        (["1exec"], ":0", "'1exec' is not a PHP function name"),
        (["exec,system"], ":0", "'exec,system' is not a PHP function name"),
        (["exec\n"], ":0", "is not a PHP function name"),
        (["exec;"], ":0", "is not a PHP function name"),
        ([""], ":0", "'' is not a PHP function name"),
        ([7], ":0", "7 is not a PHP function name"),
        (["a" * 65], ":0", "is not a PHP function name"),
    ],
)
def test_php_bad_disable_functions(model, value, path, message):
    found = problems(model, php(disable_functions=value))
    only(found, f"{PHP}:disable_functions{path}", message)


def test_php_open_basedir_extras_follow_the_defaults(model):
    extras = ["/home/alice/private/lib", "/home/alice", "/home/alice/sites/www"]
    result = build(model, php(open_basedir=extras))["accounts"]["alice"]["php"]
    assert result["open_basedir"] == [
        "/home/alice",
        "/tmp",
        "/usr/share/php",
        "/home/alice/private/lib",
        "/home/alice/sites/www",
    ]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("/home/bob", "'/home/bob' must be inside the account's home /home/alice"),
        ("/home/alicex", "'/home/alicex' must be inside the account's home /home/alice"),
        ("/home/alicex/www", "must be inside the account's home /home/alice"),
        ("/tmp", "'/tmp' must be inside the account's home /home/alice"),
        ("/", "'/' must be an absolute path"),
        ("/etc", "'/etc' must be inside the account's home"),
        ("/home/alice/../bob", "'/home/alice/../bob' must be an absolute path"),
        ("/home/alice/./x", "must be an absolute path"),
        ("/home/alice/.ssh", "must be an absolute path"),
        ("/home/alice/", "must be an absolute path"),
        ("/home//alice", "must be an absolute path"),
        ("home/alice/x", "'home/alice/x' must be an absolute path"),
        ("/home/alice/x:/etc", "must be an absolute path"),
        ("/home/alice/x y", "must be an absolute path"),
        (42, "42 must be an absolute path"),
    ],
)
def test_php_bad_open_basedir_entries(model, entry, message):
    found = problems(model, php(open_basedir=["/home/alice/ok", entry]))
    only(found, f"{PHP}:open_basedir:1", message)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (False, []),
        (None, []),
        ([], ["/home/alice", "/tmp", "/usr/share/php"]),
        (True, ["/home/alice", "/tmp", "/usr/share/php"]),
    ],
)
def test_php_open_basedir_is_off_unless_asked(model, value, expected):
    assert (
        build(model, php(open_basedir=value))["accounts"]["alice"]["php"]["open_basedir"]
        == expected
    )


@pytest.mark.parametrize("value", ["/home/alice/x", {"a": "/home/alice"}, 1, "yes"])
def test_php_open_basedir_must_be_a_boolean_or_a_list(model, value):
    found = problems(model, php(open_basedir=value))
    only(
        found,
        f"{PHP}:open_basedir",
        "must be true, false or a list of paths inside the account's home",
    )


def test_php_admin_values_and_flags(model):
    result = build(
        model,
        php(
            admin_values={
                "max_input_vars": 3000,
                "date.timezone": "Europe/Berlin",
                "session.gc_maxlifetime": "1440",
                "error_reporting": "E_ALL & ~E_DEPRECATED",
                "mbstring.language": "",
            },
            admin_flags={"display_errors": False, "short_open_tag": True},
        ),
    )["accounts"]["alice"]["php"]
    assert result["admin_values"] == {
        "max_input_vars": "3000",
        "date.timezone": "Europe/Berlin",
        "session.gc_maxlifetime": "1440",
        "error_reporting": "E_ALL & ~E_DEPRECATED",
        "mbstring.language": "",
    }
    assert result["admin_flags"] == {"display_errors": "off", "short_open_tag": "on"}


@pytest.mark.parametrize(
    "key",
    [
        "Max_input_vars",
        "1key",
        "key-name",
        "key name",
        "key.",
        ".key",
        "key..x",
        "key[0]",
        "key\n",
        "",
        "a" * 65,
        5,
    ],
)
@pytest.mark.parametrize("block", ["admin_values", "admin_flags"])
def test_php_ini_bad_key_names(model, block, key):
    value = True if block == "admin_flags" else "1"
    found = problems(model, php(**{block: {key: value}}))
    only(found, f"{PHP}:{block}:{key}", "is not a php.ini directive name")


@pytest.mark.parametrize(
    "key",
    [
        "open_basedir",
        "auto_prepend_file",
        "auto_append_file",
        "sendmail_path",
        "memory_limit",
        "disable_functions",
        "session.save_path",
        "error_log",
        "extension",
        "zend_extension",
        "include_path",
        "allow_url_include",
        "log_errors",
        "upload_tmp_dir",
        "doc_root",
    ],
)
@pytest.mark.parametrize("block", ["admin_values", "admin_flags"])
def test_php_ini_keys_set_by_webarch_are_refused(model, block, key):
    value = False if block == "admin_flags" else "/x"
    found = problems(model, php(**{block: {key: value}}))
    only(found, f"{PHP}:{block}:{key}", "is set by webarch (use the account's php keys)")


def test_php_expose_php_flag_is_set_by_webarch(model):
    found = problems(model, php(admin_flags={"expose_php": True}))
    only(found, f"{PHP}:admin_flags:expose_php", "is set by webarch")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('say "hi"', 'must be printable ASCII without " \\ $ % ;'),
        ("C:\\tmp", 'must be printable ASCII without " \\ $ % ;'),
        ("${HOME}", 'must be printable ASCII without " \\ $ % ;'),
        ("100%", 'must be printable ASCII without " \\ $ % ;'),
        ("a; b", 'must be printable ASCII without " \\ $ % ;'),
        ("a\nphp_admin_value[open_basedir] = /", "must be printable ASCII"),
        ("tab\there", "must be printable ASCII"),
        ("Zürich", "must be printable ASCII"),
        ("x" * 501, "must be printable ASCII"),
        (True, "must be a string or an integer"),
        (1.5, "must be a string or an integer"),
        (None, "must be a string or an integer"),
        (["a"], "must be a string or an integer"),
    ],
)
def test_php_bad_admin_values(model, value, message):
    found = problems(model, php(admin_values={"max_input_vars": value}))
    only(found, f"{PHP}:admin_values:max_input_vars", message)


@pytest.mark.parametrize("value", ["on", "off", 1, 0, None])
def test_php_admin_flags_must_be_booleans(model, value):
    found = problems(model, php(admin_flags={"display_errors": value}))
    only(found, f"{PHP}:admin_flags:display_errors", "must be true or false, not ")


@pytest.mark.parametrize("block", ["admin_values", "admin_flags"])
def test_php_ini_blocks_must_be_mappings(model, block):
    found = problems(model, php(**{block: ["display_errors"]}))
    only(found, f"{PHP}:{block}", "must be a mapping, not list")


@pytest.mark.parametrize("key", ["max_requests", "listen", "chroot", "user", "PM"])
def test_php_unknown_keys_are_refused(model, key):
    found = problems(model, php(**{key: 1}))
    only(found, f"{PHP}:{key}", "unknown key (known keys: admin_flags, admin_values, ")


def test_php_block_must_be_a_mapping(model):
    only(problems(model, one_account(php="8.2")), PHP, "must be a mapping, not str")


def test_php_problems_are_all_reported(model):
    found = problems(model, php(pm="x", max_children=0, memory_limit="1", open_basedir=["/"]))
    assert [p.split(": ", 1)[0] for p in found] == [
        f"{PHP}:pm",
        f"{PHP}:max_children",
        f"{PHP}:memory_limit",
        f"{PHP}:open_basedir:0",
    ]


# -- a site's switches -------------------------------------------------------


def test_site_web_defaults(model):
    www = build(model, site())["accounts"]["alice"]["sites"]["www"]
    assert (www["suspended"], www["robots_deny"], www["hsts"]) == (False, False, 0)
    assert (www["headers"], www["redirects"], www["basic_auth"]) == ({}, [], None)
    assert www["default_headers"] == {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
    }


@pytest.mark.parametrize("key", ["suspended", "robots_deny"])
@pytest.mark.parametrize("value", [True, False])
def test_site_boolean_switches(model, key, value):
    assert build(model, site(**{key: value}))["accounts"]["alice"]["sites"]["www"][key] is value


@pytest.mark.parametrize("key", ["suspended", "robots_deny"])
@pytest.mark.parametrize("value", ["yes", 1, None, "true"])
def test_site_boolean_switches_refuse_other_types(model, key, value):
    only(problems(model, site(**{key: value})), f"{SITE}:{key}", "must be true or false, not ")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(False, 0), (True, 31536000), (0, 0), (300, 300), (63072000, 63072000)],
)
def test_hsts(model, value, expected):
    assert build(model, site(hsts=value))["accounts"]["alice"]["sites"]["www"]["hsts"] == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (63072001, "must be between 0 and 63072000, not 63072001"),
        (-1, "must be between 0 and 63072000, not -1"),
        ("31536000", "must be an integer, not '31536000'"),
        ("yes", "must be an integer, not 'yes'"),
        (1.5, "must be an integer, not 1.5"),
        (None, "must be an integer, not None"),
        ({"max_age": 1}, "must be an integer"),
    ],
)
def test_bad_hsts(model, value, message):
    only(problems(model, site(hsts=value)), f"{SITE}:hsts", message)


def test_good_headers(model):
    headers = {
        "X-Frame-Options": "SAMEORIGIN",
        "Content-Security-Policy": "default-src 'self'; img-src *",
        "Permissions-Policy": "geolocation=()",
        "X-Empty-Ish": " ",
        "x1": "v" * 1000,
    }
    www = build(model, site(headers=headers))["accounts"]["alice"]["sites"]["www"]
    assert www["headers"] == headers


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("X Frame", "header name must be 1-64 letters, digits or hyphens"),
        ("X-Frame:", "header name must be 1-64 letters, digits or hyphens"),
        ("-X", "header name must be 1-64 letters, digits or hyphens"),
        ("X_Frame", "header name must be 1-64 letters, digits or hyphens"),
        ("X-Frame\n", "header name must be 1-64 letters, digits or hyphens"),
        ("", "header name must be 1-64 letters, digits or hyphens"),
        ("X" * 65, "header name must be 1-64 letters, digits or hyphens"),
        (7, "header name must be 1-64 letters, digits or hyphens"),
        ("Strict-Transport-Security", "is set by webarch (use the site's own keys)"),
        ("strict-transport-security", "is set by webarch (use the site's own keys)"),
        ("X-Robots-Tag", "is set by webarch (use the site's own keys)"),
        ("x-ROBOTS-tag", "is set by webarch (use the site's own keys)"),
    ],
)
def test_bad_header_names(model, name, message):
    only(problems(model, site(headers={name: "x"})), f"{SITE}:headers:{name}", message)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('a "quoted" value', 'must be printable ASCII without " \\ $ %'),
        ("a\nHeader set X-Evil 1", 'must be printable ASCII without " \\ $ %'),
        ("a\r\nX: y", "must be printable ASCII"),
        ("${APACHE_LOG_DIR}", "must be printable ASCII"),
        ("%{REMOTE_ADDR}e", "must be printable ASCII"),
        ("back\\slash", "must be printable ASCII"),
        ("\x00", "must be printable ASCII"),
        ("café", "must be printable ASCII"),
        ("", "must not be empty"),
        ("v" * 1001, "must be at most 1000 characters long"),
        (1, "must be a string, not int"),
        (None, "must be a string, not NoneType"),
    ],
)
def test_bad_header_values(model, value, message):
    found = problems(model, site(headers={"X-Test": value}))
    only(found, f"{SITE}:headers:X-Test", message)


@pytest.mark.parametrize(
    ("headers", "expected", "defaults"),
    [
        # Named: set instead of the default, whatever the case of the name.
        (
            {"referrer-policy": "no-referrer"},
            {"referrer-policy": "no-referrer"},
            {"X-Content-Type-Options": "nosniff"},
        ),
        # false: neither set nor sent by default.
        (
            {"X-Content-Type-Options": False},
            {},
            {"Referrer-Policy": "strict-origin-when-cross-origin"},
        ),
        ({"Referrer-Policy": False, "X-CONTENT-TYPE-OPTIONS": False}, {}, {}),
    ],
)
def test_default_headers_are_overridden_or_removed(model, headers, expected, defaults):
    www = build(model, site(headers=headers))["accounts"]["alice"]["sites"]["www"]
    assert (www["headers"], www["default_headers"]) == (expected, defaults)


def test_false_removes_only_a_default_header(model):
    found = problems(model, site(headers={"X-Frame-Options": False}))
    only(
        found,
        f"{SITE}:headers:X-Frame-Options",
        "false removes only a header every site sends by default "
        "(Referrer-Policy, X-Content-Type-Options)",
    )


def test_a_header_named_twice_is_refused(model):
    found = problems(
        model, site(headers={"Referrer-Policy": "no-referrer", "referrer-policy": False})
    )
    only(
        found,
        f"{SITE}:headers:referrer-policy",
        "names the header of 'Referrer-Policy' again (names are case-insensitive)",
    )


def test_headers_must_be_a_mapping(model):
    found = problems(model, site(headers=["X-Frame-Options: DENY"]))
    only(found, f"{SITE}:headers", "must be a mapping, not list")


def test_good_redirects(model):
    redirects = [
        {"from": "/old/", "to": "/new/"},
        {"from": "/shop", "to": "https://shop.example.org/", "status": 302},
        {"from": "/a", "to": "http://localhost:8080/x", "status": 303},
        {"from": "/caf%C3%A9", "to": "https://www.example.org", "status": 307},
        {"from": "/p", "to": "/q;v=1", "status": 308},
    ]
    result = build(model, site(redirects=redirects))["accounts"]["alice"]["sites"]["www"]
    assert result["redirects"] == [
        {"from": "/old/", "to": "/new/", "status": 301},
        {"from": "/shop", "to": "https://shop.example.org/", "status": 302},
        {"from": "/a", "to": "http://localhost:8080/x", "status": 303},
        {"from": "/caf%C3%A9", "to": "https://www.example.org", "status": 307},
        {"from": "/p", "to": "/q;v=1", "status": 308},
    ]


@pytest.mark.parametrize(
    ("item", "key", "message"),
    [
        ({"from": "old", "to": "/new"}, "from", "'old' must be a URL path like /old/"),
        ({"from": "https://x.example/", "to": "/"}, "from", "must be a URL path like /old/"),
        ({"from": "/old path", "to": "/"}, "from", "must be a URL path like /old/"),
        ({"from": '/o"ld', "to": "/"}, "from", "must be a URL path like /old/"),
        ({"from": "/$1", "to": "/"}, "from", "must be a URL path like /old/"),
        ({"from": "/a\n", "to": "/"}, "from", "must be a URL path like /old/"),
        ({"from": "", "to": "/"}, "from", "must not be empty"),
        ({"to": "/new"}, "from", "must be a string, not NoneType"),
        ({"from": "/a", "to": "new"}, "to", "'new' must be a URL or a URL path"),
        ({"from": "/a", "to": "ftp://x.example/"}, "to", "must be a URL or a URL path"),
        ({"from": "/a", "to": "https://X.example/"}, "to", "must be a URL or a URL path"),
        ({"from": "/a", "to": "https://intranet/"}, "to", "must be a URL or a URL path"),
        ({"from": "/a", "to": "https://10.0.0.1/"}, "to", "must be a URL or a URL path"),
        ({"from": "/a", "to": "https://x.example/a b"}, "to", "must be a URL or a URL path"),
        ({"from": "/a", "to": "https://x.example/${X}"}, "to", "must be a URL or a URL path"),
        ({"from": "/a", "to": '/b" evil'}, "to", "must be a URL or a URL path"),
        ({"from": "/a", "to": "/b\\c"}, "to", "must be a URL or a URL path"),
        ({"from": "/a", "to": "/%{HTTP_HOST}"}, "to", "must be a URL or a URL path"),
        ({"from": "/a"}, "to", "must be a string, not NoneType"),
        ({"from": "/a", "to": "/b", "status": 300}, "status", "between 301 and 308, not 300"),
        ({"from": "/a", "to": "/b", "status": 309}, "status", "between 301 and 308, not 309"),
        ({"from": "/a", "to": "/b", "status": 304}, "status", "must be 301, 302, 303, 307 or 308"),
        ({"from": "/a", "to": "/b", "status": "301"}, "status", "must be an integer, not '301'"),
        ({"from": "/a", "to": "/b", "status": True}, "status", "must be an integer, not True"),
        ({"from": "/a", "to": "/b", "code": 301}, "code", "unknown key (known keys: from, st"),
    ],
)
def test_bad_redirects(model, item, key, message):
    found = problems(model, site(redirects=[{"from": "/ok", "to": "/"}, item]))
    only(found, f"{SITE}:redirects:1:{key}", message)


@pytest.mark.parametrize("value", [{"from": "/a", "to": "/b"}, "/a /b", 301])
def test_redirects_must_be_a_list(model, value):
    found = problems(model, site(redirects=value))
    only(found, f"{SITE}:redirects", "must be a list of {from, to, status}")


def test_redirect_item_must_be_a_mapping(model):
    found = problems(model, site(redirects=["/a /b"]))
    assert found == [
        f"{SITE}:redirects:0: must be a mapping, not str",
        f"{SITE}:redirects:0:from: must be a string, not NoneType",
        f"{SITE}:redirects:0:to: must be a string, not NoneType",
    ]


@pytest.mark.parametrize("prefix", ["$2y$", "$2a$", "$2b$"])
def test_basic_auth(model, prefix):
    hashed = prefix + HASH[4:]
    users = {"bob": hashed, "alice.smith@example.org": HASH}
    result = build(model, site(basic_auth={"users": users}))
    auth = result["accounts"]["alice"]["sites"]["www"]["basic_auth"]
    assert auth == {
        "realm": "Restricted",
        "users": users,
        "lines": [f"alice.smith@example.org:{HASH}", f"bob:{hashed}"],
    }


def test_basic_auth_realm(model):
    result = build(model, site(basic_auth={"realm": "Staff only (v2)", "users": {"bob": HASH}}))
    assert result["accounts"]["alice"]["sites"]["www"]["basic_auth"]["realm"] == "Staff only (v2)"


@pytest.mark.parametrize(
    ("hashed", "why"),
    [
        ("$apr1$abcdefgh$0123456789abcdefghijkl", "md5"),
        ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "sha1"),
        ("secret", "plain text"),
        ("$2y$05$" + "a" * 52, "bcrypt one short"),
        ("$2y$05$" + "a" * 54, "bcrypt one long"),
        ("$2x$05$" + "a" * 53, "unknown bcrypt variant"),
        ("$2y$5$" + "a" * 53, "one-digit cost"),
        (HASH + "\n", "trailing newline"),
        ("", "empty"),
        (None, "null"),
        (12345, "int"),
    ],
)
def test_basic_auth_refuses_non_bcrypt_passwords(model, hashed, why):
    found = problems(model, site(basic_auth={"users": {"ok": HASH, "bob": hashed}}))
    only(found, f"{SITE}:basic_auth:users:bob", "must be a bcrypt hash ($2y$")


@pytest.mark.parametrize("user", ["bad user", "a:b", "", "u" * 65, "bob\n", "jörg", 42])
def test_basic_auth_bad_user_names(model, user):
    found = problems(model, site(basic_auth={"users": {"ok": HASH, user: HASH}}))
    only(
        found, f"{SITE}:basic_auth:users:{user}", "user name must be 1-64 letters, digits, . _ @ -"
    )


@pytest.mark.parametrize("auth", [{}, {"users": {}}, {"users": None}, {"realm": "R"}])
def test_basic_auth_needs_a_user(model, auth):
    found = problems(model, site(basic_auth=auth))
    only(found, f"{SITE}:basic_auth:users", "must name at least one user")


@pytest.mark.parametrize(
    ("realm", "message"),
    [
        ('Say "friend"', 'must be printable ASCII without " \\ $ %'),
        ("a\nRequire all granted", "must be printable ASCII"),
        ("$HOME", "must be printable ASCII"),
        ("100%", "must be printable ASCII"),
        ("back\\", "must be printable ASCII"),
        ("", "must not be empty"),
        ("r" * 101, "must be at most 100 characters long"),
        (None, "must be a string, not NoneType"),
    ],
)
def test_basic_auth_bad_realms(model, realm, message):
    found = problems(model, site(basic_auth={"realm": realm, "users": {"bob": HASH}}))
    only(found, f"{SITE}:basic_auth:realm", message)


def test_basic_auth_unknown_key_and_wrong_type(model):
    found = problems(model, site(basic_auth={"users": {"bob": HASH}, "password": "x"}))
    only(found, f"{SITE}:basic_auth:password", "unknown key (known keys: realm, users)")
    assert problems(model, site(basic_auth=True)) == [
        f"{SITE}:basic_auth: must be a mapping, not bool",
        f"{SITE}:basic_auth:users: must name at least one user",
    ]


# -- server settings: acme and log retention ---------------------------------


def test_acme_defaults(model):
    acme = build(model, {})["acme"]
    assert acme == {
        "directory": "https://acme-v02.api.letsencrypt.org/directory",
        "contact": None,
        "ca_file": None,
        "ocsp_stapling": True,
    }
    assert build(model, {"acme": {"ocsp_stapling": False}})["acme"]["ocsp_stapling"] is False


def test_acme_contact_defaults_to_admin_email(model):
    assert build(model, {"admin_email": "ops@example.org"})["acme"]["contact"] == "ops@example.org"
    pillar = {"admin_email": "ops@example.org", "acme": {"contact": "certs@example.org"}}
    assert build(model, pillar)["acme"]["contact"] == "certs@example.org"


@pytest.mark.parametrize(
    "directory",
    [
        "https://acme-staging-v02.api.letsencrypt.org/directory",
        "https://localhost:14000/dir",
        "http://acme.internal.example:8080",
        "https://acme.example/a/b-c_d.e~f",
    ],
)
def test_acme_good_directories(model, directory):
    pillar = {"acme": {"directory": directory, "ca_file": "/etc/ssl/pebble.pem"}}
    acme = build(model, pillar)["acme"]
    assert (acme["directory"], acme["ca_file"]) == (directory, "/etc/ssl/pebble.pem")


@pytest.mark.parametrize(
    ("directory", "message"),
    [
        ("ftp://acme.example/dir", "must be an http(s) URL"),
        ("acme.example/dir", "must be an http(s) URL"),
        ("https://ACME.example/dir", "must be an http(s) URL"),
        ("https://acme/dir", "must be an http(s) URL"),
        ("https://127.0.0.1/dir", "must be an http(s) URL"),
        ("https://-acme.example/dir", "must be an http(s) URL"),
        ("https://acme..example/dir", "must be an http(s) URL"),
        ("https://user@acme.example/dir", "must be an http(s) URL"),
        ("https://acme.example/dir?x=1", "must be an http(s) URL"),
        ("https://acme.example/dir%20x", "must be an http(s) URL"),
        ("https://acme.example/dir\n", "must be an http(s) URL"),
        ("https://acme.example:/dir", "must be an http(s) URL"),
        ("", "must not be empty"),
        (None, "must be a string, not NoneType"),
    ],
)
def test_acme_bad_directories(model, directory, message):
    only(problems(model, {"acme": {"directory": directory}}), "webarch:acme:directory", message)


@pytest.mark.parametrize("port", ["0", "65536", "99999"])
def test_acme_directory_port_out_of_range(model, port):
    found = problems(model, {"acme": {"directory": f"https://acme.example:{port}/dir"}})
    only(found, "webarch:acme:directory", "must be an http(s) URL")


@pytest.mark.parametrize(
    ("acme", "path", "message"),
    [
        ({"contact": "nobody"}, "contact", "'nobody' is not a valid email address"),
        ({"contact": "ops@localhost"}, "contact", "is not a valid email address"),
        ({"contact": ""}, "contact", "must not be empty"),
        ({"ca_file": "pebble.pem"}, "ca_file", "'pebble.pem' must be an absolute path"),
        ({"ca_file": "/etc/ssl/../x.pem"}, "ca_file", "must be an absolute path"),
        ({"ca_file": "/etc/ssl/"}, "ca_file", "must be an absolute path"),
        ({"ca_file": "/etc/ssl/a b.pem"}, "ca_file", "must be an absolute path"),
        ({"ca_file": 5}, "ca_file", "5 must be an absolute path"),
        ({"ocsp_stapling": "on"}, "ocsp_stapling", "must be true or false, not 'on'"),
        ({"email": "ops@example.org"}, "email", "unknown key (known keys: ca_file, contact,"),
    ],
)
def test_acme_bad_settings(model, acme, path, message):
    only(problems(model, {"acme": acme}), f"webarch:acme:{path}", message)


def test_acme_must_be_a_mapping(model):
    only(problems(model, {"acme": "letsencrypt"}), "webarch:acme", "must be a mapping, not str")


@pytest.mark.parametrize("days", [1, 14, 3650])
def test_log_retention_days(model, days):
    assert build(model, {"log_retention_days": days})["log_retention_days"] == days


@pytest.mark.parametrize(
    ("days", "message"),
    [
        (0, "must be between 1 and 3650, not 0"),
        (3651, "must be between 1 and 3650, not 3651"),
        ("14", "must be an integer, not '14'"),
        (True, "must be an integer, not True"),
    ],
)
def test_bad_log_retention_days(model, days, message):
    only(problems(model, {"log_retention_days": days}), "webarch:log_retention_days", message)


def test_log_retention_default(model):
    assert build(model, {})["log_retention_days"] == 14


# -- derived data ------------------------------------------------------------


@pytest.mark.parametrize(("release", "version"), [(12, "8.2"), (13, "8.4")])
def test_apache_php_version_and_pool(model, release, version):
    result = build(model, one_account(), release)
    assert result["php_version"] == version
    assert result["apache"]["modules"] == list(webarch_web.APACHE_MODULES)
    assert {"proxy_fcgi", "headers", "md", "auth_basic", "mpm_event"} <= set(
        result["apache"]["modules"]
    )
    # Off one after the other: mod_php and mpm_itk (both depend on prefork) before prefork.
    off = result["apache"]["modules_off"]
    assert off == [f"php{version}", *webarch_web.APACHE_MODULES_OFF]
    assert off.index("mpm_itk") < off.index("mpm_prefork") and {"cgi", "userdir"} <= set(off)
    assert result["apache"]["server_name"] == "localhost"
    assert result["accounts"]["alice"]["pool"] == {
        "name": "alice",
        "socket": webarch_php.pool_socket("alice", ""),
        "listen": webarch_php.pool_socket("alice", "").removesuffix(".sock") + ".adopted",
        "file": "/etc/webarch/php-fpm/alice.conf",
        "old_file": f"/etc/php/{version}/fpm/pool.d/webarch-alice.conf",
        "unit": "webarch-php@alice.service",
        "service": "webarch-php@alice",
        "socket_unit": "webarch-php@alice.socket",
        "error_log": "/home/alice/logs/php-error.log",
        "slow_log": "/home/alice/logs/php-slow.log",
    }
    assert result["php_fpm"] == {
        "service": f"php{version}-fpm",
        "conf_dir": f"/etc/php/{version}/fpm/conf.d",
        "default_pool": f"/etc/php/{version}/fpm/pool.d/www.conf",
        "idle_pool": f"/etc/php/{version}/fpm/pool.d/000-webarch-idle.conf",
        "idle_socket": "/run/php/webarch-idle.sock",
    }


def test_apache_server_name_is_the_hostname(model):
    assert build(model, {"hostname": "web1.example.org"})["apache"]["server_name"] == (
        "web1.example.org"
    )


@pytest.mark.parametrize("release", [11, 14, "bookworm"])
def test_unsupported_release_raises(model, release):
    # Not a ModelError: the release is no pillar problem, and it stops the model at once.
    unsupported = webarch_check.UnsupportedRelease
    with pytest.raises(unsupported, match=r"supports Debian 12, 13, not") as info:
        model.build_model(one_account(memory_limit="bad"), host(model), release)
    assert not isinstance(info.value, model.ModelError)


def test_missing_release_raises_unsupported_release(model):
    with pytest.raises(webarch_check.UnsupportedRelease):
        model.build_model({}, host(model), None)


def test_log_map_lists_every_name_of_present_accounts(model):
    pillar = {
        "accounts": {
            "bob": {"sites": {"shop": {"server_name": "shop.bob.example"}}},
            "alice": {
                "sites": {
                    "www": {"server_name": "www.alice.example", "aliases": ["alice.example"]},
                    "blog": {
                        "server_name": "blog.alice.example",
                        "aliases": ["a.blog.example", "b.blog.example"],
                    },
                }
            },
            "gone": {"state": "absent", "sites": {"old": {"server_name": "old.example"}}},
        }
    }
    log_map = build(model, pillar)["log_map"]
    assert log_map["path"] == "/etc/webarch/log-map"
    assert log_map["lines"] == [
        paths.LOG_MAP_HEADER,
        "blog.alice.example alice",
        "a.blog.example alice",
        "b.blog.example alice",
        "www.alice.example alice",
        "alice.example alice",
        "shop.bob.example bob",
    ]


def test_log_map_without_sites_is_only_the_header(model):
    assert build(model, one_account())["log_map"]["lines"] == [paths.LOG_MAP_HEADER]


# -- property: no text reaches a double-quoted config value unsafely ---------

# Text rich in what breaks out of a quoted Apache or PHP-FPM value.
NASTY = st.text(
    alphabet=st.one_of(st.characters(), st.sampled_from('"\\$%;{}\n\r\t /:')), max_size=40
)
UNSAFE = ('"', "\\", "\n", "$", "%")


def _accepted(model: ModuleType, pillar: dict, path: str) -> dict | None:
    """The model of ``pillar``, or ``None`` when it refuses it, only at ``path``."""
    try:
        return build(model, pillar)
    except model.ModelError as exc:
        assert exc.problems and all(p.startswith(f"{path}") for p in exc.problems), exc.problems
        return None


@settings(max_examples=300, deadline=None)
@given(text=NASTY)
def test_property_header_values(model, text):
    result = _accepted(model, site(headers={"X-Test": text}), f"{SITE}:headers:X-Test: ")
    if result is not None:
        value = result["accounts"]["alice"]["sites"]["www"]["headers"]["X-Test"]
        assert value == text and not any(c in value for c in UNSAFE)


@settings(max_examples=300, deadline=None)
@given(text=NASTY)
def test_property_realms(model, text):
    pillar = site(basic_auth={"realm": text, "users": {"bob": HASH}})
    result = _accepted(model, pillar, f"{SITE}:basic_auth:realm: ")
    if result is not None:
        realm = result["accounts"]["alice"]["sites"]["www"]["basic_auth"]["realm"]
        assert realm == text and not any(c in realm for c in UNSAFE)


@settings(max_examples=300, deadline=None)
@given(text=NASTY)
def test_property_admin_values(model, text):
    pillar = php(admin_values={"date.timezone": text})
    result = _accepted(model, pillar, f"{PHP}:admin_values:date.timezone: ")
    if result is not None:
        value = result["accounts"]["alice"]["php"]["admin_values"]["date.timezone"]
        assert value == text and not any(c in value for c in (*UNSAFE, ";"))


@settings(max_examples=300, deadline=None)
@given(
    target=st.one_of(
        NASTY,
        NASTY.map(lambda t: "/" + t),
        NASTY.map(lambda t: "https://www.example.org/" + t),
    )
)
def test_property_redirect_targets(model, target):
    pillar = site(redirects=[{"from": "/old", "to": target}])
    result = _accepted(model, pillar, f"{SITE}:redirects:0:to: ")
    if result is not None:
        value = result["accounts"]["alice"]["sites"]["www"]["redirects"][0]["to"]
        # A redirect target is a URL: "%" stands for percent-encoding (/caf%C3%A9) and
        # is allowed, but no %{...} format, ${...} variable, quote, backslash or newline.
        assert value == target
        assert not any(c in value for c in ('"', "\\", "\n", "$", "{", "}"))


def test_pool_sockets_are_keyed_names(model):
    a, b = webarch_php.pool_socket("alice", "key-1"), webarch_php.pool_socket("alice", "key-2")
    assert a != b and "alice" not in a
    assert a.startswith("/run/php/webarch-") and a.endswith(".sock")
    assert webarch_php.pool_socket("bob", "key-1") != a


def test_staged_keep_is_the_present_accounts_files_only(model):
    """A full run's clean of the staging directory keeps just the present accounts' files."""
    from salt.utils.stringutils import check_include_exclude

    pillar = {
        "accounts": {
            "alice": {},
            "al-ice": {},
            "bob": {"suspended": True},
            "gone": {"state": "absent"},
        }
    }
    pattern = build(model, pillar)["apache"]["staged_keep"]
    removed = [
        name
        for name in ("webarch-alice.conf", "webarch-al-ice.conf", "webarch-bob.conf",
                     "webarch-gone.conf", "webarch-alice.conf.bak", "xwebarch-alice.conf",
                     "webarch-alicexconf")
        if check_include_exclude(name, None, pattern)  # True: not excluded, so removed
    ]  # fmt: skip
    assert removed == [
        "webarch-gone.conf", "webarch-alice.conf.bak", "xwebarch-alice.conf", "webarch-alicexconf"
    ]  # fmt: skip
