"""Benchmark 3 of issue 8: requests per second, the formula's stack against the legacy ones.

On one test host (the bench image: the test image, which has Debian's WordPress among
the formula's packages, plus mod_php and mpm-itk, see ``benchimage.py``), with the
same account, files, database and TLS certificate,
three Apache instances, each with its own configuration, port and systemd unit (so
that the CPU of each is counted apart):

* ``new``: the formula's Apache (event MPM, HTTP/2, mod_proxy_fcgi) on port 443 and
  the account's PHP-FPM pool (ondemand, in its chroot), exactly as the formula
  converges them;
* ``itk``, the old platform (the primary legacy stack): apache2-mpm-itk + mod_php,
  each virtual host running as its account (``AssignUserID``), in Debian 12's layout
  (/etc/apache2-itk, port 8443, unit apache2-itk): Debian's apache2.conf, the modules
  a fresh Debian apache2 enables plus ssl, rewrite and php, Debian's mpm_prefork
  settings (which mpm-itk uses) and default configurations, a log file per site,
  ``AllowOverride All``, ``FollowSymLinks``;
* ``prefork``, a best-case legacy reference (the seed's "Apache per user"): prefork +
  mod_php, the whole instance running as the account (``User``), only the modules it
  needs (/etc/apache2-prefork, port 8444, unit apache2-prefork).

mpm-itk forks once per connection, measured: a prefork child (www-data, with the
capabilities to change users) accepts the connection and forks; the fork reads the
request, switches to the virtual host's user (setgid, setgroups, setuid), serves every
request of the connection and exits, while the child waits for it and accepts the next
one (strace -f: accept4, clone, setgid/setgroups/setuid in the fork, exit_group, wait4;
two requests on one connection, one fork).  The ``tasks`` of the ``cpu`` lines show it
in every run: itk creates 1.04 to 1.07 processes per request with a new connection per
request and 0.0104 to 0.0109 (one per connection of up to 100 requests) with keep-alive;
prefork and the new stack close to none.  Each fork of an Apache child with mod_php
(about 650 memory mappings) costs this 2-core VM 5 to 7 ms of CPU, mostly the kernel's
copying and tearing down of the address space (perf: dup_mmap, anon_vma_clone,
copy-on-write faults, exit_mmap): 5.5 to 7.6 ms of host CPU per request with a new
connection per request, against 0.4 to 0.8 ms for prefork and the new stack.

Three pages, each over HTTPS: a static file (``static`` site), a PHP hello-world
(``www`` site) and WordPress's front page (``wp`` site).

WordPress is the formula's own install (issue 16), not the bench's: the ``wp`` site
has an ``app`` block (Debian's WordPress, the account's database ``user001_db0``,
title ``Bench``; the account has an email, for the admin password the formula mails),
so the first converge copies WordPress into the empty site as the account in its
chroot, writes its wp-config.php and runs WordPress's install headless (the
``wordpress_install`` line: version, steps, the state's and the converge's seconds,
the configuration's ``DB_HOST`` and mode).  The legacy stacks serve that same tree
as it is.  Its wp-config.php (0600, the account's; www-data cannot read it) is read
by mod_php running as the account (mpm-itk after its switch, prefork throughout), and
its database settings hold outside the chroot as inside: ``DB_HOST`` is
``localhost:/run/mysqld/mysqld.sock``, the same path in both, and with ``DB_PASSWORD``
empty MariaDB's unix_socket knows the account by the uid PHP runs as.  One thing does
not hold: the home URL is the formula's ``https://wp.user001.example``, and with a
legacy port in ``Host`` (curl's and wrk's default, ``wp.user001.example:8443``)
WordPress's canonical redirect answers the front page with a 301 to port 443 (the new
stack), which wrk counts as a success.  So every request carries the site's name
without a port as its ``Host`` header, on every stack and page (``-H "Host: ..."``;
the URL, hence the TLS SNI, names the site too): what a visitor of the site on port
443 sends; the ports only tell the three stacks apart.  The three stacks then answer
the front page with the same bytes.  ``check_pages`` proves it before measuring:
every page answers 200 with its text on every stack (WordPress: its "Hello world!"
post and the title, no redirect, no installer), PHP reports the account's uid, and a
second of wrk on the WordPress page leaves only 200s in each legacy stack's access
log.  The formula's install keeps WordPress's own cron (``DISABLE_WP_CRON`` unset): a
page view may start ``wp-cron.php`` on the site's URL (the new stack; WordPress's lock
allows one a minute), as in production; the site names are in ``/etc/hosts`` before
the first converge, so that the chroot has them too.

``wrk`` (HTTP/1.1) runs on the host,
against each stack in turn, the order rotated every round (new itk prefork, itk prefork
new, ...) so that all see the same noise; the median of the rounds counts.  ``h2load``
adds HTTP/2 on the new stack, compared with the legacy stacks' wrk medians (HTTP/2 is
what browsers speak to the new stack; mpm-itk and prefork have none).

Scenarios (the ``scenario`` of the median, ratio and target lines, the ``pool`` and
``conn`` labels of the ``serving`` and ``cpu`` lines):

* ``default``: the formula's pool (ondemand, 2 workers), kept-alive connections (wrk's,
  up to Apache's 100 requests each), 16 and 256 connections (``--quick``: 16);
  WordPress at 16 only;
* ``close``: the static page and the PHP hello-world with a new connection per request
  (``Connection: close``; ``conn=close``), 16 connections: browsers and visitors open
  connections far more often than wrk's 100 requests per connection.  wrk resumes the
  TLS session (TLS 1.3), as browsers do: a TCP and an abbreviated TLS handshake per
  request (the prefork stack's log, with %{SSL_SESSION_RESUMED}x: 16 full handshakes,
  then only resumed sessions).  No h2load;
* ``max_children_16``: the PHP pages again, kept alive, with a pool of 16 workers (as
  many PHP processes as prefork runs for 16 connections).

``cpu`` lines give the CPU seconds of each systemd unit (apache2, apache2-itk,
apache2-prefork, php*-fpm or the accounts' webarch-php@ summed, mariadb; exited processes
included) and of the whole host
during each measurement, the host's CPU milliseconds per request (the load generator
runs outside the host's cgroup, so that figure is the stacks' own cost per request),
and the processes and threads created in the host meanwhile (``tasks``, from its pid
namespace's counter; wrk's and the probe's own handful included, so only meaningful
against thousands of requests) and per request.  Ratios and targets
(static at least 2x, PHP at least equal) are given against each legacy stack:
``ratio name=..._new_vs_itk_http1 legacy=itk``, ``target serving_..._vs_itk``.

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
    SaltRun,
    apply_webarch,
    base_arguments,
    bench_account,
    bench_host,
    figure,
    progress,
    ratio,
    sh,
    target,
    wrk_figures,
)

ACCOUNT = "user001"
HOME = f"/home/{ACCOUNT}"

#: The stacks, each its own Apache instance (and systemd unit): the formula's, then the
#: legacy ones (the old platform's mpm-itk first), with their HTTPS ports.
NEW = "new"
LEGACIES: tuple[str, ...] = ("itk", "prefork")
STACKS: tuple[str, ...] = (NEW, *LEGACIES)
PORTS: dict[str, int] = {"new": 443, "itk": 8443, "prefork": 8444}

#: page -> (server name, path, text the answer must contain)
PAGES: dict[str, tuple[str, str, str]] = {
    "static": (f"static.{ACCOUNT}.example", "/page.html", "webarch static bench page"),
    "php_hello": (f"www.{ACCOUNT}.example", "/hello.php", "Hello, world!"),
    "wordpress": (f"wp.{ACCOUNT}.example", "/", "Hello world!"),
}

#: WordPress: the ``wp`` site's application, installed by the formula (its title, and
#: its state's id in the converge).
WP_TITLE = "Bench"
WP_STATE = f"webarch-{ACCOUNT}-app-wp"

#: WordPress (tens of requests/s here) is measured up to this many connections.
SLOW_PAGE_CONNECTIONS = 32

#: The wider pool of the second measurement (as many PHP workers as wrk connections).
WIDE_POOL = 16

#: Scenario ``close``: these pages, a new TLS connection per request, this many connections.
CLOSE_PAGES: tuple[str, ...] = ("static", "php_hello")
CLOSE_CONNECTIONS = 16

#: Targets of issue 8: new stack rps / legacy stack rps (against each legacy stack).
TARGETS: dict[str, float] = {"static": 2.0, "php_hello": 1.0, "wordpress": 1.0}

STATIC_PAGE = (
    "<!doctype html>\n<html><head><title>webarch static bench page</title></head><body>\n"
    + "<p>webarch static bench page: some ordinary text of an ordinary page.</p>\n" * 60
    + "</body></html>\n"
)

HELLO_PHP = '<?php\necho "Hello, world!\\n";\n'

#: Debian 12's default modules of a fresh apache2 install (its mpm aside).
DEBIAN_MODULES: tuple[str, ...] = (
    "access_compat",
    "alias",
    "auth_basic",
    "authn_core",
    "authn_file",
    "authz_core",
    "authz_host",
    "authz_user",
    "autoindex",
    "deflate",
    "dir",
    "env",
    "filter",
    "mime",
    "negotiation",
    "reqtimeout",
    "setenvif",
    "status",
)

#: The modules of the itk instance: Debian's, the old platform's (ssl, rewrite, mod_php)
#: and mpm-itk on top of prefork ({php} is filled in).
ITK_MODULES: tuple[str, ...] = (
    *DEBIAN_MODULES,
    "ssl",
    "socache_shmcb",
    "rewrite",
    "php{php}",
    "mpm_prefork",
    "mpm_itk",
)

#: Debian 12's default configurations of a fresh apache2 install (conf-enabled).
DEBIAN_CONFS: tuple[str, ...] = (
    "charset",
    "localized-error-pages",
    "other-vhosts-access-log",
    "security",
    "serve-cgi-bin",
)

ITK_CONF = """# The old platform's web stack, for the serving benchmark only: apache2-mpm-itk +
# mod_php, each virtual host running as its account (AssignUserID).  Debian 12's
# apache2.conf (without apache2ctl's environment variables) and its layout: mods-enabled
# and conf-enabled link to Debian's own files in /etc/apache2 (default modules plus ssl,
# rewrite, php; Debian's mpm_prefork.conf, which mpm-itk uses).
Define APACHE_RUN_DIR /run/apache2-itk
Define APACHE_LOG_DIR /var/log/apache2-itk
ServerRoot /etc/apache2-itk
ServerName itk.localhost
DefaultRuntimeDir ${{APACHE_RUN_DIR}}
PidFile ${{APACHE_RUN_DIR}}/apache2.pid
Timeout 300
KeepAlive On
MaxKeepAliveRequests 100
KeepAliveTimeout 5
User www-data
Group www-data
HostnameLookups Off
ErrorLog ${{APACHE_LOG_DIR}}/error.log
LogLevel warn
IncludeOptional mods-enabled/*.load
IncludeOptional mods-enabled/*.conf
Listen {port}
<Directory />
    Options FollowSymLinks
    AllowOverride None
    Require all denied
</Directory>
<Directory /usr/share>
    AllowOverride None
    Require all granted
</Directory>
<Directory /var/www/>
    Options Indexes FollowSymLinks
    AllowOverride None
    Require all granted
</Directory>
AccessFileName .htaccess
<FilesMatch "^\\.ht">
    Require all denied
</FilesMatch>
LogFormat "%v:%p %h %l %u %t \\"%r\\" %>s %O \\"%{{Referer}}i\\" \\"%{{User-Agent}}i\\"" vhost_combined
LogFormat "%h %l %u %t \\"%r\\" %>s %O \\"%{{Referer}}i\\" \\"%{{User-Agent}}i\\"" combined
LogFormat "%h %l %u %t \\"%r\\" %>s %O" common
LogFormat "%{{Referer}}i -> %U" referer
LogFormat "%{{User-agent}}i" agent
IncludeOptional conf-enabled/*.conf
{vhosts}
"""  # noqa: E501 (Debian's vhost_combined LogFormat line)

ITK_VHOST = """
<VirtualHost *:{port}>
    ServerName {server_name}
    DocumentRoot {docroot}
    AssignUserID {user} {user}
    SSLEngine on
    SSLCertificateFile /etc/apache2/webarch-default.crt
    SSLCertificateKeyFile /etc/apache2/webarch-default.key
    ErrorLog ${{APACHE_LOG_DIR}}/{server_name}-error.log
    CustomLog ${{APACHE_LOG_DIR}}/{server_name}-access.log combined
    <Directory {docroot}>
        Options FollowSymLinks
        AllowOverride All
        Require all granted
    </Directory>
</VirtualHost>
"""

PREFORK_CONF = """# A best-case legacy stack, for the serving benchmark only: prefork + mod_php, the
# whole instance running as the account (User: one Apache per account), only the
# modules it needs, a log file per site, .htaccess everywhere.
ServerRoot /etc/apache2-prefork
ServerName prefork.localhost
PidFile /run/apache2-prefork/apache2.pid
DefaultRuntimeDir /run/apache2-prefork
Mutex file:/run/apache2-prefork default
User {user}
Group {user}
Listen {port}
ErrorLog /var/log/apache2-prefork/error.log
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
SSLSessionCache shmcb:/run/apache2-prefork/ssl_scache(512000)
LogFormat "%h %l %u %t \\"%r\\" %>s %O \\"%{{Referer}}i\\" \\"%{{User-Agent}}i\\"" combined
<Directory />
    AllowOverride None
    Require all denied
</Directory>
{vhosts}
"""

PREFORK_VHOST = """
<VirtualHost *:{port}>
    ServerName {server_name}
    DocumentRoot {docroot}
    SSLEngine on
    SSLCertificateFile /etc/apache2/webarch-default.crt
    SSLCertificateKeyFile /etc/apache2/webarch-default.key
    CustomLog /var/log/apache2-prefork/{server_name}-access.log combined
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

#: Legacy stack -> (its configuration, its virtual host).
LEGACY_CONFS: dict[str, tuple[str, str]] = {
    "itk": (ITK_CONF, ITK_VHOST),
    "prefork": (PREFORK_CONF, PREFORK_VHOST),
}

#: CPU seconds per systemd unit (cgroup v2 ``cpu.stat``: exited processes included, such
#: as recycled PHP-FPM workers) and of the whole host, plus the log splitter's own; and
#: the host's last allocated pid (its pid namespace's counter: every process and thread
#: created in the host advances it by one).
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
# Each account's own PHP-FPM master, in its slice (issue 18): summed.
for path in glob.glob(f'{root}/user.slice/*/webarch-php@*.service/cpu.stat'):
    cpu['webarch-php'] = cpu.get('webarch-php', 0.0) + usage(path)
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
cpu['last_pid'] = int(open('/proc/sys/kernel/ns_last_pid').read())
cpu['pid_max'] = int(open('/proc/sys/kernel/pid_max').read())
print(json.dumps(cpu))
"""


def bench_pillar(max_children: int | None = None) -> dict:
    """The account: a PHP and a static site (bench defaults) plus a WordPress site that
    the formula installs (``app``: Debian's WordPress, the account's database
    ``user001_db0``; the admin's password is mailed, so the account has an email and
    the mails a sender).

    ``max_children`` widens the account's pool (default: the formula's default).
    """
    account = bench_account(ACCOUNT)
    account["email"] = f"{ACCOUNT}@example.org"
    account["sites"]["wp"] = {
        "type": "wordpress",
        "server_name": PAGES["wordpress"][0],
        "app": {"database": f"{ACCOUNT}_db0", "title": WP_TITLE, "source": "debian"},
    }
    if max_children:
        account["php"] = {"max_children": max_children}
    return {
        "webarch": {
            "notify": {"from": "hostmaster@example.org"},
            "accounts": {ACCOUNT: account},
        }
    }


def docroot(site: str) -> str:
    """The document root of ``site`` (bench sites have none of their own)."""
    return f"{HOME}/sites/{site}"


def put_content(host: Host) -> None:
    """The static page and the PHP hello-world (WordPress is the formula's install)."""
    host.write_file(f"{docroot('static')}/page.html", STATIC_PAGE, mode=0o640)
    host.write_file(f"{docroot('www')}/hello.php", HELLO_PHP, mode=0o640)
    sh(
        host,
        f"chown -R {ACCOUNT}:www-data {docroot('static')} {docroot('www')}"
        f" && chmod 0640 {docroot('static')}/page.html {docroot('www')}/hello.php",
    )


def resolve_site_names(host: Host) -> None:
    """The sites' names on the host's loopback (in /etc/hosts before the first converge,
    so that the account's chroot gets them too: WordPress's cron calls its own URL)."""
    hosts = " ".join(name for name, _, _ in PAGES.values())
    sh(host, f"echo '127.0.0.1 {hosts}' >> /etc/hosts")


def wordpress_installed(host: Host, run: SaltRun) -> None:
    """Print the formula's install of WordPress (its state in the first converge); fail
    unless that converge installed it (copy, configure, install) and the formula's
    wp-config.php is what the legacy stacks read: 0600, the account's, no password."""
    state = next(
        (v for k, v in run.raw.items() if k.startswith(f"webarch_app_|-{WP_STATE}_|-")), None
    )
    changes = (state or {}).get("changes") or {}
    if "install" not in changes.get("steps", []):
        raise RuntimeError(f"the formula did not install WordPress: {state}")
    config = f"{docroot('wp')}/wp-config.php"
    mode = sh(host, f"stat -c '%U %a' {config}").split()
    text = host.read_file(config)
    if mode != [ACCOUNT, "600"] or not re.search(r"define\( 'DB_PASSWORD', '' \);", text):
        raise RuntimeError(f"{config}: {mode}, not the formula's 0600 configuration")
    db_host = re.search(r"define\( 'DB_HOST', '([^']*)' \);", text)
    figure(
        "wordpress_install",
        version=changes.get("version"),
        steps="+".join(changes["steps"]),
        install_s=round(float(state.get("duration", 0.0)) / 1000, 2),
        converge_s=round(run.seconds, 1),
        db_host=db_host.group(1) if db_host else "?",
        config_mode="+".join(mode),
    )


def start_legacy(host: Host, stack: str, php: str) -> None:
    """Write the configuration of legacy ``stack`` and start it in a unit of its own.

    ``/etc/apache2-STACK``, port PORTS[STACK], systemd unit ``apache2-STACK`` (its CPU
    is counted apart from the formula's Apache and the other legacy instance).
    """
    conf_template, vhost_template = LEGACY_CONFS[stack]
    etc, port = f"/etc/apache2-{stack}", PORTS[stack]
    vhosts = "".join(
        vhost_template.format(
            port=port, server_name=PAGES[page][0], docroot=docroot(site), user=ACCOUNT
        )
        for site, page in (("static", "static"), ("www", "php_hello"), ("wp", "wordpress"))
    )
    conf = conf_template.format(user=ACCOUNT, port=port, php=php, vhosts=vhosts)
    host.write_file(f"{etc}/apache2.conf", conf)
    sh(host, f"mkdir -p /run/apache2-{stack} /var/log/apache2-{stack}")
    if stack == "itk":
        # Debian's layout: links to Debian's own module and configuration files.
        links = [f"mkdir -p {etc}/mods-enabled {etc}/conf-enabled"]
        for module in (m.format(php=php) for m in ITK_MODULES):
            for ext in ("load", "conf"):
                available = f"/etc/apache2/mods-available/{module}.{ext}"
                links.append(
                    f"if [ -e {available} ]; then ln -sfn {available} {etc}/mods-enabled/; fi"
                )
        for name in DEBIAN_CONFS:
            links.append(f"ln -sfn /etc/apache2/conf-available/{name}.conf {etc}/conf-enabled/")
        sh(host, " && ".join(links))
        # Debian's files as packaged (the formula changes none of them).
        modified = host.run(["dpkg", "--verify", "apache2", f"libapache2-mod-php{php}"]).stdout
        if modified.strip():
            progress(f"itk: Debian's Apache files modified on this host:\n{modified}")
    command = f"/usr/sbin/apache2 -d {etc} -f {etc}/apache2.conf"
    sh(host, f"{command} -t")
    sh(
        host,
        f"systemd-run --unit=apache2-{stack} -p Type=forking"
        f" -p PIDFile=/run/apache2-{stack}/apache2.pid {command} -k start",
    )
    time.sleep(1)


def url(page: str, stack: str) -> str:
    """The URL of ``page`` on ``stack`` (one of STACKS): the stack's port."""
    name, path, _ = PAGES[page]
    port = PORTS[stack]
    return f"https://{name}{'' if port == 443 else f':{port}'}{path}"


def host_header(page: str) -> list[str]:
    """The ``Host`` header every request of ``page`` carries, on every stack: the site's
    name without a port, as a visitor of the site on port 443 sends it.

    WordPress's home URL is the formula's ``https://`` + server_name: with the legacy
    ports in ``Host`` (curl's and wrk's default) its canonical redirect answers the
    front page with a 301 to port 443, and wrk counts a 3xx as a success.
    """
    return ["-H", f"Host: {PAGES[page][0]}"]


WHO_PHP = """<?php
$uid = posix_geteuid();
$user = posix_getpwuid($uid);
$opcache = function_exists('opcache_get_status') && @opcache_get_status(false);
echo $uid, ' ', $user ? $user['name'] : '?', ' ', php_sapi_name(), ' ',
    $opcache ? 'opcache' : 'no-opcache', ' pid=', getmypid();
"""


def check_pages(host: Host) -> None:
    """Every page answers 200 with its text on every stack (WordPress: the formula's
    install, its front page, not a redirect or the installer), PHP runs as the account,
    and wrk's requests get the front page itself from the legacy stacks."""
    for page, (_, _, text) in PAGES.items():
        for stack in STACKS:
            cmd = ["curl", "-sk", *host_header(page), "-w", "\n%{http_code}", url(page, stack)]
            body, _, code = host.run(cmd).stdout.rpartition("\n")
            if code != "200" or text not in body:
                raise RuntimeError(f"{stack} {page}: HTTP {code}\n{body[-2000:]}")
            if page == "wordpress" and (WP_TITLE not in body or "install.php" in body):
                raise RuntimeError(f"{stack}: not the installed WordPress\n{body[-2000:]}")
    uid = sh(host, f"id -u {ACCOUNT}").strip()
    host.write_file(f"{docroot('www')}/who.php", WHO_PHP, mode=0o644)
    for stack in STACKS:
        who = url("php_hello", stack).replace(PAGES["php_hello"][1], "/who.php")
        answer = host.run(["curl", "-sk", *host_header("php_hello"), who]).stdout
        progress(f"{stack} stack runs PHP as: {answer}")
        if answer.split(" ")[0] != uid:
            raise RuntimeError(f"{stack} stack does not run PHP as {ACCOUNT} (uid {uid}): {answer}")
    sh(host, f"rm -f {docroot('www')}/who.php")
    # wrk hides 3xx answers (it counts only "Non-2xx or 3xx"): the legacy stacks' own
    # logs show what a second of wrk on the WordPress page got.
    name = PAGES["wordpress"][0]
    for stack in LEGACIES:
        log = f"/var/log/apache2-{stack}/{name}-access.log"
        sh(host, f": > {log}")
        wrk(host, url("wordpress", stack), 1, 1, page="wordpress")
        codes = sh(host, f"awk '{{print $9}}' {log} | sort | uniq -c").split()
        statuses = dict(zip(codes[1::2], (int(n) for n in codes[::2]), strict=True))
        progress(f"{stack} WordPress front page to wrk, HTTP statuses: {statuses}")
        if set(statuses) != {"200"}:
            raise RuntimeError(f"{stack}: wrk got {statuses} from the WordPress front page")


def cpu_seconds(host: Host) -> dict[str, float]:
    """CPU seconds used so far per unit (apache2*, php*-fpm or the accounts' webarch-php@
    summed, mariadb), and the last pid."""
    return json.loads(host.run(["python3", "-c", CPU_SCRIPT], check=True).stdout)


def cpu_line(host: Host, before: dict[str, float], requests: float, **labels: object) -> None:
    """Print the CPU seconds per unit since ``before``, and the host's per request (ms).

    ``host`` is the whole test host (the load generator runs outside its cgroup), and
    so are ``tasks``: the processes and threads created in the host meanwhile (the load
    generator's own few included), and their number per request.
    """
    after = cpu_seconds(host)
    tasks = int(after.pop("last_pid") - before["last_pid"]) % int(after.pop("pid_max"))
    spent = {k.replace(".", "_"): round(v - before.get(k, 0.0), 2) for k, v in after.items()}
    per_request = round(1000 * spent["host"] / requests, 3) if requests else 0.0
    figure(
        "cpu",
        **labels,
        **spent,
        host_cpu_ms_per_request=per_request,
        tasks=tasks,
        tasks_per_request=round(tasks / requests, 4) if requests else 0.0,
    )


def wrk(
    host: Host,
    target_url: str,
    seconds: int,
    connections: int,
    close: bool = False,
    *,
    page: str,
) -> dict[str, float]:
    """One wrk run (2 threads); requests/s, mean latency (ms), non-2xx and socket errors.

    ``page`` gives the Host header (see host_header).  ``close`` sends ``Connection:
    close``: the server closes each connection after its answer and wrk opens a new one
    (TCP and TLS handshake) for every request.
    (Socket errors are mostly timeouts of connections a stack did not serve within
    wrk's 2 s: at more connections than prefork has processes.)
    """
    cmd = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s"]
    cmd += host_header(page)
    if close:
        cmd += ["-H", "Connection: close"]
    out = host.run([*cmd, target_url], timeout=seconds + 60, check=True).stdout
    return wrk_figures(out)


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


Key = tuple[str, str, int]  # scenario, page, connections
Results = dict[tuple[str, str, int, str], list[float]]  # (*Key, stack) -> rps per round


def measure(
    host: Host,
    scenario: str,
    pool: str,
    pages: list[str],
    connections: list[int],
    rounds: int,
    seconds: int,
    results: Results,
    h2: dict[Key, float],
    close: bool = False,
) -> None:
    """wrk on every stack, in an order rotated per round; then h2load on the new stack.

    ``close``: a new connection per request (``Connection: close``), no h2load.
    """
    conn = "close" if close else "keep-alive"
    for page, conns in itertools.product(pages, connections):
        if page == "wordpress" and conns > SLOW_PAGE_CONNECTIONS:
            continue  # tens of requests/s: most of the connections would only time out
        for stack in STACKS:
            # Warm-up (opcache, pool, children).
            wrk(host, url(page, stack), 2, conns, close, page=page)
        for round_ in range(rounds):
            shift = round_ % len(STACKS)
            for stack in STACKS[shift:] + STACKS[:shift]:
                before = cpu_seconds(host)
                result = wrk(host, url(page, stack), seconds, conns, close, page=page)
                results.setdefault((scenario, page, conns, stack), []).append(result["rps"])
                progress(
                    f"{scenario} {page} c={conns} {stack} #{round_ + 1}: {result['rps']:.0f} rps"
                )
                labels = {
                    "pool": pool,
                    "conn": conn,
                    "page": page,
                    "connections": conns,
                    "stack": stack,
                }
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
        if close:
            continue
        before = cpu_seconds(host)
        value = h2load(host, url(page, NEW), seconds, conns)
        labels = {"pool": pool, "conn": conn, "page": page, "connections": conns, "stack": NEW}
        if value is None:
            figure("serving", **labels, protocol="h2", tool="h2load", rps="hung")
            continue
        h2[(scenario, page, conns)] = value
        figure("serving", **labels, protocol="h2", tool="h2load", rps=round(value, 1))
        cpu_line(host, before, value * seconds, **labels, protocol="h2")


def main() -> int:
    """Set the stacks up, measure them in rotation, print figures, ratios and targets."""
    parser = base_arguments(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--connections",
        default=None,
        help="comma-separated concurrent connections of the keep-alive measurements"
        " (wrk and h2load clients; default 16,256, --quick: 16)",
    )
    args = parser.parse_args()
    rounds, seconds = (2, 4) if args.quick else (3, 10)
    php = PHP_VERSIONS[args.release]
    image = ensure_bench_image(args.release)
    connections = [
        int(c) for c in (args.connections or ("16" if args.quick else "16,256")).split(",")
    ]
    results: Results = {}
    h2: dict[Key, float] = {}
    with bench_host(
        "wb-serving", image=image, release=args.release, formula=args.formula, keep=args.keep
    ) as host:
        host.set_pillar(bench_pillar())
        resolve_site_names(host)
        progress("converging the formula (it installs WordPress into the wp site)")
        wordpress_installed(host, apply_webarch(host))
        put_content(host)
        for stack in LEGACIES:
            start_legacy(host, stack, php)
        check_pages(host)
        timing = (rounds, seconds, results, h2)
        measure(host, "default", "default", list(PAGES), connections, *timing)
        # A new connection per request: browsers and visitors open connections far more
        # often than wrk's 100 requests per kept-alive connection.
        close_pages = list(CLOSE_PAGES)
        measure(host, "close", "default", close_pages, [CLOSE_CONNECTIONS], *timing, close=True)
        # The same PHP pages with a pool as wide as the load (the formula's default is
        # two workers per account; prefork + mod_php runs one PHP per connection).
        host.set_pillar(bench_pillar(max_children=WIDE_POOL))
        apply_webarch(host)
        php_pages = [p for p in PAGES if p != "static"]
        pool = f"max_children_{WIDE_POOL}"
        measure(host, pool, pool, php_pages, connections, *timing)
        if not args.keep:
            sh(host, "systemctl stop " + " ".join(f"apache2-{s}" for s in LEGACIES))
    return report(results, h2)


def report(results: Results, h2: dict[Key, float]) -> int:
    """Medians, new/legacy ratios and PASS/MISS lines (per scenario, page, load, legacy)."""
    ok = True
    for scenario, page, conns in dict.fromkeys(k[:3] for k in results):
        median = {s: statistics.median(results[(scenario, page, conns, s)]) for s in STACKS}
        labels = {"scenario": scenario, "page": page, "connections": conns}
        h2_rps = h2.get((scenario, page, conns))
        figure(
            "serving_median",
            **labels,
            **{f"{s}_rps": round(median[s], 1) for s in STACKS},
            new_h2_rps=round(h2_rps, 1) if h2_rps else "-",
        )
        suffix = f"c{conns}" + ("" if scenario == "default" else f"_{scenario}")
        for legacy in LEGACIES:
            value = ratio(median[NEW], median[legacy])
            name = f"{page}_{suffix}_new_vs_{legacy}_http1"
            figure("ratio", name=name, legacy=legacy, value=round(value, 2))
            if h2_rps:
                h2_value = round(ratio(h2_rps, median[legacy]), 2)
                name = f"{page}_{suffix}_new_h2_vs_{legacy}_http1"
                figure("ratio", name=name, legacy=legacy, value=h2_value)
            wanted = TARGETS[page]
            conn = "a new connection per request" if scenario == "close" else "keep-alive"
            detail = (
                f"legacy={legacy} new/{legacy} {value:.2f} (>= {wanted},"
                f" wrk HTTP/1.1, {conns} connections, {conn})"
            )
            ok &= target(f"serving_{page}_{suffix}_vs_{legacy}", value >= wanted, detail)
    progress(f"serving targets all met: {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
