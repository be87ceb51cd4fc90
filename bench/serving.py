"""Benchmark 3 of issue 8: requests per second, the formula's stack against the legacy one.

On one test host (the bench image: the test image plus mod_php and WordPress, see
``benchimage.py``), with the same account, files and database:

* new stack: the formula's Apache (event MPM, HTTP/2, mod_proxy_fcgi) on port 443 and
  the account's PHP-FPM pool (ondemand, in its chroot), exactly as the formula
  converges them;
* legacy stack: the old platform's way, a second Apache instance (own configuration
  in /etc/apache2-legacy, port 8443): prefork + mod_php, running as the account
  (``User``), per-site log files, ``AllowOverride All``.

Three pages, each over HTTPS: a static file (``static`` site), a PHP hello-world
(``www`` site) and WordPress's front page (Debian's WordPress copied into the ``wp``
site, installed into the account's database).  ``wrk`` (HTTP/1.1, 16 and 256
connections; WordPress at 16 only) runs on the host, the two stacks in alternation
(ABAB...) so that both see the same noise; the median of the rounds counts.
``h2load`` adds HTTP/2 on the new stack, compared with the legacy stack's wrk median
(HTTP/2 is what browsers speak to the new stack; the legacy stack has none).

Scenario ``default`` is the formula's pool (ondemand, 2 workers); scenario
``max_children_16`` measures the PHP pages again with a pool of 16 workers (prefork
runs one PHP per connection).  ``cpu`` lines give the CPU seconds of each systemd
unit (apache2, apache2-legacy, php*-fpm, mariadb; exited processes included) and of
the whole host during each measurement, and the host's CPU milliseconds per
request: the load generator runs outside the host's cgroup, so that figure is the
stack's own cost per request.

Run::

    PYTHONPATH=test .venv/bin/python bench/serving.py            # 3 rounds of 10 s
    PYTHONPATH=test .venv/bin/python bench/serving.py --quick    # 2 rounds of 4 s
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
import sys
import time

from benchimage import PHP_VERSIONS, ensure_bench_image
from common import (
    Host,
    apply_webarch,
    base_arguments,
    bench_account,
    bench_host,
    figure,
    progress,
    ratio,
    sh,
    target,
)

ACCOUNT = "user001"
HOME = f"/home/{ACCOUNT}"
NEW_PORT = 443
LEGACY_PORT = 8443

#: page -> (server name, path, text the answer must contain)
PAGES: dict[str, tuple[str, str, str]] = {
    "static": (f"static.{ACCOUNT}.example", "/page.html", "webarch static bench page"),
    "php_hello": (f"www.{ACCOUNT}.example", "/hello.php", "Hello, world!"),
    "wordpress": (f"wp.{ACCOUNT}.example", "/", "Hello world!"),
}

#: WordPress (tens of requests/s here) is measured up to this many connections.
SLOW_PAGE_CONNECTIONS = 32

#: The wider pool of the second measurement (as many PHP workers as wrk connections).
WIDE_POOL = 16

#: Targets of issue 8: new stack rps / legacy stack rps.
TARGETS: dict[str, float] = {"static": 2.0, "php_hello": 1.0, "wordpress": 1.0}

STATIC_PAGE = (
    "<!doctype html>\n<html><head><title>webarch static bench page</title></head><body>\n"
    + "<p>webarch static bench page: some ordinary text of an ordinary page.</p>\n" * 60
    + "</body></html>\n"
)

HELLO_PHP = '<?php\necho "Hello, world!\\n";\n'

WP_CONFIG = """<?php
/* Bench WordPress: the account's database through MariaDB's socket, as the account
   (unix_socket: no password).  Home and site URLs follow the request, so that both
   stacks (ports 443 and 8443) serve the same install without redirects. */
define('DB_NAME', '{db}');
define('DB_USER', '{user}');
define('DB_PASSWORD', '');
define('DB_HOST', 'localhost');
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
define('WP_HOME', 'https://' . $_SERVER['HTTP_HOST']);
define('WP_SITEURL', 'https://' . $_SERVER['HTTP_HOST']);
define('DISABLE_WP_CRON', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_HTTP_BLOCK_EXTERNAL', true);
{salts}
$table_prefix = 'wp_';
define('WP_DEBUG', false);
if (!defined('ABSPATH')) {{ define('ABSPATH', __DIR__ . '/'); }}
require_once ABSPATH . 'wp-settings.php';
"""

LEGACY_CONF = """# The old platform's web stack, for the serving benchmark only: prefork + mod_php,
# running as the account, a log file per site, .htaccess everywhere.
ServerRoot /etc/apache2-legacy
ServerName legacy.localhost
PidFile /run/apache2-legacy/apache2.pid
DefaultRuntimeDir /run/apache2-legacy
Mutex file:/run/apache2-legacy default
User {user}
Group {user}
Listen {port}
ErrorLog /var/log/apache2-legacy/error.log
LogLevel warn
LoadModule mpm_prefork_module /usr/lib/apache2/modules/mod_mpm_prefork.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule authz_host_module /usr/lib/apache2/modules/mod_authz_host.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
LoadModule dir_module /usr/lib/apache2/modules/mod_dir.so
LoadModule rewrite_module /usr/lib/apache2/modules/mod_rewrite.so
LoadModule socache_shmcb_module /usr/lib/apache2/modules/mod_socache_shmcb.so
LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so
LoadModule php_module /usr/lib/apache2/modules/libphp{php}.so
TypesConfig /etc/mime.types
# Debian's defaults (mpm_prefork.conf, apache2.conf).
StartServers 5
MinSpareServers 5
MaxSpareServers 10
MaxRequestWorkers 150
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 100
KeepAliveTimeout 5
SSLSessionCache shmcb:/run/apache2-legacy/ssl_scache(512000)
LogFormat "%h %l %u %t \\"%r\\" %>s %O \\"%{{Referer}}i\\" \\"%{{User-Agent}}i\\"" combined
<Directory />
    AllowOverride None
    Require all denied
</Directory>
{vhosts}
"""

LEGACY_VHOST = """
<VirtualHost *:{port}>
    ServerName {server_name}
    DocumentRoot {docroot}
    SSLEngine on
    SSLCertificateFile /etc/apache2/webarch-default.crt
    SSLCertificateKeyFile /etc/apache2/webarch-default.key
    CustomLog /var/log/apache2-legacy/{server_name}-access.log combined
    <Directory {docroot}>
        Options FollowSymLinks
        AllowOverride All
        Require all granted
        DirectoryIndex index.php index.html
    </Directory>
    <FilesMatch "\\.php$">
        SetHandler application/x-httpd-php
    </FilesMatch>
</VirtualHost>
"""

#: CPU seconds per systemd unit (cgroup v2 ``cpu.stat``: exited processes included, such
#: as recycled PHP-FPM workers) and of the whole host, plus the log splitter's own.
CPU_SCRIPT = r"""
import glob, json, os
def usage(path):
    for line in open(path):
        if line.startswith('usage_usec'):
            return int(line.split()[1]) / 1e6
    return 0.0
root = '/sys/fs/cgroup/unified' if os.path.isdir('/sys/fs/cgroup/unified') else '/sys/fs/cgroup'
cpu = {'host': usage(f'{root}/cpu.stat')}
for path in glob.glob(f'{root}/system.slice/*.service/cpu.stat'):
    unit = path.split('/')[-2].removesuffix('.service')
    if unit.startswith(('apache2', 'php', 'mariadb')):
        cpu[unit] = usage(path)
ticks = 0
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            data = open(f'/proc/{pid}/stat').read()
        except OSError:
            continue
        if '(webarch-log-spl' in data:
            fields = data[data.rindex(')') + 2:].split()
            ticks += int(fields[11]) + int(fields[12])
cpu['log_split'] = ticks / os.sysconf('SC_CLK_TCK')
print(json.dumps(cpu))
"""


def bench_pillar(max_children: int | None = None) -> dict:
    """The account: a PHP and a static site (bench defaults) plus a WordPress site.

    ``max_children`` widens the account's pool (default: the formula's default).
    """
    account = bench_account(ACCOUNT)
    account["sites"]["wp"] = {"type": "wordpress", "server_name": f"wp.{ACCOUNT}.example"}
    if max_children:
        account["php"] = {"max_children": max_children}
    return {"webarch": {"accounts": {ACCOUNT: account}}}


def docroot(site: str) -> str:
    """The document root of ``site`` (bench sites have none of their own)."""
    return f"{HOME}/sites/{site}"


def put_content(host: Host) -> None:
    """Static page, PHP hello-world and WordPress (copied from Debian's package)."""
    host.write_file(f"{docroot('static')}/page.html", STATIC_PAGE, mode=0o640)
    host.write_file(f"{docroot('www')}/hello.php", HELLO_PHP, mode=0o640)
    salts = "\n".join(
        f"define('{key}', '{hash((key, time.time())) & 0xFFFFFFFFFFFF:x}-bench');"
        for key in (
            "AUTH_KEY",
            "SECURE_AUTH_KEY",
            "LOGGED_IN_KEY",
            "NONCE_KEY",
            "AUTH_SALT",
            "SECURE_AUTH_SALT",
            "LOGGED_IN_SALT",
            "NONCE_SALT",
        )
    )
    wp = docroot("wp")
    sh(host, f"cp -rL /usr/share/wordpress/. {wp}/ && rm -f {wp}/wp-config.php")
    config = WP_CONFIG.format(db=f"{ACCOUNT}_db0", user=ACCOUNT, salts=salts)
    host.write_file(f"{wp}/wp-config.php", config, mode=0o640)
    sh(
        host,
        f"chown -R {ACCOUNT}:www-data {docroot('static')} {docroot('www')} {wp}"
        f" && find {wp} -type d -exec chmod 2750 {{}} +"
        f" && find {wp} -type f -exec chmod 0640 {{}} +"
        f" && chmod 0640 {docroot('static')}/page.html {docroot('www')}/hello.php",
    )
    hosts = " ".join(name for name, _, _ in PAGES.values())
    sh(host, f"echo '127.0.0.1 {hosts}' >> /etc/hosts")


def install_wordpress(host: Host) -> None:
    """Run WordPress's installer through the new stack (one POST), as a visitor would."""
    name = PAGES["wordpress"][0]
    form = (
        "weblog_title=Bench&user_name=bench&admin_password=Bench-pass-1234"
        "&admin_password2=Bench-pass-1234&pw_weak=1&admin_email=bench%40example.org"
        "&blog_public=0&Submit=Install"
    )
    out = sh(
        host,
        f"curl -sk -o /dev/null -w '%{{http_code}}' --data '{form}'"
        f" 'https://{name}/wp-admin/install.php?step=2'",
    )
    progress(f"WordPress installer answered {out}")


def start_legacy(host: Host, php: str) -> None:
    """Write the legacy Apache's configuration and start it on LEGACY_PORT."""
    vhosts = "".join(
        LEGACY_VHOST.format(port=LEGACY_PORT, server_name=name, docroot=docroot(site))
        for site, name in (
            ("static", PAGES["static"][0]),
            ("www", PAGES["php_hello"][0]),
            ("wp", PAGES["wordpress"][0]),
        )
    )
    conf = LEGACY_CONF.format(user=ACCOUNT, port=LEGACY_PORT, php=php, vhosts=vhosts)
    host.write_file("/etc/apache2-legacy/apache2.conf", conf)
    sh(host, "mkdir -p /run/apache2-legacy /var/log/apache2-legacy")
    sh(host, "apache2 -d /etc/apache2-legacy -f /etc/apache2-legacy/apache2.conf -t")
    # A unit of its own (its CPU is counted apart from the formula's Apache).
    sh(
        host,
        "systemd-run --unit=apache2-legacy -p Type=forking"
        " -p PIDFile=/run/apache2-legacy/apache2.pid"
        " /usr/sbin/apache2 -d /etc/apache2-legacy -f /etc/apache2-legacy/apache2.conf -k start",
    )
    time.sleep(1)


def url(page: str, stack: str) -> str:
    """The URL of ``page`` on ``stack`` (``new`` or ``legacy``)."""
    name, path, _ = PAGES[page]
    port = NEW_PORT if stack == "new" else LEGACY_PORT
    return f"https://{name}{'' if port == 443 else f':{port}'}{path}"


def check_pages(host: Host) -> None:
    """Every page answers 200 with its text on both stacks, PHP as the account."""
    for page, (_, _, text) in PAGES.items():
        for stack in ("new", "legacy"):
            proc = host.run(["curl", "-sk", "-w", "\n%{http_code}", url(page, stack)])
            body, _, code = proc.stdout.rpartition("\n")
            if code != "200" or text not in body:
                raise RuntimeError(f"{stack} {page}: HTTP {code}\n{body[-2000:]}")
    who = "<?php echo posix_getpwuid(posix_geteuid())['name'], ' ', php_sapi_name();"
    host.write_file(f"{docroot('www')}/who.php", who, mode=0o644)
    for stack in ("new", "legacy"):
        name = PAGES["php_hello"][0]
        port = "" if stack == "new" else f":{LEGACY_PORT}"
        answer = host.run(["curl", "-sk", f"https://{name}{port}/who.php"]).stdout
        progress(f"{stack} stack runs PHP as: {answer}")
    sh(host, f"rm -f {docroot('www')}/who.php")


def cpu_seconds(host: Host) -> dict[str, float]:
    """CPU seconds used so far per unit (apache2, apache2-legacy, php*-fpm, mariadb)."""
    return json.loads(host.run(["python3", "-c", CPU_SCRIPT], check=True).stdout)


def cpu_line(host: Host, before: dict[str, float], requests: float, **labels: object) -> None:
    """Print the CPU seconds per unit since ``before``, and the host's per request (ms).

    ``host`` is the whole test host (the load generator runs outside its cgroup).
    """
    after = cpu_seconds(host)
    spent = {k.replace(".", "_"): round(v - before.get(k, 0.0), 2) for k, v in after.items()}
    per_request = round(1000 * spent["host"] / requests, 3) if requests else 0.0
    figure("cpu", **labels, **spent, host_cpu_ms_per_request=per_request)


def wrk(host: Host, target_url: str, seconds: int, connections: int) -> dict[str, float]:
    """One wrk run (2 threads); requests/s, mean latency (ms), non-2xx and socket errors.

    (Socket errors are mostly timeouts of connections a stack did not serve within
    wrk's 2 s: at more connections than prefork has processes.)
    """
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", target_url]
    out = host.run(cmd, timeout=seconds + 60, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    latency = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "rps": rps,
        "latency_ms": float(latency.group(1)) * scale[latency.group(2)] if latency else 0.0,
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": float(sum(int(n) for n in errors.groups())) if errors else 0.0,
    }


def h2load(host: Host, target_url: str, seconds: int, clients: int) -> float | None:
    """One h2load run over HTTP/2 (10 streams per client); requests/s, None if it hung.

    (``h2load --h1`` hangs against a server that closes kept-alive connections, as
    Apache does after MaxKeepAliveRequests: HTTP/1.1 is measured with wrk only.  In
    HTTP/2 it can hang when requests do not finish: it is stopped after a while.)
    """
    cmd = ["timeout", "-s", "KILL", str(seconds + 30)]
    cmd += ["h2load", f"-c{clients}", "-t2", "-m10", f"-D{seconds}", "--warm-up-time=1"]
    out = host.run([*cmd, target_url], timeout=seconds + 60).stdout
    match = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    if not match:
        progress(f"  h2load {target_url}: no result (stopped after {seconds + 30}s)")
        return None
    failed = re.search(r"requests: .*?(\d+) failed", out)
    if failed and int(failed.group(1)):
        progress(f"  h2load {target_url}: {failed.group(1)} failed requests")
    return float(match.group(1))


Key = tuple[str, str, int]  # pool variant, page, connections


def measure(
    host: Host,
    pool: str,
    pages: list[str],
    connections: list[int],
    rounds: int,
    seconds: int,
    results: dict[tuple[str, str, int, str], list[float]],
    h2: dict[Key, float],
) -> None:
    """wrk on both stacks in alternation (ABAB...), then h2load on the new stack."""
    for page, conns in itertools.product(pages, connections):
        if page == "wordpress" and conns > SLOW_PAGE_CONNECTIONS:
            continue  # tens of requests/s: most of the connections would only time out
        for stack in ("new", "legacy"):
            wrk(host, url(page, stack), 2, conns)  # warm-up (opcache, pool, children)
        for round_ in range(rounds):
            for stack in ("new", "legacy") if round_ % 2 == 0 else ("legacy", "new"):
                before = cpu_seconds(host)
                result = wrk(host, url(page, stack), seconds, conns)
                results.setdefault((pool, page, conns, stack), []).append(result["rps"])
                progress(f"{pool} {page} c={conns} {stack} #{round_ + 1}: {result['rps']:.0f} rps")
                labels = {"pool": pool, "page": page, "connections": conns, "stack": stack}
                figure(
                    "serving",
                    **labels,
                    protocol="http/1.1",
                    round=round_ + 1,
                    rps=round(result["rps"], 1),
                    latency_ms=round(result["latency_ms"], 2),
                    non_2xx=int(result["non_2xx"]),
                    socket_errors=int(result["socket_errors"]),
                )
                cpu_line(host, before, result["rps"] * seconds, **labels)
        before = cpu_seconds(host)
        value = h2load(host, url(page, "new"), seconds, conns)
        labels = {"pool": pool, "page": page, "connections": conns, "stack": "new"}
        if value is None:
            figure("serving", **labels, protocol="h2", tool="h2load", rps="hung")
            continue
        h2[(pool, page, conns)] = value
        figure("serving", **labels, protocol="h2", tool="h2load", rps=round(value, 1))
        cpu_line(host, before, value * seconds, **labels, protocol="h2")


def main() -> int:
    """Set both stacks up, measure in alternation, print figures, ratios and targets."""
    parser = base_arguments(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--connections",
        default="16,256",
        help="comma-separated concurrent connections (wrk and h2load clients)",
    )
    args = parser.parse_args()
    rounds, seconds = (2, 4) if args.quick else (3, 10)
    php = PHP_VERSIONS[args.release]
    image = ensure_bench_image(args.release)
    connections = [int(c) for c in args.connections.split(",")]
    results: dict[tuple[str, str, int, str], list[float]] = {}
    h2: dict[Key, float] = {}
    with bench_host(
        "wb-serving", image=image, release=args.release, formula=args.formula, keep=args.keep
    ) as host:
        host.set_pillar(bench_pillar())
        progress("converging the formula")
        apply_webarch(host)
        put_content(host)
        install_wordpress(host)
        start_legacy(host, php)
        check_pages(host)
        measure(host, "default", list(PAGES), connections, rounds, seconds, results, h2)
        # The same PHP pages with a pool as wide as the load (the formula's default is
        # two workers per account; prefork + mod_php runs one PHP per connection).
        host.set_pillar(bench_pillar(max_children=WIDE_POOL))
        apply_webarch(host)
        php_pages = [p for p in PAGES if p != "static"]
        pool = f"max_children_{WIDE_POOL}"
        measure(host, pool, php_pages, connections, rounds, seconds, results, h2)
        sh(host, "systemctl stop apache2-legacy")
    return report(results, h2)


def report(results: dict[tuple[str, str, int, str], list[float]], h2: dict[Key, float]) -> int:
    """Medians, new/legacy ratios and the PASS/MISS lines (one per scenario, page, load)."""
    ok = True
    scenarios = sorted(
        {(pool, page, conns) for pool, page, conns, _ in results},
        key=lambda k: (k[0] != "default", k[0], list(PAGES).index(k[1]), k[2]),
    )
    for pool, page, conns in scenarios:
        new = statistics.median(results[(pool, page, conns, "new")])
        legacy = statistics.median(results[(pool, page, conns, "legacy")])
        labels = {"scenario": pool, "page": page, "connections": conns}
        h2_rps = h2.get((pool, page, conns))
        figure(
            "serving_median",
            **labels,
            new_rps=round(new, 1),
            legacy_rps=round(legacy, 1),
            new_h2_rps=round(h2_rps, 1) if h2_rps else "-",
        )
        suffix = f"c{conns}" + ("" if pool == "default" else f"_{pool}")
        value = ratio(new, legacy)
        figure("ratio", name=f"{page}_{suffix}_new_vs_legacy_http1", value=round(value, 2))
        if h2_rps:
            h2_value = ratio(h2_rps, legacy)
            figure(
                "ratio", name=f"{page}_{suffix}_new_h2_vs_legacy_http1", value=round(h2_value, 2)
            )
        wanted = TARGETS[page]
        detail = f"new/legacy {value:.2f} (>= {wanted}, wrk HTTP/1.1, {conns} connections)"
        ok &= target(f"serving_{page}_{suffix}", value >= wanted, detail)
    progress(f"serving targets all met: {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
