"""What outside auditors' tools find (issue 21): testssl.sh, ssh-audit, OCSP stapling.

A fresh host converges pillar.example with its certificates from Debian's
pebble (the test ACME CA).  pebble has no OCSP responder of its own but names
one in the certificates it issues if told (``ocspResponderURL``) and hands out
its intermediate CA's key: here ``openssl ocsp`` answers for it, on the host,
"good" for every certificate in mod_md's store.  First without the responder
(Apache serves as before, no staple), then with it (mod_md staples its answer).

Then this machine's ``testssl`` (Debian's testssl.sh) against two sites over
HTTPS (SNI) and ``ssh-audit`` against port 22, both run in the host's network
namespace only, as clients on the network.  testssl trusts pebble's roots
(``--add-ca``), so the chain is checked as a browser trusting the CA would.
No DNS lookups (``-n none``: a CAA record is the domain owner's business).
Findings from MEDIUM up, and any "VULNERABLE", fail the test except those in
TESTSSL_EXCLUDED (the test CA's doing, not the server's); ssh-audit's failures
fail it, its warnings must be the known ones (SSH_WARNINGS).  Both print a
summary in the run's output.  What made testssl's BREACH finding go (answers
to another site's requests are not compressed) is checked with curl.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from e2e.helpers import apply, failed
from testhost import Host
from testhost.acme import Pebble, wait_for_certificates

pytestmark = pytest.mark.e2e

#: The certificates of pillar.example (mod_md's names) and the two sites testssl audits:
#: a WordPress site with HSTS, and a PHP site.
MDS = ("www.alice.example", "wiki.alice.example", "shop.bob.example", "bob.example",
       "stats.coop.example")  # fmt: skip
AUDITED = ("www.alice.example", "shop.bob.example")
OCSP_PORT = 4002
OCSP_UNIT = "webarch-test-ocsp"

#: The test's OCSP responder: pebble's intermediate CA (key from its management API)
#: signs "good" for every certificate in mod_md's store ($1: the port).
OCSP_SCRIPT = r"""
set -eu
dir=/run/webarch-test-ocsp
mkdir -p "$dir"
cd "$dir"
api="--cacert /etc/webarch-pebble/api-ca.pem -fsS https://localhost:15000"
curl $api/intermediates/0 > ca.pem
(umask 077 && curl $api/intermediate-keys/0 > ca.key)
: > index.txt
for pem in /etc/apache2/md/domains/*/pubcert.pem; do
    serial=$(openssl x509 -in "$pem" -noout -serial | cut -d= -f2)
    end=$(date -u -d "$(openssl x509 -in "$pem" -noout -enddate | cut -d= -f2)" +%y%m%d%H%M%SZ)
    md=$(basename "$(dirname "$pem")")  # (pebble 2.6 leaves the subject empty)
    printf 'V\t%s\t\t%s\tunknown\t/CN=%s\n' "$end" "$serial" "$md" >> index.txt
done
echo "unique_subject = no" > index.txt.attr
systemd-run --quiet --unit webarch-test-ocsp --working-directory "$dir" \
    openssl ocsp -index index.txt -port "$1" -CA ca.pem -rsigner ca.pem -rkey ca.key -nmin 60
"""

#: testssl findings that do not fail the test, and why.
TESTSSL_EXCLUDED = {
    "cert_validityPeriod": "pebble's certificates are valid for 5 years (Let's Encrypt's 90 days)",
}
#: Severities that fail the test (testssl also has OK, INFO, LOW, WARN, DEBUG).
FAILING = ("MEDIUM", "HIGH", "CRITICAL", "FATAL")
#: What the TLS configuration must offer (RSA certificates: the ECDSA suites stay unused).
SUITES = {
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}
#: ssh-audit's (Debian 12's 2.5.0) warnings that are accepted, and why.
SSH_WARNINGS = {
    "sntrup761x25519-sha512@openssh.com": "post-quantum hybrid, OpenSSH's default since 9.0"
    " (ssh-audit 2.5 calls it experimental)",
    "sntrup761x25519-sha512": "the same under its standard name (OpenSSH 9.9)",
    "mlkem768x25519-sha256": "post-quantum hybrid, OpenSSH's default since 10.0"
    " (unknown to ssh-audit 2.5)",
    "kex-strict-s-v00@openssh.com": "the Terrapin countermeasure (unknown to ssh-audit 2.5)",
}


class OcspPebble(Pebble):
    """pebble naming the test's OCSP responder in the certificates it issues."""

    def config(self) -> dict[str, object]:
        config = super().config()
        config["pebble"]["ocspResponderURL"] = f"http://127.0.0.1:{OCSP_PORT}"  # type: ignore[index]
        return config


@pytest.fixture(scope="module")
def pebble(host: Host) -> Pebble:
    server = OcspPebble(host)
    server.start()
    return server


@pytest.fixture(scope="module")
def audited(host: Host, example_pillar: dict, pebble: Pebble) -> Host:
    """The host converged from pillar.example, every site on its certificate from pebble."""
    pillar = copy.deepcopy(example_pillar)
    pillar["webarch"]["acme"] = {
        "directory": pebble.directory_url,
        "ca_file": pebble.ca_file_in_host,
        "contact": "hostmaster@coop.example",
        "ocsp_stapling": True,
    }
    assert failed(apply(host, pillar)) == {}
    wait_for_certificates(host, MDS)
    return host


@pytest.fixture(scope="module")
def roots(pebble: Pebble, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pebble.fetch_roots(tmp_path_factory.mktemp("audit") / "pebble-roots.pem")


@pytest.fixture(scope="module")
def responder(audited: Host) -> Iterator[None]:
    """The OCSP responder running, and Apache reloaded (mod_md asks at once)."""
    audited.run(["sh", "-c", OCSP_SCRIPT, "sh", str(OCSP_PORT)], check=True)
    audited.run(["systemctl", "reload", "apache2"], check=True)
    yield
    audited.run(["systemctl", "stop", OCSP_UNIT])


def handshake(host: Host, name: str) -> tuple[float, str]:
    """Seconds of a TLS handshake asking for the certificate's status, and openssl's report."""
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:443", "-servername", name, "-status"]
    start = time.monotonic()
    out = host.net_run(["sh", "-c", '"$@" </dev/null 2>&1', "sh", *cmd], timeout=30).stdout
    return time.monotonic() - start, out


def md_errors(host: Host, since: str) -> list[str]:
    """mod_md's error lines in Apache's server-wide log since ``since`` (YYYY-mm-dd HH:MM:SS)."""
    lines = host.run(["cat", "/var/log/apache2/webarch-other-error.log"]).stdout.splitlines()
    stamp = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")
    return [
        line
        for line in lines
        if "[md:error]" in line and (m := stamp.search(line)) and m.group(1) >= since
    ]


def host_now(host: Host) -> str:
    return host.run(["date", "+%Y-%m-%d %H:%M:%S"], check=True).stdout.strip()


def test_without_a_responder_apache_serves_as_before(audited, roots):
    since = host_now(audited)
    audited.run(["systemctl", "reload", "apache2"], check=True)
    # Stapling is on and the certificates name the responder, which is not running.
    conf = audited.read_file("/etc/apache2/conf-available/webarch.conf")
    assert "\nMDStapling on\n" in conf
    cert = "/etc/apache2/md/domains/www.alice.example/pubcert.pem"
    aia = audited.run(["openssl", "x509", "-in", cert, "-noout", "-ext", "authorityInfoAccess"])
    assert f"OCSP - URI:http://127.0.0.1:{OCSP_PORT}" in aia.stdout, aia.stdout
    for name in AUDITED:
        seconds, report = handshake(audited, name)
        assert "OCSP response: no response sent" in report, report
        assert seconds < 2, f"{name}: handshake took {seconds:.1f} s"
        curl = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(roots),
                "--resolve", f"{name}:443:127.0.0.1", f"https://{name}/"]  # fmt: skip
        page = audited.net_run(curl)
        assert page.stdout.isdigit() and 200 <= int(page.stdout) < 500, (name, page.stderr)
    assert md_errors(audited, since) == []


@pytest.mark.usefixtures("responder")
def test_the_cas_ocsp_answer_is_stapled(audited):
    since = host_now(audited)
    for name in AUDITED:
        deadline = time.monotonic() + 30
        while True:
            seconds, report = handshake(audited, name)
            if "OCSP Response Status: successful" in report or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        journal = ["journalctl", "-u", OCSP_UNIT, "-n", "20", "--no-pager", "-o", "cat"]
        assert "OCSP Response Status: successful" in report, audited.run(journal).stdout + report
        assert "Cert Status: good" in report, report
        assert seconds < 2, f"{name}: handshake took {seconds:.1f} s"
    assert md_errors(audited, since) == []


def run_testssl(host: Host, name: str, roots: Path, jsonfile: Path) -> tuple[float, list[dict]]:
    """testssl's findings for the HTTPS site ``name`` (SNI; no DNS: the host's loopback)."""
    cmd = ["testssl", "--quiet", "--color", "0", "--warnings", "off", "-n", "none",
           "--ip", "127.0.0.1", "--add-ca", str(roots), "--jsonfile", str(jsonfile),
           "-p", "-e", "-U", "-S", "-h", f"https://{name}/"]  # fmt: skip
    start = time.monotonic()
    run = host.net_run(cmd, timeout=400)
    seconds = time.monotonic() - start
    assert jsonfile.exists(), f"testssl wrote no findings:\n{run.stdout[-3000:]}\n{run.stderr}"
    return seconds, json.loads(jsonfile.read_text())


def vulnerable(finding: dict) -> bool:
    """A finding that testssl calls (potentially) vulnerable or rates MEDIUM or worse."""
    text = finding["finding"].lower()
    return finding["severity"] in FAILING or ("vulnerable" in text and "not vulnerable" not in text)


@pytest.mark.usefixtures("responder")
def test_testssl_finds_nothing_vulnerable(audited, roots, tmp_path, request):
    with ThreadPoolExecutor(len(AUDITED)) as pool:
        runs = dict(
            zip(
                AUDITED,
                pool.map(lambda n: run_testssl(audited, n, roots, tmp_path / f"{n}.json"), AUDITED),
                strict=True,
            )
        )
    lines, problems = [], []
    for name, (seconds, findings) in runs.items():
        by_id = {f["id"]: f["finding"] for f in findings}
        # TLS 1.2 and 1.3 only.
        assert {by_id[p] for p in ("SSLv2", "SSLv3", "TLS1", "TLS1_1")} == {"not offered"}, by_id
        assert by_id["TLS1_2"] == "offered" and by_id["TLS1_3"].startswith("offered"), by_id
        # The suites offered (the RFC name ends each -e finding): AEAD only, no CBC.
        suites = {f["finding"].split()[-1] for f in findings if f["id"].startswith("cipher_x")}
        assert suites == SUITES, (name, sorted(suites))
        assert not [s for s in suites if "CBC" in s]
        assert by_id["OCSP_stapling"] == "offered", by_id["OCSP_stapling"]
        assert by_id["cert_chain_of_trust"].startswith("passed"), by_id["cert_chain_of_trust"]
        assert by_id["BREACH"].startswith("not vulnerable"), by_id["BREACH"]
        bad = [f for f in findings if vulnerable(f) and f["id"] not in TESTSSL_EXCLUDED]
        problems += [f"{name}: {f['id']} {f['severity']} {f['finding']}" for f in bad]
        low = [f"{f['id']} {f['finding']}" for f in findings if f["severity"] == "LOW"]
        lines.append(
            f"testssl {name}: {len(findings)} findings in {seconds:.0f} s, "
            f"{len(bad)} vulnerable/MEDIUM+; TLS1_2 {by_id['TLS1_2']}, TLS1_3 {by_id['TLS1_3']}; "
            f"{len(suites)} suites, none CBC; OCSP stapling {by_id['OCSP_stapling']}; "
            f"LOW: {'; '.join(low) or 'none'}"
        )
        lines += [
            f"  excluded: {f['id']} {f['severity']} {f['finding']!r}: {TESTSSL_EXCLUDED[f['id']]}"
            for f in findings
            if vulnerable(f) and f["id"] in TESTSSL_EXCLUDED
        ]
    request.config.webarch_summaries.append("\n".join(lines))
    print("\n".join(lines))
    assert problems == []


def test_cross_site_requests_get_no_compression(audited, roots):
    """BREACH: no compressed answer for another site's request; the site's own are."""
    name = "www.alice.example"
    base = ["curl", "-sS", "-o", "/dev/null", "-D", "-", "--cacert", str(roots),
            "--resolve", f"{name}:443:127.0.0.1", "-H", "Accept-Encoding: gzip"]  # fmt: skip
    cases = {
        (): True,
        ("-H", f"Referer: https://{name}/about/"): True,
        ("-H", "Sec-Fetch-Site: same-origin"): True,
        ("-H", "Referer: https://google.com/"): False,
        ("-H", f"Referer: https://{name}.evil.example/"): False,
        ("-H", "Sec-Fetch-Site: cross-site", "-H", f"Referer: https://{name}/"): False,
    }
    # testssl (the test before) ends with probes that can keep Apache's connections
    # busy for a while on a loaded machine (once: Debian 13, both suites running, a
    # request hung 120 s): wait up to three minutes for the first answer.
    for _ in range(9):
        first = audited.net_run([*base, "--max-time", "20", f"https://{name}/"])
        if first.stdout.lower().startswith("http/"):
            break
    for args, compressed in cases.items():
        head = audited.net_run([*base, *args, f"https://{name}/"]).stdout.lower()
        assert head.startswith("http/"), head
        assert ("content-encoding: gzip" in head) is compressed, (args, head)
        assert "referer" not in head and "sec-fetch-site" not in head, head  # no Vary on them


def ssh_notes(report: str) -> list[tuple[str, str, str]]:
    """ssh-audit's failures and warnings: (algorithm, fail|warn, text), notes under an
    algorithm's line included."""
    notes, algorithm = [], ""
    for line in report.splitlines():
        if head := re.match(r"^\(\w+\) (\S+)", line):
            algorithm = head.group(1)
        if note := re.search(r"-- \[(fail|warn)\] (.*)$", line):
            notes.append((algorithm, note.group(1), note.group(2).strip()))
    return notes


def test_ssh_audit_finds_no_failure(audited, request):
    run = audited.net_run(["ssh-audit", "-n", "-p", "22", "127.0.0.1"], timeout=60)
    out = run.stdout
    assert "(kex) curve25519-sha256" in out, out + run.stderr  # it did talk to sshd
    notes = ssh_notes(out)
    fails = [note for note in notes if note[1] == "fail"]
    summary = [f"ssh-audit 127.0.0.1:22: exit {run.returncode}, {len(fails)} failures"]
    summary += [f"  [{level}] {alg}: {text}" for alg, level, text in notes]
    summary += [f"  {line}" for line in out.splitlines() if line.startswith("(rec)")]
    request.config.webarch_summaries.append("\n".join(summary))
    print(out)
    assert fails == [] and "[fail]" not in out and run.returncode != 3, out
    unknown = [alg for alg, _, _ in notes if alg not in SSH_WARNINGS]
    assert unknown == [], out
