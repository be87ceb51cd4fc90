"""The .htaccess policy and its checker (_utils/webarch_htaccess.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import webarch_htaccess as policy

CORPUS = next(
    (p for p in (Path(__file__).resolve().parents[3] / "shared/corpus/htaccess",
                 Path("/work/shared/corpus/htaccess")) if p.is_dir()),
    None,
)  # fmt: skip


def verdicts(text: str) -> list[tuple[int, str, str]]:
    return [(f.line, f.directive, f.verdict) for f in policy.check(text)]


def test_allow_override_is_the_groups_the_options_and_nonfatal_all():
    assert policy.ALLOW_OVERRIDE == (
        "AuthConfig Indexes Limit Options=Indexes,MultiViews,SymLinksIfOwnerMatch Nonfatal=All"
    )
    for dangerous in ("SetHandler", "AddHandler", "Action", "ForceType", "PassEnv", "Include"):
        assert dangerous not in policy.LISTED
        assert dangerous.lower() not in policy.ALLOWED


def test_allowed_lines_give_no_finding():
    text = """# BEGIN WordPress
RewriteEngine On
RewriteRule . /index.php [L]
Options -Indexes +SymLinksIfOwnerMatch -MultiViews
Options None
AddType text/html .gz
RemoveType .cgi
AddOutputFilterByType DEFLATE text/css
SetOutputFilter DEFLATE
ExpiresActive On
<FilesMatch "\\.(ini|log)$">
    Require all denied
    Order allow,deny
    Deny from all
</FilesMatch>
"""
    assert verdicts(text) == []


@pytest.mark.parametrize(
    ("line", "directive", "verdict"),
    [
        ("Options +FollowSymLinks", "Options +FollowSymLinks", "refused"),
        ("Options -FollowSymLinks", "Options -FollowSymLinks", "refused"),
        ("Options -Indexes +ExecCGI", "Options +ExecCGI", "refused"),
        ("Options All", "Options All", "refused"),
        ("Options +Bogus", "Options +Bogus", "refused"),
        ("SetHandler proxy:unix:/run/php/webarch-bob.sock|fcgi://bob", "SetHandler", "ignored"),
        ("AddHandler cgi-script .php", "AddHandler", "ignored"),
        ("ForceType text/html", "ForceType", "ignored"),
        ("php_flag session.auto_start 0", "php_flag", "ignored"),
        ("Requir all denied", "Requir", "ignored"),
    ],
)
def test_each_line_gets_apaches_verdict(line, directive, verdict):
    assert verdicts(line + "\n") == [(1, directive, verdict)]


def test_skipped_sections_are_not_checked_and_the_others_are():
    text = """<IfModule mod_php.c>
  php_value auto_prepend_file /x
</IfModule>
<IfModule !mod_rewrite.c>
  AddHandler x .y
</IfModule>
<IfModule mod_rewrite.c>
  ForceType text/plain
</IfModule>
<IfVersion < 2.4>
  Order deny,allow
  SetHandler a
</IfVersion>
<IfVersion >= 2.4>
  SetHandler b
</IfVersion>
<If "%{HTTPS} == 'on'">
  php_flag x 1
</If>
<Directory /home/bob>
  Options +FollowSymLinks
</Directory>
"""
    assert verdicts(text) == [
        (8, "ForceType", "ignored"),
        (15, "SetHandler", "ignored"),
        (18, "php_flag", "ignored"),
        (20, "<Directory>", "ignored"),
    ]


def test_continued_lines_are_one_line_numbered_by_their_first():
    text = "AddOutputFilterByType DEFLATE \\\n  text/css \\\n  text/html\nAction x /y\n"
    assert verdicts(text) == [(4, "Action", "ignored")]


def test_findings_say_what_to_write_instead():
    finding = policy.check("php_value upload_max_filesize 64M\n")[0]
    assert ".user.ini" in finding.why
    text = finding.text("/home/alice/sites/www/.htaccess")
    assert text.startswith("/home/alice/sites/www/.htaccess:1: php_value is ignored here: ")
    refused = policy.check("Options +FollowSymLinks\n")[0]
    assert "SymLinksIfOwnerMatch" in refused.why


def test_a_refusal_in_apaches_log_gets_a_hint():
    line = (
        "www.alice.example [2026-12-05 05:41:51.5] [core:alert] [pid 3192:tid 1] [client "
        "127.0.0.1:36164] /home/alice/sites/www/public/t/.htaccess: Option FollowSymlinks "
        "not allowed here"
    )
    hint = policy.refusal_hint(line)
    assert hint is not None
    assert hint.startswith("webarch: /home/alice/sites/www/public/t/.htaccess: Options ")
    assert "SymLinksIfOwnerMatch" in hint
    assert policy.refusal_hint("www.alice.example [x] AH01630: client denied") is None


@pytest.mark.skipif(CORPUS is None, reason="no ../shared/corpus/htaccess next to this checkout")
def test_the_corpus_findings():
    found = {
        (path.name[:2], f.directive, f.verdict)
        for path in sorted(CORPUS.glob("*.htaccess"))
        for f in policy.check(path.read_text())
    }
    assert found == {
        ("03", "ForceType", "ignored"),
        ("11", "Options +FollowSymlinks", "refused"),
        ("13", "Options +FollowSymLinks", "refused"),
        ("16", "AddHandler", "ignored"),
        ("32", "php_flag", "ignored"),
    }
