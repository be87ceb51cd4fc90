"""The Apache preset of ``matomo`` sites, and the PHP extensions the site types need.

Matomo's release ships .htaccess files with ``AddHandler`` (refused by the
.htaccess policy of the other site types: every request answered 500), so a
matomo site reads no .htaccess at all and its vhost carries what they protect.
The regular expressions of the rendered vhost are checked with Python's ``re``
(the same syntax as Apache's PCRE for these patterns) against Matomo's paths.
"""

from __future__ import annotations

import re

import formula
import pytest
import webarch_php
import webarch_web
from unit.model_helpers import host
from unit.test_render_fuzz import ENV

ROOT = "/home/alice/sites/stats"


def render(model, sites: dict) -> str:
    """The Apache file of account alice holding ``sites``."""
    pillar = {"accounts": {"alice": {"sites": sites}}}
    built = model.build_model(pillar, host(model))
    return ENV.get_template("apache-account.conf.jinja").render(
        account=built["accounts"]["alice"],
        override_list=built["apache"]["htaccess_directives"],
        allow_override=built["apache"]["allow_override"],
        auth_dir=built["apache"]["auth_dir"],
        paths=built["paths"],
    )


def matomo(model, **data: object) -> str:
    """The vhost of one matomo site ``stats`` of alice."""
    site = {"type": "matomo", "server_name": "stats.alice.example", **data}
    return render(model, {"stats": site})


def section(text: str, start: str) -> str:
    """The first block of ``text`` opened by the line starting with ``start``."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith(start))
    indent = len(lines[first]) - len(lines[first].lstrip())
    tag = start.split()[0].lstrip("<")
    for last in range(first + 1, len(lines)):
        if lines[last] == " " * indent + f"</{tag}>":
            return "\n".join(lines[first : last + 1])
    raise AssertionError(f"{start} is not closed")


def denied(text: str, path: str) -> bool:
    """Whether the matomo sections of ``text`` deny the file ``path`` (Apache's logic).

    A <DirectoryMatch> applies to a file below a directory its regex matches;
    a <FilesMatch> to the file's base name; the <If> to the whole file name.
    """
    matomo_part = text[text.index("# Matomo, with the protections") :]
    base = path.rsplit("/", 1)[1]
    refused = False
    for match in re.finditer(
        r'<DirectoryMatch "([^"]+)">\n(.*?)\n    </DirectoryMatch>', matomo_part, re.S
    ):
        regex, body = match.groups()
        if not re.search(regex, path.rsplit("/", 1)[0] + "/"):
            continue
        inner = re.search(r'<FilesMatch "([^"]+)">\n\s*Require all denied', body)
        if inner:
            refused |= bool(re.search(inner.group(1), base))
        elif "Require all denied" in body:
            refused = True
    php = re.search(
        r'<FilesMatch "([^"]+)">\n\s*<If "%\{REQUEST_FILENAME\} !~ m#(.+)#">', matomo_part
    )
    assert php, "the entry points' <If> is missing"
    if re.search(php.group(1), base) and not re.search(php.group(2), path):
        refused = True
    return refused


def test_matomo_reads_no_htaccess(model):
    directory = section(matomo(model), f'<Directory "{ROOT}">')
    assert "        AllowOverride None\n" in directory
    assert "        AllowOverrideList None\n" in directory
    assert "AllowOverride AuthConfig" not in directory
    assert "RewriteEngine" not in directory


@pytest.mark.parametrize("kind", ["static", "php", "wordpress", "mediawiki"])
def test_other_types_keep_the_htaccess_policy(model, kind):
    text = render(model, {"www": {"type": kind, "server_name": "www.alice.example"}})
    directory = section(text, '<Directory "/home/alice/sites/www">')
    assert f"        AllowOverride {webarch_web.htaccess.ALLOW_OVERRIDE}\n" in directory
    listed = " ".join(webarch_web.HTACCESS_DIRECTIVES)
    assert f"        AllowOverrideList {listed}\n" in directory
    assert "AllowOverride None" not in directory
    assert "AllowOverrideList None" not in directory


@pytest.mark.parametrize(
    "path",
    [
        "config/config.ini.php",
        "config/global.ini.php",
        "config/global.php",
        "config/environment/dev.php",
        "tmp/sessions/x",
        "tmp/assets/asset_manager_core_js.js",
        "tmp/logs/matomo.log",
        "core/Piwik.php",
        "core/Tracker/Visit.php",
        "lang/en.json",
        "vendor/scoper-autoload.php",
        "vendor/composer/installed.json",
        "libs/Zend/Exception.php",
        "node_modules/iframe-resizer/package.json",
        "plugins/CoreHome/CoreHome.php",
        "plugins/CoreHome/plugin.json",
        "plugins/CoreHome/templates/_dataTable.twig",
        "plugins/Foo/index.php",
        "plugins/Foo/js/index.php",
        "misc/user/config.php",
        "misc/user/index.php",
        "DIObject.php",
        "LegacyAutoloader.php",
        "js/foo.php",
        "console.php",
        "index.phtml",
        "index.php5",
    ],
)
def test_matomo_internals_are_denied(model, path):
    assert denied(matomo(model), f"{ROOT}/{path}")


@pytest.mark.parametrize(
    "path",
    [
        "index.php",
        "matomo.php",
        "piwik.php",
        "matomo.js",
        "piwik.js",
        "js/index.php",
        "js/tracker.php",
        "js/piwik.min.js",
        "plugins/HeatmapSessionRecording/configs.php",
        "plugins/Morpheus/stylesheets/simple_structure.css",
        "plugins/Morpheus/fonts/matomo.woff2",
        "plugins/Morpheus/images/logo.png",
        "plugins/CoreHome/javascripts/manifest.json",
        "plugins/LanguagesManager/vue/dist/LanguagesManager.umd.min.js",
        "libs/jqplot/jqplot.markerRenderer.js",
        "node_modules/jquery/dist/jquery.min.js",
        "misc/user/logo.png",
        "robots.txt",
        "favicon.ico",
    ],
)
def test_matomo_entry_points_and_assets_are_served(model, path):
    assert not denied(matomo(model), f"{ROOT}/{path}")


def test_matomo_rules_only_deny(model):
    """What they leave is under the site's Require: basic auth is never bypassed."""
    bcrypt = "$2y$05$" + ("./ABCxyz0189" * 5)[:53]
    text = matomo(model, basic_auth={"users": {"staff": bcrypt}})
    assert "Require valid-user" in text
    assert "Require all granted" not in text
    plain = matomo(model)
    assert plain.count("Require all granted") == 1  # the site's <Directory> only


def test_matomo_docroot_dots_are_literal_in_regexes(model):
    text = matomo(model, docroot="public.v2")
    assert f'<DirectoryMatch "^{ROOT}/public\\.v2/(config|tmp|core|lang)/">' in text
    assert f"m#^{ROOT}/public\\.v2/(index|matomo|piwik|" in text
    assert denied(text, f"{ROOT}/public.v2/config/config.ini.php")
    assert not denied(text, f"{ROOT}/public.v2/index.php")


def test_matomo_php_runs_through_the_pool(model):
    text = matomo(model)
    handler = section(text, '<FilesMatch "\\.php$">')
    assert 'SetHandler "proxy:unix:' in handler
    assert "ProxyFCGISetEnvIf \"reqenv('SCRIPT_FILENAME') !~" in text


EXTENSIONS = ["xml", "mbstring", "gd", "curl", "intl"]


@pytest.mark.parametrize(("major", "php"), [(12, "8.2"), (13, "8.4")])
def test_php_packages_have_the_extensions_of_the_site_types(major, php):
    packages = formula.load("_modules/webarch.py").packages(major)
    for name in ["fpm", "cli", "mysql", *EXTENSIONS]:
        assert f"php{php}-{name}" in packages
    assert webarch_php.packages(php) == [
        f"php{php}-{name}" for name in ["fpm", "cli", "mysql", *EXTENSIONS]
    ]
    assert len(packages) == len(set(packages))
