"""What the deployment must satisfy, derived from the code, and a small reader of the Terraform files.

Shared by test_terraform.py and test_deploy_script.py, so that both deployment paths are held to the same facts.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TF_DIR = ROOT / "infra" / "terraform"
DEPLOY_SH = ROOT / "infra" / "deploy.sh"

PRIMITIVE_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}

# Settings a serverless deployment (STORE=firestore, VAULT=secretmanager, Cloud Scheduler) must set. Everything
# else config.py reads keeps its default there (PORT is Cloud Run's, HOST/DATA_DIR/MAINTENANCE_INTERVAL_SECONDS
# are embedded-mode only, as are REQUEST_*_TIMEOUT_SECONDS and GRACEFUL_TIMEOUT_SECONDS (python main.py's own
# server)). TRUSTED_PROXY_HOPS=1: Google's front end is the one hop.
REQUIRED_ENV = {
    "STORE",
    "VAULT",
    "GOOGLE_CLOUD_PROJECT",
    "FIRESTORE_DATABASE",
    "SECRET_PREFIX",
    "THREADS",
    "STATE_REFRESH_SECONDS",
    "ALLOWED_ORIGINS",
    "OIDC_AUDIENCE",
    "OIDC_SERVICE_ACCOUNT",
    "TRUSTED_PROXY_HOPS",
}
# Secret environment variables, each from a Secret Manager secret of its own: AUTH_KEY (the admin password) and
# ENCRYPTION_KEY (seals proxy_url credentials at rest; without it the deployed admin API refuses a proxy_url with
# credentials). Generated on the first deploy; ENCRYPTION_KEY is never rotated by a deploy.
REQUIRED_SECRET_ENV = {"AUTH_KEY", "ENCRYPTION_KEY"}
NEVER_PLAIN = {"AUTH_KEY", "ENCRYPTION_KEY"}  # secrets: never in plain environment variables
NEVER_SET = {"PORT", "DATA_DIR"}  # PORT is reserved by Cloud Run; DATA_DIR is the embedded mode's
EXPECTED_VALUES = {"STORE": "firestore", "VAULT": "secretmanager", "TRUSTED_PROXY_HOPS": "1"}
# The secrets' names for a deployment NAME (both paths): outside the vault's prefix, the service may only read them.
SECRET_ENV_SECRETS = {"AUTH_KEY": "{name}-auth-key", "ENCRYPTION_KEY": "{name}-encryption-key"}

# Secret Manager client method -> the permission it needs (gptload/vault/secret_manager_vault.py calls them).
SECRET_MANAGER_PERMISSIONS = {
    "access_secret_version": "secretmanager.versions.access",
    "add_secret_version": "secretmanager.versions.add",
    "create_secret": "secretmanager.secrets.create",
    "delete_secret": "secretmanager.secrets.delete",
    "destroy_secret_version": "secretmanager.versions.destroy",
}


# -- facts from the code --------------------------------------------------------------------------------------
def env_vars_read_by_code() -> set[str]:
    """Every NAME in ``env.get("NAME"...)`` or ``_helper(env, "NAME", ...)`` of gptload/config.py."""
    tree = ast.parse((ROOT / "gptload" / "config.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        args = node.args
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "get" and isinstance(func.value, ast.Name):
            if func.value.id == "env" and args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
                names.add(args[0].value)
        elif len(args) >= 2 and isinstance(args[0], ast.Name) and args[0].id == "env":
            if isinstance(args[1], ast.Constant) and isinstance(args[1].value, str):
                names.add(args[1].value)
    return names


def entry_point() -> str:
    """The module-level function main.py exposes to functions-framework (``handler``)."""
    tree = ast.parse((ROOT / "main.py").read_text())
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "handler" in functions, "main.py no longer defines handler(request)"
    return "handler"


def maintenance_path() -> str:
    source = (ROOT / "gptload" / "web" / "router.py").read_text()
    match = re.search(r'Route\("(/api/tasks/run)", \("POST",\), SCHEDULER,', source)
    assert match, "the maintenance route POST /api/tasks/run is gone from gptload/web/router.py"
    return match.group(1)


def vault_permissions() -> set[str]:
    """Permissions of every Secret Manager call the vault makes; unknown calls fail loudly."""
    source = (ROOT / "gptload" / "vault" / "secret_manager_vault.py").read_text()
    methods = set(re.findall(r'_call\(\s*"(\w+)"', source))
    assert methods, "found no Secret Manager calls in the vault"
    unknown = methods - SECRET_MANAGER_PERMISSIONS.keys()
    assert not unknown, f"the vault makes new Secret Manager calls {unknown}: grant their permissions, list them here"
    return {SECRET_MANAGER_PERMISSIONS[m] for m in methods}


def store_indexes() -> set[tuple[str, str, tuple[tuple[str, str], ...]]]:
    from gptload.store.firestore.schema import FIRESTORE_INDEXES

    return {
        (
            ix["collection"],
            str(ix.get("query_scope", "COLLECTION")).upper(),
            tuple((f, o.upper()) for f, o in ix["fields"]),
        )
        for ix in FIRESTORE_INDEXES
    }


def store_ttl_fields() -> set[tuple[str, str]]:
    from gptload.store.firestore.schema import FIRESTORE_TTL_FIELDS

    return {(c, f) for c, f in FIRESTORE_TTL_FIELDS}


def store_index_exemptions() -> set[tuple[str, str]]:
    """Fields declared without single-field indexes, TTL fields included (they are exempted with their TTL)."""
    from gptload.store.firestore.schema import index_exempt_fields

    return index_exempt_fields()


# -- Terraform --------------------------------------------------------------------------------------------------
def require_hcl2() -> None:
    """python-hcl2 (requirements-dev.txt) parses the .tf files: skip locally without it, fail in CI."""
    import importlib.util

    from tests.conftest import require

    require(importlib.util.find_spec("hcl2") is not None, "python-hcl2 is not installed (pip install python-hcl2)")


# -- Terraform (reader) ---------------------------------------------------------------------------------------
def _unquote(value: str) -> str:
    # python-hcl2 >= 5 keeps string literals quoted ("\"firestore\""); older versions do not.
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def _norm(value: Any) -> Any:
    if isinstance(value, dict):
        return {_unquote(k): _norm(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, str):
        return _unquote(value)
    return value


class Terraform:
    """All .tf files of infra/terraform, merged: resources[type][name], data[type][name], variables, locals, outputs."""

    def __init__(self, directory: Path = TF_DIR) -> None:
        import hcl2

        self.resources: dict[str, dict[str, dict]] = {}
        self.data: dict[str, dict[str, dict]] = {}
        self.variables: dict[str, dict] = {}
        self.locals: dict[str, Any] = {}
        self.outputs: dict[str, dict] = {}
        self.text = ""
        for path in sorted(directory.glob("*.tf")):
            self.text += path.read_text() + "\n"
            with path.open() as fh:
                doc = _norm(hcl2.load(fh))
            for block in doc.get("resource", []):
                for rtype, named in block.items():
                    self.resources.setdefault(rtype, {}).update(named)
            for block in doc.get("data", []):
                for dtype, named in block.items():
                    self.data.setdefault(dtype, {}).update(named)
            for block in doc.get("variable", []):
                self.variables.update(block)
            for block in doc.get("locals", []):
                self.locals.update(block)
            for block in doc.get("output", []):
                self.outputs.update(block)

    def one(self, rtype: str, name: str | None = None) -> dict:
        named = self.resources.get(rtype, {})
        if name is None:
            assert len(named) == 1, f"expected one {rtype}, found {sorted(named)}"
            return next(iter(named.values()))
        assert name in named, f"no {rtype}.{name}"
        return named[name]

    def all_strings(self) -> list[str]:
        out: list[str] = []

        def walk(v: Any) -> None:
            if isinstance(v, dict):
                for x in v.values():
                    walk(x)
            elif isinstance(v, list):
                for x in v:
                    walk(x)
            elif isinstance(v, str):
                out.append(v)

        walk([self.resources, self.data, self.locals, self.outputs])
        return out

    # A deliberately small evaluator: ${var.x}, ${local.x} and ${TYPE.NAME.ATTR} (argument or service-account
    # email) inside strings, with variable defaults and the given overrides. Anything else stays as written.
    def resolve(self, value: str, overrides: dict[str, Any], depth: int = 0) -> str:
        assert depth < 20, f"reference loop resolving {value!r}"

        def sub(match: re.Match) -> str:
            ref = match.group(1)
            parts = ref.split(".")
            if parts[0] == "var" and len(parts) == 2:
                if parts[1] in overrides:
                    return _text(overrides[parts[1]])
                default = self.variables.get(parts[1], {}).get("default")
                return match.group(0) if default is None else _text(default)
            if parts[0] == "local" and len(parts) == 2 and isinstance(self.locals.get(parts[1]), str):
                return self.resolve(self.locals[parts[1]], overrides, depth + 1)
            if len(parts) == 3 and parts[0] in self.resources and parts[1] in self.resources[parts[0]]:
                body = self.resources[parts[0]][parts[1]]
                if parts[0] == "google_service_account" and parts[2] == "email":
                    account = self.resolve(body["account_id"], overrides, depth + 1)
                    project = self.resolve("${var.project}", overrides, depth + 1)
                    return f"{account}@{project}.iam.gserviceaccount.com"
                attr = {"google_firestore_database": {"name": "name"}}.get(parts[0], {}).get(parts[2], parts[2])
                if isinstance(body.get(attr), str):
                    return self.resolve(body[attr], overrides, depth + 1)
            return match.group(0)

        def first_set(match: re.Match) -> str:  # ${coalesce(A, "B")}: the first argument that is not empty
            for arg in (a.strip() for a in match.group(1).split(",")):
                text = arg[1:-1] if arg.startswith('"') else "${" + arg + "}"
                resolved = self.resolve(text, overrides, depth + 1)
                if resolved and "${" not in resolved:
                    return resolved
            return match.group(0)

        value = re.sub(r'\$\{coalesce\(((?:[\w.]+|"[^"]*")(?:, (?:[\w.]+|"[^"]*"))*)\)\}', first_set, value)
        return re.sub(r"\$\{([A-Za-z_][\w.]*)\}", sub, value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- upload filters ---------------------------------------------------------------------------------------------
def _glob_regex(pattern: str) -> re.Pattern:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out += "(?:/.*)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def archive_excluded(path: str, excludes: list[str]) -> bool:
    """Terraform archive_file ``excludes`` (doublestar globs against the path relative to source_dir)."""
    return any(_glob_regex(p).match(path) for p in excludes)


def gcloudignore_excluded(path: str, patterns: list[str]) -> bool:
    """.gcloudignore (gitignore syntax, as far as this repository's file uses it: no negations)."""
    parts = path.split("/")
    for raw in patterns:
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        assert not pattern.startswith("!"), "negations are not modelled here"
        dir_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        anchored = "/" in pattern
        pattern = pattern.lstrip("/")
        for i in range(len(parts)):
            is_dir = i < len(parts) - 1
            if dir_only and not is_dir:
                continue
            candidate = "/".join(parts[: i + 1]) if anchored else parts[i]
            if fnmatch.fnmatchcase(candidate, pattern):
                return True
    return False


def repo_files() -> list[str]:
    """Every file under the repository root except .git's (both filters exclude .git; it is just large)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        if Path(dirpath) == ROOT and ".git" in dirnames:
            dirnames.remove(".git")
        out += [(Path(dirpath) / f).relative_to(ROOT).as_posix() for f in filenames]
    return sorted(out)
