"""End-to-end: Apache's mod_md gets real ACME certificates from pebble on a test host.

Hand-written Apache config (not the formula): two name-based HTTPS sites, each with its own
MDomain, and a port 80 vhost.  Asserts what a client on another machine sees.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from testhost import Host
from testhost.acme import (
    Pebble,
    ServedCertificate,
    pem_subjects,
    served_certificate,
    wait_for_certificates,
)

pytestmark = pytest.mark.e2e

#: MD name -> all names of the site (one certificate each, with exactly these names).
SITES: dict[str, tuple[str, ...]] = {
    "www.alice.example": ("www.alice.example", "alice.example"),
    "shop.bob.example": ("shop.bob.example",),
}
DOCROOTS = {"www.alice.example": "/srv/www/alice", "shop.bob.example": "/srv/www/bob"}

VHOSTS = """\
MDomain www.alice.example alice.example
MDomain shop.bob.example

<Directory /srv/www>
    Require all granted
</Directory>

<VirtualHost *:80>
    ServerName www.alice.example
    ServerAlias alice.example
    DocumentRoot /srv/www/alice
</VirtualHost>

<VirtualHost *:80>
    ServerName shop.bob.example
    DocumentRoot /srv/www/bob
</VirtualHost>

<VirtualHost *:443>
    ServerName www.alice.example
    ServerAlias alice.example
    DocumentRoot /srv/www/alice
    SSLEngine on
</VirtualHost>

<VirtualHost *:443>
    ServerName shop.bob.example
    DocumentRoot /srv/www/bob
    SSLEngine on
</VirtualHost>
"""

CAROL_VHOST = """\
MDomain blog.carol.example
<VirtualHost *:443>
    ServerName blog.carol.example
    DocumentRoot /srv/www/carol
    SSLEngine on
</VirtualHost>
"""


@dataclass
class Acme:
    """The running host with pebble and Apache, and what was seen on the way."""

    host: Host
    pebble: Pebble
    roots: Path
    fingerprints: dict[str, tuple[str, ...]]
    fallback: ServedCertificate
    fallback_status: str
    timings: dict[str, float] = field(default_factory=dict)


def body(site: str) -> str:
    """The index.html text of a site."""
    return f"hello from {site}\n"


def curl(host: Host, *args: str) -> tuple[str, str]:
    """This machine's curl in the host's network: (body, 'http_version http_code')."""
    cmd = ["curl", "-sS", "--max-time", "10", "-w", "\n%{http_version} %{http_code}", *args]
    proc = host.net_run(cmd)
    assert proc.returncode == 0, proc.stderr
    text, _, status = proc.stdout.rpartition("\n")
    return text, status


def resolve(name: str, port: int) -> list[str]:
    """curl options reaching ``name`` on the host's loopback."""
    return ["--resolve", f"{name}:{port}:127.0.0.1"]


@pytest.fixture(scope="module")
def acme(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Acme]:
    """A host with pebble and Apache serving both sites with their ACME certificates."""
    host = Host("wa-pebble", image, formula_dir=None)
    with host:
        pebble = Pebble(host)
        pebble.start()
        names = " ".join(n for site in SITES.values() for n in site)
        hosts = host.read_file("/etc/hosts") + f"127.0.0.1\t{names} blog.carol.example\n"
        host.write_file("/etc/hosts", hosts)
        for md, root in DOCROOTS.items():
            host.write_file(f"{root}/index.html", body(md))
        host.write_file("/etc/apache2/conf-available/acme.conf", pebble.apache_config())
        host.write_file("/etc/apache2/sites-available/sites.conf", VHOSTS)
        host.run(["a2enmod", "-q", "ssl", "md", "http2", "headers"], check=True)
        host.run(["a2enconf", "-q", "acme"], check=True)
        host.run(["a2ensite", "-q", "sites"], check=True)

        start = time.monotonic()
        host.run(["systemctl", "restart", "apache2"], check=True)
        fallback = served_certificate(host, "shop.bob.example")
        _, fallback_status = curl(
            host, "-k", *resolve("shop.bob.example", 443), "https://shop.bob.example/"
        )
        wait_for_certificates(host, list(SITES), reload=False)
        staged = time.monotonic()
        fingerprints = wait_for_certificates(host, list(SITES))
        served = time.monotonic()

        roots = pebble.fetch_roots(tmp_path_factory.mktemp("acme") / "pebble-roots.pem")
        timings = {"staged": staged - start, "served": served - staged}
        print(
            f"\nmod_md: certificates staged {timings['staged']:.2f}s after Apache start, "
            f"served {timings['served']:.2f}s after that"
        )
        yield Acme(host, pebble, roots, fingerprints, fallback, fallback_status, timings)


def test_fallback_certificate_before_issuance(acme):
    assert acme.fallback.issuer == acme.fallback.subject == "CN=Apache Managed Domain Fallback"
    assert acme.fallback.names == ("shop.bob.example",)
    assert acme.fallback_status.split()[1] == "503"


def test_issuance_is_quick(acme):
    assert acme.timings["staged"] < 30
    assert acme.timings["served"] < 10


@pytest.mark.parametrize("md", SITES)
def test_each_site_has_its_own_pebble_certificate(acme, md):
    root, intermediate = pem_subjects(acme.roots)
    assert root.startswith("CN=Pebble Root CA")
    for name in SITES[md]:
        cert = served_certificate(acme.host, name, cafile=acme.roots)
        assert cert.verified, name
        assert cert.issuer == intermediate
        assert cert.subject in (f"CN={md}", "")  # pebble >= 2.5 (Debian 13) sets no CN
        assert sorted(cert.names) == sorted(SITES[md])
        assert cert.sha256 in acme.fingerprints[md]
        assert cert.alpn == "h2"


def test_sites_have_different_certificates(acme):
    alice, bob = (acme.fingerprints[md] for md in SITES)
    assert alice and bob and not set(alice) & set(bob)


@pytest.mark.parametrize("name", [n for names in SITES.values() for n in names])
def test_https_with_h2(acme, name):
    md = next(md for md, names in SITES.items() if name in names)
    text, status = curl(
        acme.host, "--http2", "--cacert", str(acme.roots), *resolve(name, 443), f"https://{name}/"
    )
    assert (text, status) == (body(md), "2 200")


@pytest.mark.parametrize("name", [n for names in SITES.values() for n in names])
def test_port_80_answers(acme, name):
    text, status = curl(acme.host, *resolve(name, 80), f"http://{name}/")
    md = next(md for md, names in SITES.items() if name in names)
    assert (text, status) == (body(md), "1.1 200")


def test_new_site_with_real_http01_validation(acme, tmp_path):
    """A site added to the running server; pebble really validates http-01 on port 80.

    Restarts pebble (new CA): keep this test last in the module.
    """
    pebble = Pebble(acme.host, always_valid=False)
    pebble.start()
    roots = pebble.fetch_roots(tmp_path / "roots.pem")
    acme.host.write_file("/srv/www/carol/index.html", body("blog.carol.example"))
    acme.host.write_file("/etc/apache2/sites-available/carol.conf", CAROL_VHOST)
    acme.host.run(["a2ensite", "-q", "carol"], check=True)
    acme.host.run(["systemctl", "reload", "apache2"], check=True)
    wait_for_certificates(acme.host, ["blog.carol.example"])
    journal = acme.host.run(["journalctl", "-u", pebble.unit, "-o", "cat"]).stdout
    assert "Attempting to validate w/ HTTP: http://blog.carol.example:80/" in journal
    cert = served_certificate(acme.host, "blog.carol.example", cafile=roots)
    assert cert.verified and cert.names == ("blog.carol.example",)
    text, status = curl(
        acme.host,
        "--cacert",
        str(roots),
        *resolve("blog.carol.example", 443),
        "https://blog.carol.example/",
    )
    assert (text, status) == (body("blog.carol.example"), "2 200")
