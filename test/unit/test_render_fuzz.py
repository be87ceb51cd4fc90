"""Hostile pillar, generated: it is refused with paths, or it renders harmless configs.

Hypothesis puts hostile text (newlines, quotes, Apache and PHP directive
injection, ``${...}`` and ``%{...}``, path traversal, unicode look-alikes, huge
values, wrong types) into every place a tenant's name or setting reaches a
config file.  Each case must end either in ``ModelError`` whose every problem
names a ``webarch:`` path, or in a model whose Apache, PHP-FPM and sshd files
render with no injected line: every line printable ASCII, balanced quotes, and
no directive that the templates do not write themselves.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from types import ModuleType

import jinja2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit.model_helpers import host

FILES = Path(__file__).resolve().parents[2] / "webarch" / "files" / "templates"

HOSTILE = [
    "alice\nServerAlias evil.example",
    'x" \nInclude /etc/shadow\n#',
    "x\\",
    "${APACHE_RUN_USER}",
    "%{ENV:SECRET}e",
    "../../etc",
    "/etc/passwd",
    "аlice",  # noqa: RUF001 (a Cyrillic a)
    "a" * 5000,
    "php_admin_value[open_basedir] = /",
    "</VirtualHost><VirtualHost *:443>",
    "\x00",
    "ok",
    "",
]
texts = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40))
values = st.one_of(
    texts, st.integers(-5, 10**7), st.booleans(), st.none(), st.lists(texts, max_size=3)
)


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(FILES)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )


ENV = _env()


def base_pillar() -> dict:
    """A valid pillar that touches every template."""
    return {
        "hostname": "web.example.org",
        "accounts": {
            "alice": {
                "fullname": "Alice",
                "email": "alice@alice.example",
                "ssh_password": True,
                "php": {"admin_values": {"date.timezone": "UTC"}, "open_basedir": []},
                "sites": {
                    "www": {
                        "type": "wordpress",
                        "server_name": "www.alice.example",
                        "aliases": ["alice.example"],
                        "docroot": "public",
                        "headers": {"X-Frame-Options": "DENY"},
                        "redirects": [{"from": "/old", "to": "https://www.alice.example/"}],
                        "basic_auth": {"realm": "Staff", "users": {"staff": BCRYPT}},
                    }
                },
            }
        },
    }


BCRYPT = "$2y$05$" + ("./ABCxyz0189" * 5)[:53]
# Where a hostile value goes: a path of keys into base_pillar(); "*" replaces a key.
PLACES = [
    ("hostname",),
    ("accounts", "*"),
    ("accounts", "alice", "fullname"),
    ("accounts", "alice", "email"),
    ("accounts", "alice", "php", "memory_limit"),
    ("accounts", "alice", "php", "admin_values", "date.timezone"),
    ("accounts", "alice", "php", "admin_values", "*"),
    ("accounts", "alice", "php", "open_basedir", 0),
    ("accounts", "alice", "php", "disable_functions", 0),
    ("accounts", "alice", "ssh_keys", 0),
    ("accounts", "alice", "sites", "*"),
    ("accounts", "alice", "sites", "www", "server_name"),
    ("accounts", "alice", "sites", "www", "aliases", 0),
    ("accounts", "alice", "sites", "www", "docroot"),
    ("accounts", "alice", "sites", "www", "type"),
    ("accounts", "alice", "sites", "www", "hsts"),
    ("accounts", "alice", "sites", "www", "headers", "X-Frame-Options"),
    ("accounts", "alice", "sites", "www", "headers", "*"),
    ("accounts", "alice", "sites", "www", "redirects", 0, "from"),
    ("accounts", "alice", "sites", "www", "redirects", 0, "to"),
    ("accounts", "alice", "sites", "www", "basic_auth", "realm"),
    ("accounts", "alice", "sites", "www", "basic_auth", "users", "*"),
]
printable = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
hostile_values = st.one_of(st.sampled_from(HOSTILE), printable, st.text(max_size=30), values)


def _put(pillar: dict, place: tuple, value: object) -> None:
    """Put ``value`` at ``place`` ("*" as the last step renames that key to ``value``)."""
    node: object = pillar
    for step, following in itertools.pairwise(place):
        fresh: object = [] if isinstance(following, int) else {}
        if isinstance(node, dict):
            node = node.setdefault(step, fresh)
        else:
            while len(node) <= step:
                node.append(fresh)
            node = node[step]
    last = place[-1]
    if last == "*":
        key, old = next(iter(node.items())) if node else (None, "x")
        node.pop(key, None)
        node[value if isinstance(value, str) else repr(value)] = old
    elif isinstance(node, list):
        while len(node) <= last:
            node.append(None)
        node[last] = value
    else:
        node[last] = value


@st.composite
def hostile_pillars(draw: st.DrawFn) -> dict:
    """The valid base pillar with one to three places holding hostile values."""
    pillar = base_pillar()
    for place in draw(st.lists(st.sampled_from(PLACES), min_size=1, max_size=2, unique=True)):
        _put(pillar, place, draw(hostile_values))
    return pillar


def render_all(model: ModuleType, built: dict) -> dict[str, str]:
    """Render every template the formula fills with tenant data."""
    rendered = {
        "sshd_config": ENV.get_template("sshd_config.jinja").render(
            password_accounts=built["ssh_password_accounts"],
            account_group=built["account_group"],
            chroot_base=built["chroot_base"],
            authorized_keys_dir=built["paths"]["ssh_authorized_keys_dir"],
            grains={"osmajorrelease": 12},  # Salt's template context has them
        )
    }
    for name in built["present"]:
        account = built["accounts"][name]
        rendered[f"apache {name}"] = ENV.get_template("apache-account.conf.jinja").render(
            account=account,
            override_list=built["apache"]["htaccess_directives"],
            allow_override=built["apache"]["allow_override"],
            auth_dir=built["apache"]["auth_dir"],
            paths=built["paths"],
        )
        rendered[f"fpm {name}"] = ENV.get_template("fpm-pool.conf.jinja").render(
            account=account,
            php=account["php"],
            web_user=built["web_user"],
            mariadb_socket=built["paths"]["mariadb_socket"],
        )
    return rendered


# Directives (the first word of a line) the templates write: anything else on
# a line of its own would be injected.
APACHE_WORDS = set(
    """MDomain <VirtualHost </VirtualHost> ServerName ServerAlias DocumentRoot SSLEngine
    SSLCertificateFile SSLCertificateKeyFile Protocols ProxyFCGISetEnvIf Header RewriteEngine
    RewriteRule ErrorDocument Redirect <Directory </Directory> Options AllowOverride
    AllowOverrideList CGIPassAuth DirectoryIndex AuthType AuthName AuthUserFile Require
    <DirectoryMatch </DirectoryMatch> <FilesMatch </FilesMatch> <Files </Files>
    <If </If> SetHandler""".split()
)
FPM_LINE = re.compile(r"^(\[[a-z0-9-]+\]|[a-z_.]+(\[[A-Za-z0-9_.]+\])? = [^\n]*)$")


def check_rendered(rendered: dict[str, str]) -> None:
    """Every line printable, quotes balanced, only the templates' own directives."""
    for what, text in rendered.items():
        for line in text.splitlines():
            assert re.fullmatch(r"[\x20-\x7e]*", line), (what, line)
            assert line.count('"') % 2 == 0, (what, line)
            stripped = line.strip()
            if not stripped or stripped.startswith(("#", ";")):
                continue
            if what.startswith("apache"):
                assert stripped.split()[0] in APACHE_WORDS, (what, line)
            elif what.startswith("fpm"):
                assert FPM_LINE.match(stripped), (what, line)


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(pillar=hostile_pillars())
def test_hostile_pillar_is_refused_or_harmless(model, pillar):
    try:
        built = model.build_model(pillar, host(model))
    except model.ModelError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.startswith("webarch:"), problem
            assert ": " in problem, problem
        return
    check_rendered(render_all(model, built))


def test_the_example_pillar_renders_clean(model, example_pillar):
    built = model.build_model(example_pillar["webarch"], host(model))
    rendered = render_all(model, built)
    assert len(rendered) == 1 + 2 * len(built["present"])
    check_rendered(rendered)
