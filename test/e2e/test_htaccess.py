"""Real applications' .htaccess files on a host converged from pillar.example.

Each file of the shared corpus (../shared/corpus/htaccess/: WordPress and its
cache and security plugins, Drupal, Joomla, Nextcloud, MediaWiki, Matomo,
Laravel, Symfony, TYPO3, DokuWiki, Roundcube, phpMyAdmin, as they ship them) is
put alone in a directory of alice's site, beside a PHP page and a stylesheet,
and the three are requested over HTTPS.  A file "works" when none of the three
answers 500.  The run prints ``htaccess_ok=N/M`` with the reason for each
failure from alice's own error log, and checks that webarch's checker
(webarch_htaccess.check) predicts exactly what Apache did.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import webarch_htaccess
from e2e.helpers import apply, failed
from testhost import Host

pytestmark = pytest.mark.e2e

CORPUS = next(
    (
        path
        for path in (
            Path(os.environ.get("WEBARCH_HTACCESS_CORPUS", "/nonexistent")),
            Path(__file__).resolve().parents[3] / "shared/corpus/htaccess",
            Path("/work/shared/corpus/htaccess"),
        )
        if path.is_dir()
    ),
    None,
)

SITE = "www.alice.example"
DOCROOT = "/home/alice/sites/www/public"
ERROR_LOG = "/home/alice/logs/apache-error.log"
PHP_PAGE = "<?php echo 'php-ran-', basename(__DIR__);"
REQUESTS = ("", "index.php", "style.css")


class Outcome(NamedTuple):
    """What the three requests in one corpus file's directory answered."""

    name: str
    codes: tuple[str, ...]
    bodies: tuple[str, ...]
    #: alice's error log lines written while they were answered.
    log: list[str]

    @property
    def works(self) -> bool:
        return "500" not in self.codes


def https(host: Host, path: str, *args: str) -> tuple[str, str]:
    """The status and body of https://SITE/path, from outside."""
    result = host.net_run(
        ["curl", "-sk", "--max-time", "20", "--resolve", f"{SITE}:443:127.0.0.1",
         "-w", "\n%{http_code}", *args, f"https://{SITE}/{path}"]
    )  # fmt: skip
    body, _, code = result.stdout.rpartition("\n")
    return code, body


def log_size(host: Host) -> int:
    return int(host.run(["stat", "-c", "%s", ERROR_LOG]).stdout.strip() or 0)


def log_since(host: Host, size: int) -> list[str]:
    time.sleep(0.4)  # the log splitter writes what Apache piped to it
    return host.run(["tail", "-c", f"+{size + 1}", ERROR_LOG]).stdout.splitlines()


def alice_dir(host: Host, name: str, files: dict[str, str]) -> str:
    """A fresh directory of alice's site holding ``files``, owned as alice's are."""
    path = f"{DOCROOT}/{name}"
    host.run(["rm", "-rf", path], check=True)
    for file, text in files.items():
        host.write_file(f"{path}/{file}", text, mode=0o640)
    host.run(["chown", "-R", "alice:www-data", path], check=True)
    return path


@pytest.fixture(scope="module")
def converged(host: Host, example_pillar: dict) -> Host:
    assert failed(apply(host, example_pillar)) == {}
    return host


@pytest.fixture(scope="module")
def corpus(converged: Host, request: pytest.FixtureRequest) -> Iterator[list[Outcome]]:
    if CORPUS is None:
        pytest.skip(
            "no .htaccess corpus: set WEBARCH_HTACCESS_CORPUS or put ../shared/corpus/htaccess "
            "next to this checkout"
        )
    outcomes = []
    for file in sorted(CORPUS.glob("*.htaccess")):
        name = "ht-" + file.stem
        alice_dir(converged, name, {".htaccess": file.read_text(), "index.php": PHP_PAGE,
                                    "style.css": "body { color: black }\n"})  # fmt: skip
        before = log_size(converged)
        answers = [https(converged, f"{name}/{path}") for path in REQUESTS]
        codes, bodies = zip(*answers, strict=True)
        outcomes.append(Outcome(file.name, codes, bodies, log_since(converged, before)))
    works = sum(outcome.works for outcome in outcomes)
    lines = [f"htaccess_ok={works}/{len(outcomes)}"]
    for outcome in outcomes:
        if not outcome.works:
            reasons = sorted(
                {line.split("] ", 4)[-1] for line in outcome.log if ".htaccess" in line}
            )
            lines.append(f"  {outcome.name}: {outcome.codes} {'; '.join(reasons)}")
    request.config.webarch_summaries.append("\n".join(lines))
    print("\n".join(lines))
    yield outcomes


def test_at_least_17_of_the_corpus_work(corpus):
    works = [outcome.name for outcome in corpus if outcome.works]
    assert len(corpus) == 19
    assert len(works) >= 17, [o for o in corpus if not o.works]


def test_the_php_page_and_the_stylesheet_beside_a_working_file_are_served(corpus):
    """Where the PHP page answers 200, alice's pool ran it (not its source, not another pool)."""
    for outcome in corpus:
        if outcome.works and outcome.codes[1] == "200":
            assert outcome.bodies[1].startswith("php-ran-ht-"), outcome
            assert outcome.codes[2] == "200", outcome
            assert outcome.bodies[2] == "body { color: black }\n", outcome


def test_denying_files_deny_and_the_others_serve(corpus):
    by_name = {outcome.name[:2]: outcome for outcome in corpus}
    # MediaWiki's cache/ and Matomo's config/ files deny everything; Matomo's
    # plugins/ file lets only static assets through.
    assert by_name["14"].codes == ("403", "403", "403")
    assert by_name["15"].codes == ("403", "403", "403")
    assert by_name["16"].codes == ("403", "403", "200")
    served = [o for o in corpus if o.works and o.name[:2] not in ("14", "15", "16")]
    assert all(o.codes[1:] in (("200", "200"), ("308", "200")) for o in served), served


def test_the_checker_predicts_what_apache_does(corpus):
    """webarch_htaccess.check: a file is refused (500) exactly when Apache refuses it,
    and each refusal is explained in alice's own log by a webarch hint."""
    for outcome in corpus:
        findings = webarch_htaccess.check((CORPUS / outcome.name).read_text())
        refused = [f for f in findings if f.verdict == "refused"]
        assert bool(refused) == (not outcome.works), (outcome, findings)
        for finding in refused:
            word = finding.directive.split()[-1].lstrip("+-")
            assert any(re.search(rf"Option {word} not allowed here", line) for line in outcome.log)


def test_a_refused_line_is_explained_in_the_accounts_log(corpus):
    joomla = next(o for o in corpus if o.name.startswith("11-"))
    hints = [line for line in joomla.log if "webarch: " in line]
    assert hints and "SymLinksIfOwnerMatch" in hints[0], joomla.log


def test_ignored_lines_are_reported_in_the_accounts_log(converged, corpus):
    """Apache logs an ignored line without the site or the file: the report (started
    by the log splitter on Apache's first such warning, and hourly) writes each
    finding of a new or changed .htaccess into its owner's log, once."""
    converged.run(["systemctl", "start", "webarch-htaccess-report.service"], check=True)
    reported = [line for line in log_since(converged, 0) if line.startswith("webarch-htaccess ")]
    expected = {
        ("03-", "ForceType"), ("16-", "AddHandler"), ("32-", "php_flag"),
        ("11-", "Options +FollowSymlinks"), ("13-", "Options +FollowSymLinks"),
    }  # fmt: skip
    for prefix, directive in expected:
        assert any(f"/ht-{prefix}" in line and f": {directive} is " in line for line in reported), (
            prefix,
            reported,
        )
    assert len(reported) == len(set(reported)) == 6, reported  # 16 has two AddHandler lines
    size = log_size(converged)
    converged.run(["systemctl", "start", "webarch-htaccess-report.service"], check=True)
    assert not [line for line in log_since(converged, size) if "webarch-htaccess" in line]


UPLOAD_PHP = """<?php
echo ini_get('upload_max_filesize'), ' ', ini_get('post_max_size'), ' ';
echo isset($_FILES['f']) ? 'error=' . $_FILES['f']['error'] : 'no-file';
"""


def test_a_user_ini_sets_upload_max_filesize_for_one_directory(converged, tmp_path):
    alice_dir(converged, "uploads-small", {"up.php": UPLOAD_PHP,
                                           ".user.ini": "upload_max_filesize = 2M\n"})  # fmt: skip
    alice_dir(converged, "uploads-default", {"up.php": UPLOAD_PHP})
    # curl runs on this machine (in the host's network namespace only).
    (tmp_path / "six-megabytes").write_bytes(b"x" * (6 * 1024 * 1024))
    form = ["-F", f"f=@{tmp_path / 'six-megabytes'}"]
    assert https(converged, "uploads-small/up.php", *form) == ("200", "2M 32M error=1")
    assert https(converged, "uploads-default/up.php", *form) == ("200", "32M 32M error=0")
    # The .user.ini itself is never served.
    assert https(converged, "uploads-small/.user.ini")[0] == "403"


def test_mediawikis_own_images_htaccess_is_not_read_in_a_mediawiki_site(converged):
    if CORPUS is None:
        pytest.skip("no .htaccess corpus (see the corpus fixture)")
    images = "/home/alice/sites/wiki/images"
    converged.write_file(
        f"{images}/.htaccess", (CORPUS / "13-mediawiki-images.htaccess").read_text()
    )
    converged.write_file(f"{images}/a.png", "not really a png\n", mode=0o640)
    converged.write_file(f"{images}/a.php", "<?php echo 'ran';", mode=0o640)
    converged.run(["chown", "-R", "alice:www-data", images], check=True)
    codes = [
        converged.net_run(
            ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--resolve",
             "wiki.alice.example:443:127.0.0.1", f"https://wiki.alice.example/images/{name}"]
        ).stdout
        for name in ("a.png", "a.php")
    ]  # fmt: skip
    assert codes == ["200", "403"]
