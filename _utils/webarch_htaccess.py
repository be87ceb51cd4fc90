"""
The .htaccess policy: what an account's .htaccess may hold, what Apache
ignores in it, and what makes Apache refuse the whole directory.

One table drives the vhosts (``AllowOverride`` and ``AllowOverrideList`` in
apache-account.conf) and the checker that tells an account, line by line,
what its .htaccess files will do here (webarch-htaccess-check, the hints the
log splitter adds to an account's error log, the importer's report).

The choice (see README.rst, ".htaccess files"): ``Nonfatal=All``.  A directive
the policy does not allow, or one Apache does not know (``php_value`` with
PHP-FPM, a module this server does not load), is ignored with a warning
instead of answering 500 for the whole directory, because real applications
ship such lines unguarded.  What stays fatal is what Apache itself refuses
while running an allowed directive: an ``Options`` word outside the allowed
ones (``FollowSymLinks`` above all), or a syntax error.
"""

from __future__ import annotations

import re
from typing import NamedTuple

#: The override groups and the Options words an account's .htaccess may use.
ALLOWED_OPTIONS = ("Indexes", "MultiViews", "SymLinksIfOwnerMatch")

#: Apache's AllowOverride line for every site type that reads .htaccess files.
ALLOW_OVERRIDE = "AuthConfig Indexes Limit Options=" + ",".join(ALLOWED_OPTIONS) + " Nonfatal=All"

#: Directives allowed one by one (AllowOverrideList), outside those groups:
#: rewrites, error documents, headers, environment, redirects, content types,
#: encodings and languages, output filters.  Nothing here can choose a handler,
#: a pool or a file outside the site: not SetHandler, AddHandler, Action,
#: ForceType, ProxyFCGI*, PassEnv, php_value, Include.
LISTED = (
    "RewriteEngine", "RewriteBase", "RewriteCond", "RewriteRule", "RewriteOptions",
    "ErrorDocument", "Header", "RequestHeader", "AddType", "AddCharset", "AddDefaultCharset",
    "AddEncoding", "AddLanguage", "DefaultLanguage", "AddOutputFilterByType", "FileETag",
    "Redirect", "RedirectMatch", "RedirectPermanent", "RedirectTemp", "SetEnv", "UnsetEnv",
    "SetEnvIf", "SetEnvIfNoCase", "SetEnvIfExpr", "BrowserMatch", "BrowserMatchNoCase",
    "AddOutputFilter", "SetOutputFilter", "RemoveOutputFilter", "RemoveType",
    "RemoveEncoding", "RemoveCharset", "RemoveLanguage", "LanguagePriority",
    "ForceLanguagePriority", "DefaultType",
)  # fmt: skip

#: What the AuthConfig, Indexes and Limit groups let through (of the modules
#: webarch's Apache loads), besides Options: for the checker only.
GROUPED = (
    # AuthConfig
    "AuthType", "AuthName", "AuthUserFile", "AuthGroupFile", "AuthBasicProvider",
    "AuthBasicAuthoritative", "AuthBasicFake", "AuthBasicUseDigestAlgorithm", "AuthMerging",
    "Require", "Satisfy", "<RequireAll", "<RequireAny", "<RequireNone",
    # Indexes
    "DirectoryIndex", "DirectoryIndexRedirect", "DirectorySlash", "DirectoryCheckHandler",
    "FallbackResource", "ExpiresActive", "ExpiresByType", "ExpiresDefault", "IndexIgnore",
    "IndexIgnoreReset", "IndexOptions", "IndexOrderDefault", "IndexStyleSheet",
    "IndexHeadInsert", "AddDescription", "AddIcon", "AddIconByEncoding", "AddIconByType",
    "AddAlt", "AddAltByEncoding", "AddAltByType", "DefaultIcon", "HeaderName", "ReadmeName",
    # Limit
    "Order", "Allow", "Deny",
    # Sections any override may hold
    "<Files", "<FilesMatch", "<Limit", "<LimitExcept", "<If", "<ElseIf", "<Else",
    "<IfModule", "<IfVersion", "<IfDefine", "<IfDirective", "<IfSection", "<IfFile",
    "Options",
)  # fmt: skip

#: Options words that make Apache answer 500 for the whole directory, and why.
REFUSED_OPTIONS = {
    "followsymlinks": (
        "a link could reach another account's files; write Options +SymLinksIfOwnerMatch "
        "(links to the account's own files keep working) or delete the line"
    ),
    "execcgi": "no CGI runs here (PHP runs in the account's PHP-FPM pool); delete the word",
    "includes": "server-side includes are off here; delete the word",
    "includesnoexec": "server-side includes are off here; delete the word",
    "all": "Options All includes FollowSymLinks and ExecCGI; name the allowed options instead",
}

#: Why an ignored directive is ignored, and what to write instead (by lower-case name).
IGNORED_WHY = {
    "php_value": "PHP runs in PHP-FPM here: put the setting in a .user.ini file "
    "in the same directory (name = value)",
    "php_flag": "PHP runs in PHP-FPM here: put the setting in a .user.ini file "
    "in the same directory (name = On|Off); php_flag engine off does nothing here: to stop "
    'PHP in a directory write <FilesMatch "\\.(php[0-9]?|phtml|phar)$"> Require all denied '
    "</FilesMatch>",
    "php_admin_value": "the pool's admin settings come from pillar; ask the server's admin",
    "php_admin_flag": "the pool's admin settings come from pillar; ask the server's admin",
    "sethandler": "handlers are chosen by the server (PHP files go to the account's own pool); "
    'to stop PHP in a directory write <FilesMatch "\\.(php[0-9]?|phtml|phar)$"> '
    "Require all denied </FilesMatch>",
    "removehandler": "PHP is not a handler mapping here; to stop PHP in a directory write "
    '<FilesMatch "\\.(php[0-9]?|phtml|phar)$"> Require all denied </FilesMatch>',
    "addhandler": "handlers are chosen by the server (PHP files go to the account's own pool)",
    "action": "handlers are chosen by the server (PHP files go to the account's own pool)",
    "forcetype": "a forced type can choose a handler; use AddType for the file's extension",
    "passenv": "the server's environment is not passed to sites; use SetEnv",
}

#: The Options words Apache knows (anything else is "Illegal option", refused).
KNOWN_OPTIONS = frozenset(
    {"none", "indexes", "multiviews", "symlinksifownermatch", *REFUSED_OPTIONS}
)

#: The Apache version the checker evaluates <IfVersion> against (Debian 12 and 13).
APACHE_VERSION = (2, 4, 62)

#: Modules webarch's Apache loads (short names, as in mod_NAME.c / NAME_module).
LOADED_MODULES = frozenset(
    {
        "core", "so", "watchdog", "http", "log_config", "logio", "version", "unixd",
        "access_compat", "alias", "auth_basic", "authn_core", "authn_file", "authz_core",
        "authz_host", "authz_user", "autoindex", "deflate", "dir", "env", "expires",
        "filter", "headers", "http2", "md", "mime", "mpm_event", "negotiation", "proxy",
        "proxy_fcgi", "reqtimeout", "rewrite", "setenvif", "socache_shmcb", "ssl",
    }
)  # fmt: skip

ALLOWED = frozenset(name.lower() for name in (*LISTED, *GROUPED))

SECTION_RE = re.compile(r"^<(/?)([A-Za-z]+)\s*(.*?)>?\s*$")
MODULE_RE = re.compile(r"^(?:mod_)?([a-z0-9_]+?)(?:\.c|_module)?$")
VERSION_RE = re.compile(r"^(!?)\s*(=|==|>|>=|<|<=|~)?\s*([0-9.]+|/.*/)$")


class Finding(NamedTuple):
    """A .htaccess line that will not work as written."""

    #: The line's number (1-based, the first of a continued line).
    line: int
    #: The directive (or "Options +WORD").
    directive: str
    #: "ignored" (Apache skips the line and warns) or "refused" (500 for the directory).
    verdict: str
    #: Why, and what to write instead.
    why: str

    def text(self, path: str) -> str:
        """One line for a report: ``PATH:LINE: DIRECTIVE is VERDICT here: WHY``."""
        return f"{path}:{self.line}: {self.directive} is {self.verdict} here: {self.why}"


def logical_lines(text: str) -> list[tuple[int, str]]:
    """The configuration lines of ``text`` with their numbers: continuations
    joined, blank lines and comments dropped."""
    lines: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        part = raw.strip()
        if pending is not None:
            part = pending[1] + " " + part
            number = pending[0]
            pending = None
        if part.endswith("\\"):
            pending = (number, part[:-1].rstrip())
            continue
        if part and not part.startswith("#"):
            lines.append((number, part))
    if pending is not None and pending[1]:
        lines.append(pending)
    return lines


def module_name(argument: str) -> str:
    """The short name of an <IfModule> argument (mod_rewrite.c, rewrite_module -> rewrite)."""
    match = MODULE_RE.match(argument.strip().strip("\"'").lower())
    return match.group(1) if match else argument


def _version_holds(argument: str, version: tuple[int, ...]) -> bool:
    """Whether an <IfVersion> condition holds for ``version`` (regexes: assumed to hold)."""
    match = VERSION_RE.match(argument.strip())
    if not match:
        return True
    negate, op, wanted = match.group(1) == "!", match.group(2) or "=", match.group(3)
    if wanted.startswith("/") or op == "~":
        return not negate
    want = tuple(int(part) for part in wanted.split(".") if part)
    have = version[: len(want)]
    holds = {
        "=": have == want,
        "==": have == want,
        ">": have > want,
        ">=": have >= want,
        "<": have < want,
        "<=": have <= want,
    }[op]
    return holds != negate


def _section_holds(name: str, argument: str, modules: frozenset[str]) -> bool:
    """Whether Apache reads what a conditional section holds."""
    argument = argument.strip()
    negate = argument.startswith("!")
    argument = argument.lstrip("!").strip()
    if name == "ifmodule":
        return (module_name(argument) in modules) != negate
    if name == "ifversion":
        return _version_holds(("!" if negate else "") + argument, APACHE_VERSION)
    if name == "ifdefine":
        return negate  # nothing is -D defined on a webarch server
    if name == "ifdirective":
        return (argument.lower() in ALLOWED) != negate
    return True  # <If>, <Files>, <IfFile>, ...: their content is read (and checked)


def _options_finding(number: int, argument: str) -> Finding | None:
    """The finding for an Options line, if any of its words is refused."""
    for word in argument.split():
        option = word.lstrip("+-").lower()
        if option not in KNOWN_OPTIONS:
            return Finding(number, f"Options {word}", "refused", "Apache knows no such option")
        if option in REFUSED_OPTIONS:
            return Finding(number, f"Options {word}", "refused", REFUSED_OPTIONS[option])
    return None


def ignored_why(directive: str) -> str:
    """Why ``directive`` is ignored in an account's .htaccess, and what to do."""
    return IGNORED_WHY.get(
        directive.lower(),
        "it is not among the directives an account's .htaccess may use on this server "
        "(or no module here knows it); see the README's list",
    )


def check(text: str, modules: frozenset[str] = LOADED_MODULES) -> list[Finding]:
    """What of a .htaccess file's ``text`` will not work as written, line by line.

    Sections whose condition does not hold on this server (``<IfModule mod_php.c>``)
    are skipped, as Apache skips them.
    """
    findings: list[Finding] = []
    skipping: list[bool] = []  # per open section: is its content skipped?
    for number, line in logical_lines(text):
        section = SECTION_RE.match(line) if line.startswith("<") else None
        if section:
            closing, name = section.group(1) == "/", section.group(2).lower()
            if closing:
                if skipping:
                    skipping.pop()
                continue
            skipped = bool(skipping and skipping[-1])
            if not skipped and f"<{name}" not in ALLOWED:
                findings.append(Finding(number, f"<{section.group(2)}>", "ignored",
                                        ignored_why(section.group(2))))  # fmt: skip
                skipped = True
            holds = _section_holds(name, section.group(3), modules)
            skipping.append(skipped or not holds)
            continue
        if skipping and skipping[-1]:
            continue
        directive, _, argument = line.partition(" ")
        if directive.lower() == "options":
            finding = _options_finding(number, argument)
        elif directive.lower() in ALLOWED:
            finding = None
        else:
            finding = Finding(number, directive, "ignored", ignored_why(directive))
        if finding is not None:
            findings.append(finding)
    return findings


#: Apache's own error for a refused .htaccess line, as the account's log shows it.
APACHE_REFUSAL_RE = re.compile(
    r"(?P<path>/\S*\.htaccess): (?:Option (?P<option>\S+) not allowed here"
    r"|Illegal option (?P<illegal>\S+)|(?P<directive>\S+) not allowed)"
)


def refusal_hint(log_line: str) -> str | None:
    """The webarch hint for an Apache error line about a refused .htaccess line, or None."""
    match = APACHE_REFUSAL_RE.search(log_line)
    if not match:
        return None
    if match.group("option") or match.group("illegal"):
        word = match.group("option") or match.group("illegal")
        why = REFUSED_OPTIONS.get(word.lower(), "Apache knows no such option")
        return f"webarch: {match.group('path')}: Options {word} is refused here: {why}"
    return f"webarch: {match.group('path')}: {match.group('directive')} is refused here"
