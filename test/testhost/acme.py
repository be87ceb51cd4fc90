"""Real ACME certificates on a test host: Debian's ``pebble`` test CA and Apache's mod_md.

Pebble runs inside the host as a systemd unit on loopback; mod_md orders one certificate
per ``MDomain`` from it, exactly as from Let's Encrypt::

    pebble = Pebble(host)
    pebble.start()
    host.write_file("/etc/apache2/conf-available/acme.conf", pebble.apache_config())
    ...  # a2enmod ssl md; vhosts with MDomain + SSLEngine on; *:80 vhost; names in /etc/hosts
    host.run(["systemctl", "restart", "apache2"], check=True)
    wait_for_certificates(host, ["www.alice.example"])  # staged, graceful reload, served
    roots = pebble.fetch_roots(tmp_path / "pebble-roots.pem")  # for curl --cacert
    cert = served_certificate(host, "www.alice.example", cafile=roots)

Facts this relies on (Debian 12, Apache 2.4 with mod_md 2.6, pebble 2.4):

* pebble serves its ACME API over HTTPS only, with a key pair given in its config; mod_md
  must trust it through ``MDCACertificateFile`` (:attr:`Pebble.ca_file_in_host`).
* pebble makes a new root and intermediate CA at every start: fetch the roots again
  (:meth:`Pebble.fetch_roots`) after a restart of its unit or a reboot of the host.
* mod_md needs ``MDContactEmail`` (or a ``ServerAdmin`` in scope) and
  ``MDCertificateAgreement accepted`` (pebble announces terms of service), else it
  records an error in ``<store>/staging/<md>/job.json`` and retries later.
* Debian's mod_md store is ``/etc/apache2/md`` (``MDStoreDir`` defaults to ``md`` below the
  ServerRoot). A new certificate is written to ``staging/<md>/`` and served only after a
  graceful restart, which moves it to ``domains/<md>/``. Until then mod_md serves a
  self-signed "Apache Managed Domain Fallback" certificate and HTTPS answers 503.
* With ``always_valid=False`` pebble really validates http-01 challenges: it resolves the
  names through the host's /etc/hosts and fetches the token from Apache on port 80.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .host import Host, HostError

#: mod_md's certificate store on Debian (``MDStoreDir md`` relative to ServerRoot /etc/apache2).
MD_STORE_DIR = "/etc/apache2/md"

#: Writes the test CA and pebble's API key pair into $1 unless they are there already.
_KEYGEN_SCRIPT = r"""
set -eu
dir=$1 days=$2
mkdir -p "$dir"
cd "$dir"
[ -s api-ca.pem ] && [ -s api-cert.pem ] && [ -s api-key.pem ] && exit 0
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout api-ca.key -out api-ca.pem -days "$days" -subj "/CN=webarch test ACME API CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout api-key.pem -out api.csr -subj "/CN=localhost"
printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1' \
    'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' \
    'extendedKeyUsage=serverAuth' > api.ext
openssl x509 -req -in api.csr -CA api-ca.pem -CAkey api-ca.key -set_serial 1 \
    -days "$days" -extfile api.ext -out api-cert.pem
rm -f api.csr api.ext
chmod 644 api-ca.pem api-cert.pem
"""

#: Prints "<md> <state> <sha256 of each pubcert*.pem>" per MD name given after the store dir.
#: state: staged (new certificate waiting for a graceful restart), active, or none.
_STORE_SCRIPT = r"""
store=$1; shift
for md in "$@"; do
    state=none dir=
    if ls "$store/staging/$md"/pubcert*.pem >/dev/null 2>&1; then
        state=staged dir=$store/staging/$md
    elif ls "$store/domains/$md"/pubcert*.pem >/dev/null 2>&1; then
        state=active dir=$store/domains/$md
    fi
    line="$md $state"
    if [ -n "$dir" ]; then
        for pem in "$dir"/pubcert*.pem; do
            fp=$(openssl x509 -in "$pem" -noout -fingerprint -sha256 | sed 's/.*=//')
            line="$line $fp"
        done
    fi
    echo "$line"
done
"""

#: Prints the sha256 fingerprint of the certificate served for SNI name $1 at $2 (host:port).
_SERVED_SCRIPT = r"""
openssl s_client -connect "$2" -servername "$1" </dev/null 2>/dev/null \
    | openssl x509 -noout -fingerprint -sha256 | sed 's/.*=//'
"""


class AcmeError(HostError):
    """Pebble did not come up, or mod_md did not get or activate its certificates in time."""


@dataclass
class Pebble:
    """Debian's ``pebble`` ACME test server, run as a systemd unit inside a test host.

    ``always_valid`` sets PEBBLE_VA_ALWAYS_VALID (accept every challenge without a check);
    with False pebble validates http-01 on ``http_port``/tls-alpn-01 on ``tls_port`` of the
    names as the host resolves them.  ``extra_env`` adds or overrides PEBBLE_* variables.
    """

    host: Host
    conf_dir: str = "/etc/webarch-pebble"
    unit: str = "webarch-pebble.service"
    listen_address: str = "127.0.0.1"
    acme_port: int = 14000
    management_port: int = 15000
    http_port: int = 80
    tls_port: int = 443
    always_valid: bool = True
    extra_env: Mapping[str, str] | None = None
    key_days: int = 365

    @property
    def directory_url(self) -> str:
        """The ACME directory URL, for ``MDCertificateAuthority``."""
        return f"https://localhost:{self.acme_port}/dir"

    @property
    def management_url(self) -> str:
        """Base URL of pebble's management API (``/roots/0``, ``/intermediates/0``...)."""
        return f"https://localhost:{self.management_port}"

    @property
    def ca_file_in_host(self) -> str:
        """The CA that signed pebble's API certificate, for ``MDCACertificateFile``."""
        return f"{self.conf_dir}/api-ca.pem"

    @property
    def config_path(self) -> str:
        """pebble's JSON config file in the host."""
        return f"{self.conf_dir}/pebble-config.json"

    def environment(self) -> dict[str, str]:
        """The PEBBLE_* variables of the unit: fast and deterministic issuance."""
        env = {
            "PEBBLE_VA_ALWAYS_VALID": "1" if self.always_valid else "0",
            "PEBBLE_VA_NOSLEEP": "1",  # no random 0-15 s sleep before each validation
            "PEBBLE_WFE_NONCEREJECT": "0",  # default: reject 5% of good nonces
            "PEBBLE_AUTHZREUSE": "0",  # default: reuse valid authorizations 50% of the time
        }
        env.update(self.extra_env or {})
        return env

    def config(self) -> dict[str, object]:
        """pebble's JSON config."""
        return {
            "pebble": {
                "listenAddress": f"{self.listen_address}:{self.acme_port}",
                "managementListenAddress": f"{self.listen_address}:{self.management_port}",
                "certificate": f"{self.conf_dir}/api-cert.pem",
                "privateKey": f"{self.conf_dir}/api-key.pem",
                "httpPort": self.http_port,
                "tlsPort": self.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }

    def unit_text(self) -> str:
        """The systemd unit running pebble (ordered before apache2 for boots)."""
        env = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(self.environment().items()))
        return (
            "[Unit]\n"
            "Description=pebble ACME test server (webarch tests)\n"
            "Before=apache2.service\n\n"
            "[Service]\n"
            "Type=exec\n"
            f"Environment={env}\n"
            f"ExecStart=/usr/bin/pebble -config {self.config_path} -strict=false\n\n"
            "[Install]\n"
            "WantedBy=multi-user.target\n"
        )

    def apache_config(self, contact: str = "hostmaster@example.org") -> str:
        """The global mod_md directives that make Apache order its certificates here."""
        return (
            f"MDCertificateAuthority {self.directory_url}\n"
            f"MDCACertificateFile {self.ca_file_in_host}\n"
            f"MDContactEmail {contact}\n"
            "MDCertificateAgreement accepted\n"
        )

    def start(self, timeout: float = 30.0, enable: bool = True) -> None:
        """Create keys (once), write config and unit, (re)start pebble, wait for its API.

        enable=True also starts it at boot (before apache2); it then has new roots.
        """
        self.host.run(
            ["sh", "-c", _KEYGEN_SCRIPT, "sh", self.conf_dir, str(self.key_days)], check=True
        )
        self.host.write_file(self.config_path, json.dumps(self.config(), indent=2) + "\n")
        self.host.write_file(f"/etc/systemd/system/{self.unit}", self.unit_text())
        self.host.run(["systemctl", "daemon-reload"], check=True)
        if enable:
            self.host.run(["systemctl", "enable", "--quiet", self.unit], check=True)
        self.host.run(["systemctl", "restart", self.unit], check=True)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the ACME directory and the management API answer."""
        deadline = time.monotonic() + timeout
        urls = (self.directory_url, f"{self.management_url}/roots/0")
        while True:
            if all(self._curl(url).returncode == 0 for url in urls):
                return
            if time.monotonic() > deadline:
                raise AcmeError(
                    f"pebble does not answer at {self.directory_url} after {timeout:.0f}s\n"
                    + self._journal()
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop pebble (its CA is gone with it) and disable its unit."""
        self.host.run(["systemctl", "disable", "--now", "--quiet", self.unit], check=True)

    def fetch_roots(self, local_path: Path) -> Path:
        """Save pebble's current root and intermediate CA (PEM) to ``local_path`` on this machine.

        The file is a ``curl --cacert`` / ``openssl -CAfile`` bundle for the certificates
        pebble issues.  It changes whenever pebble restarts.
        """
        pems = []
        for what in ("roots/0", "intermediates/0"):
            proc = self._curl(f"{self.management_url}/{what}")
            if proc.returncode != 0:
                raise AcmeError(f"cannot fetch pebble's {what}: {proc.stderr.strip()}")
            pems.append(proc.stdout.strip() + "\n")
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        local_path.write_text("".join(pems))
        return local_path

    def _curl(self, url: str) -> subprocess.CompletedProcess[str]:
        """GET ``url`` in the host, trusting pebble's API CA."""
        cmd = ["curl", "-fsS", "--max-time", "5", "--cacert", self.ca_file_in_host, url]
        return self.host.run(cmd, timeout=30)

    def _journal(self) -> str:
        """The end of the unit's journal (for error messages)."""
        cmd = ["journalctl", "-u", self.unit, "-n", "30", "--no-pager", "-o", "cat"]
        return self.host.run(cmd).stdout


def store_state(
    host: Host, domains: Iterable[str], store_dir: str = MD_STORE_DIR
) -> dict[str, tuple[str, tuple[str, ...]]]:
    """mod_md's store for each MD name: (``staged``|``active``|``none``, sha256 fingerprints).

    ``staged``: a new certificate waits in staging/ for a graceful restart; ``active``: the
    certificate in domains/ (loaded at the last (re)start); fingerprints are of pubcert*.pem.
    """
    proc = host.run(["sh", "-c", _STORE_SCRIPT, "sh", store_dir, *domains], check=True)
    state = {}
    for line in proc.stdout.splitlines():
        md, status, *fingerprints = line.split()
        state[md] = (status, tuple(fingerprints))
    return state


def wait_for_certificates(
    host: Host,
    domains: Sequence[str],
    timeout: float = 120.0,
    reload: bool = True,
    https_address: str | None = "127.0.0.1:443",
    store_dir: str = MD_STORE_DIR,
) -> dict[str, tuple[str, ...]]:
    """Wait until mod_md got a certificate for each MD name in ``domains`` and activate them.

    ``domains`` are the MD names: the first name of each ``MDomain`` (the store's directory
    names).  A certificate counts once its files are in staging/ and its job.json says
    finished (or it is in domains/ already).  Then, with ``reload``, this does
    ``systemctl reload apache2`` (graceful) when anything was staged, waits until mod_md
    moved it to domains/ and, unless ``https_address`` is None, until Apache serves it there
    for each name as SNI.  With reload=False the caller must do the graceful restart.

    Returns the sha256 fingerprints of each domain's certificate(s); raises AcmeError with
    mod_md's last error per domain on timeout.
    """
    deadline = time.monotonic() + timeout
    state = _wait_store(host, domains, deadline, store_dir, accept=("staged", "active"))
    if not reload:
        return {md: fps for md, (_, fps) in state.items()}
    if any(status == "staged" for status, _ in state.values()):
        host.run(["systemctl", "reload", "apache2"], check=True)
        state = _wait_store(host, domains, deadline, store_dir, accept=("active",))
    if https_address is not None:
        for md, (_, fingerprints) in state.items():
            _wait_served(host, md, fingerprints, https_address, deadline)
    return {md: fps for md, (_, fps) in state.items()}


def _wait_store(
    host: Host,
    domains: Sequence[str],
    deadline: float,
    store_dir: str,
    accept: tuple[str, ...],
) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Poll the store until every MD is in an ``accept`` state (staged ones: job finished)."""
    while True:
        state = store_state(host, domains, store_dir)
        ready = [
            md
            for md, (status, _) in state.items()
            if status in accept
            and (status != "staged" or _job(host, f"{store_dir}/staging/{md}").get("finished"))
        ]
        if len(ready) == len(domains):
            return state
        if time.monotonic() > deadline:
            missing = [md for md in domains if md not in ready]
            raise AcmeError(
                f"mod_md has no certificate ({' or '.join(accept)}) for {missing}:\n"
                + _diagnose(host, missing, store_dir)
            )
        time.sleep(0.25)


def _wait_served(
    host: Host, name: str, fingerprints: Sequence[str], address: str, deadline: float
) -> None:
    """Wait until ``address`` serves one of ``fingerprints`` for SNI ``name``."""
    served = ""
    while True:
        proc = host.run(["sh", "-c", _SERVED_SCRIPT, "sh", name, address], timeout=30)
        served = proc.stdout.strip()
        if served in fingerprints:
            return
        if time.monotonic() > deadline:
            raise AcmeError(
                f"{address} serves {served or 'nothing'} for {name}, not {list(fingerprints)}"
            )
        time.sleep(0.2)


def _job(host: Host, directory: str) -> dict:
    """mod_md's job.json of a staging or domains directory ({} if missing or unreadable)."""
    proc = host.run(["cat", f"{directory}/job.json"])
    try:
        job = json.loads(proc.stdout) if proc.returncode == 0 else {}
    except json.JSONDecodeError:  # being rewritten
        return {}
    return job if isinstance(job, dict) else {}


def _diagnose(host: Host, domains: Iterable[str], store_dir: str) -> str:
    """mod_md's last problem per domain and the end of Apache's error log."""
    lines = []
    for md in domains:
        job = _job(host, f"{store_dir}/staging/{md}")
        last = job.get("last", {})
        detail = last.get("detail") or last.get("problem") or "no job in staging"
        lines.append(f"{md}: errors={job.get('errors', 0)} {detail}")
    log = host.run(["tail", "-n", "15", "/var/log/apache2/error.log"]).stdout
    return "\n".join(lines) + "\n--- /var/log/apache2/error.log ---\n" + log


@dataclass(frozen=True)
class ServedCertificate:
    """What a TLS client sees: the leaf certificate, ALPN result and chain verification."""

    subject: str
    issuer: str
    names: tuple[str, ...]
    sha256: str
    alpn: str | None
    verified: bool


def served_certificate(
    host: Host,
    servername: str,
    cafile: Path | None = None,
    address: str = "127.0.0.1:443",
    alpn: Sequence[str] = ("h2", "http/1.1"),
) -> ServedCertificate:
    """Connect from outside (this machine's openssl in the host's network) and describe the
    certificate served for SNI ``servername``; ``verified`` is against ``cafile`` if given.

    Names are RFC 2253 strings (``CN=...``); ``names`` are the DNS subjectAltNames.
    """
    cmd = ["openssl", "s_client", "-connect", address, "-servername", servername]
    if alpn:
        cmd += ["-alpn", ",".join(alpn)]
    if cafile is not None:
        cmd += ["-CAfile", str(cafile), "-verify_hostname", servername]
    # h2 servers send a SETTINGS frame right after the handshake: keep printable text only.
    script = '"$@" </dev/null 2>&1 | LC_ALL=C tr -cd "\\11\\12\\15\\40-\\176"'
    proc = host.net_run(["sh", "-c", script, "sh", *cmd], timeout=30)
    out = proc.stdout
    begin, end = out.find("-----BEGIN CERTIFICATE-----"), out.find("-----END CERTIFICATE-----")
    if begin < 0 or end < 0:
        raise AcmeError(f"no certificate from {address} for {servername}:\n{out}")
    pem = out[begin : end + len("-----END CERTIFICATE-----")] + "\n"
    fields_cmd = ["openssl", "x509", "-noout", "-nameopt", "RFC2253", "-subject", "-issuer"]
    fields_cmd += ["-ext", "subjectAltName", "-fingerprint", "-sha256"]
    text = subprocess.run(fields_cmd, input=pem, capture_output=True, text=True, check=True).stdout
    fields: dict[str, str] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(("subject=", "issuer=")):
            key, _, value = line.partition("=")
            fields[key] = value.strip()
        elif "Fingerprint=" in line:
            fields["sha256"] = line.partition("=")[2].strip()
        elif line.startswith("X509v3 Subject Alternative Name") and i + 1 < len(lines):
            fields["san"] = lines[i + 1].strip()
    san = [part.strip() for part in fields.get("san", "").split(",")]
    negotiated = None
    for line in out.splitlines():
        if line.startswith("ALPN protocol:"):
            negotiated = line.partition(":")[2].strip()
    return ServedCertificate(
        subject=fields.get("subject", ""),
        issuer=fields.get("issuer", ""),
        names=tuple(s.removeprefix("DNS:") for s in san if s.startswith("DNS:")),
        sha256=fields.get("sha256", ""),
        alpn=negotiated,
        verified=cafile is not None and "Verify return code: 0 (ok)" in out,
    )


def pem_subjects(path: Path) -> list[str]:
    """RFC 2253 subjects of the certificates in a PEM bundle on this machine, in order."""
    text = Path(path).read_text()
    subjects = []
    marker = "-----END CERTIFICATE-----"
    for block in text.split(marker)[:-1]:
        cmd = ["openssl", "x509", "-noout", "-nameopt", "RFC2253", "-subject"]
        pem = block + marker + "\n"
        proc = subprocess.run(cmd, input=pem, capture_output=True, text=True, check=True)
        subjects.append(proc.stdout.strip().removeprefix("subject="))
    return subjects
