"""The per-site web application firewall in the model and its templates (issue 21).

``waf: off | detect | on`` per site and as the server default (``webarch:waf``),
YAML's bare on/off included; mistakes named by their pillar path; the server's
firewall on only while some present site has one; what the vhost and the
module's file say.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import jinja2
import pytest
from unit.model_helpers import host, problems

TEMPLATES = Path(__file__).resolve().parents[2] / "webarch" / "files" / "templates"
SITE = "webarch:accounts:alice:sites:{}:waf"


def pillar(server: object = None, **sites: object) -> dict:
    """alice with a site per keyword (its ``waf``; None: none); ``server``: webarch:waf."""
    data: dict = {
        "accounts": {
            "alice": {
                "sites": {
                    name: {"server_name": f"{name}.alice.example", "type": "wordpress"}
                    | ({} if waf is None else {"waf": waf})
                    for name, waf in sites.items()
                }
            }
        }
    }
    if server is not None:
        data["waf"] = server
    return data


def build(model: ModuleType, data: dict, release: int = 12) -> dict:
    return model.build_model(data, host(model), release)


def modes(built: dict) -> dict[str, str]:
    return {name: site["waf"] for name, site in built["accounts"]["alice"]["sites"].items()}


def test_off_is_the_default_and_the_server_has_no_firewall(model):
    built = build(model, pillar(www=None))
    assert modes(built) == {"www": "off"}
    assert built["waf"]["enabled"] is False


@pytest.mark.parametrize(
    ("given", "mode"),
    [("off", "off"), ("detect", "detect"), ("on", "on"), (True, "on"), (False, "off")],
)
def test_each_mode_and_yamls_bare_on_and_off(model, given, mode):
    built = build(model, pillar(www=given))
    assert modes(built) == {"www": mode}
    assert built["waf"]["enabled"] is (mode != "off")


def test_the_server_default_applies_to_sites_without_their_own(model):
    built = build(model, pillar("detect", www=None, blog="off", shop="on"))
    assert modes(built) == {"www": "detect", "blog": "off", "shop": "on"}
    assert build(model, pillar(False, www=None))["waf"]["enabled"] is False


def test_mistakes_are_named_by_path_all_at_once(model):
    found = problems(model, pillar("block", www="yes", blog=1, shop="detect"))
    assert "webarch:waf: 'block' must be off, detect or on" in found
    assert f"{SITE.format('www')}: 'yes' must be off, detect or on" in found
    assert f"{SITE.format('blog')}: 1 must be off, detect or on" in found
    assert not any(p.startswith(SITE.format("shop")) for p in found)


def test_only_present_sites_of_present_accounts_turn_it_on(model):
    data = pillar(www="on")
    data["accounts"]["alice"]["state"] = "absent"
    assert build(model, data)["waf"]["enabled"] is False


@pytest.mark.parametrize(("release", "version"), [(12, 334), (13, 337)])
def test_the_servers_firewall_names_debians_packages_and_crs(model, release, version):
    waf = build(model, pillar(www="on"), release)["waf"]
    assert waf["packages"] == ["libapache2-mod-security2", "modsecurity-crs"]
    assert waf["modules"] == ["unique_id", "security2"]
    assert waf["conf"] == "/etc/apache2/mods-available/security2.conf"
    assert waf["crs_version"] == version


def render(name: str, **context: object) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined
    )
    return env.get_template(name).render(**context)


def vhosts(model: ModuleType, built: dict) -> str:
    return render(
        "apache-account.conf.jinja",
        account=built["accounts"]["alice"],
        override_list=built["apache"]["htaccess_directives"],
        allow_override=built["apache"]["allow_override"],
        auth_dir=built["apache"]["auth_dir"],
        paths=built["paths"],
    )


def test_each_vhost_sets_its_own_engine_and_names_its_type(model):
    built = build(model, pillar(www="on", blog="detect", shop="off"))
    text = vhosts(model, built)
    blocks = {b.split("ServerName ")[1].split()[0]: b for b in text.split("<VirtualHost")[1:]}
    assert "SecRuleEngine On\n    SecWebAppId wordpress" in blocks["www.alice.example"]
    assert "SecRuleEngine DetectionOnly" in blocks["blog.alice.example"]
    assert "SecRule" not in blocks["shop.alice.example"]


def test_the_module_file_is_off_at_paranoia_level_1_with_wordpress_exclusions(model):
    waf = build(model, pillar(www="on"), 13)["waf"]
    text = render("modsecurity.conf.jinja", waf=waf)
    assert "\n    SecRuleEngine Off\n" in text
    assert "setvar:tx.paranoia_level=1" in text and "tx.crs_setup_version=337" in text
    # The WordPress exclusions come before the rules that read them.
    wordpress = text.index('SecRule WEBAPPID "@streq wordpress"')
    assert "setvar:tx.crs_exclusions_wordpress=1" in text[wordpress:]
    assert wordpress < text.index("Include /usr/share/modsecurity-crs/rules/*.conf")
    assert "SecAuditLog /var/log/apache2/modsec_audit.log" in text
    assert "sanitiseRequestHeader:Cookie" in text and "sanitiseArg:pwd" in text
    # Only the formula's settings: not Debian's /etc/modsecurity/*.conf.
    assert "/etc/modsecurity/*" not in text.split("</IfModule>")[0].split("<IfModule")[1]
