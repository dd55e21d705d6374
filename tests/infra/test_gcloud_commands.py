"""Every gcloud command infra/deploy.sh prints or runs, through the real gcloud's argument parser.

The commands come from `deploy.sh --dry-run` (a fresh project, and with the console bucket and a fractional CPU)
and from real runs against the stub gcloud (tests/infra/stubs.py): a fresh project, and a re-run where everything
exists and the custom roles were deleted (the update and undelete branches a dry run never prints). Each goes
through gcloud's own CLI with an empty configuration (tests/infra/gcloud_parse.py): a command that parses stops at
"no active account" (exit 1), a bad one exits 2. A planted bad flag, value and missing argument prove the check
can fail."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require
from tests.infra import facts, stubs
from tests.infra.test_deploy_script import dry_run

PARSED = "You do not currently have an active account selected"


def gcloud_python() -> tuple[str, Path] | None:
    """(gcloud's Python, its lib directory), as the gcloud launcher would pick them."""
    found = shutil.which("gcloud")
    if found is None:
        return None
    sdk = Path(os.path.realpath(found)).parent.parent
    lib = sdk / "lib"
    if not (lib / "googlecloudsdk" / "gcloud_main.py").exists():
        return None
    bundled = sdk / "platform" / "bundledpythonunix" / "bin" / "python3"
    python = os.environ.get("CLOUDSDK_PYTHON") or (str(bundled) if bundled.exists() else shutil.which("python3"))
    return (python, lib) if python else None


def parse_all(commands: list[list[str]], tmp_path: Path) -> list[dict]:
    return gcloud_run(tmp_path, {"commands": commands})["commands"]


def gcloud_run(tmp_path: Path, request: dict) -> dict:
    found = gcloud_python()
    require(found is not None, "gcloud (Google Cloud SDK) is not installed")
    assert found is not None
    python, lib = found
    config = tmp_path / "gcloud-config"
    config.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDSDK_", "GOOGLE_"))}
    env.update({
        "CLOUDSDK_CONFIG": str(config),  # no account, no project: every command stops right after parsing
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        "CLOUDSDK_SURVEY_DISABLE_PROMPTS": "true",
        "PYTHONPATH": str(lib),
    })  # fmt: skip
    result = subprocess.run(
        [python, str(Path(__file__).with_name("gcloud_parse.py"))],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        cwd=facts.ROOT,  # deploy.sh runs from the repository root (relative paths such as --policy=infra/...)
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def _printed(stdout: str) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith(("+ gcloud ", "? gcloud "))]


@pytest.fixture(scope="module")
def commands(tmp_path_factory) -> list[list[str]]:
    out: list[list[str]] = []
    for i, extra in enumerate([(), ("--console-bucket", "--cpu", "0.5", "--concurrency", "1", "--name", "gl-x")]):
        result, _ = dry_run(tmp_path_factory.mktemp(f"dry{i}"), "--project", "p", "--region", "us-central1", *extra)
        assert result.returncode == 0, result.stderr
        out += _printed(result.stdout)
    deleted_roles = [{"has": ["iam", "roles", "describe", "--format=value(deleted)"], "stdout": "True\n"}]
    for rules in (stubs.FRESH, deleted_roles + stubs.EXISTING):
        run = stubs.deploy(tmp_path_factory.mktemp("stub"), rules)
        assert run.returncode == 0, run.stderr
        out += run.calls
    unique = list({json.dumps(c): c for c in out}.values())
    for words in (("iam", "roles", "undelete"), ("iam", "roles", "update"), ("scheduler", "jobs", "update")):
        assert any(c[1 : 1 + len(words)] == list(words) for c in unique), words
    # the ENCRYPTION_KEY secret's commands: create, both version listings, the version the first run adds, the grant
    key = "gptload-encryption-key"
    for words in (
        ("secrets", "create", key),
        ("secrets", "versions", "add", key),
        ("secrets", "add-iam-policy-binding", key),
    ):
        assert any(c[1 : 1 + len(words)] == list(words) for c in unique), words
    listings = [c for c in unique if c[1:5] == ["secrets", "versions", "list", key]]
    assert {any(a.startswith("--filter=") for a in c) for c in listings} == {True, False}
    return unique


def test_every_deploy_command_parses(commands, tmp_path):
    started = time.monotonic()
    results = parse_all(commands, tmp_path)
    elapsed = time.monotonic() - started
    bad = [(shlex.join(r["argv"]), r["code"], r["output"][:800]) for r in results if PARSED not in r["output"]]
    assert not bad, "\n\n".join(f"{cmd}\n  exit {code}: {output}" for cmd, code, output in bad)
    assert all(r["code"] == 1 for r in results)
    print(f"{len(results)} gcloud commands parsed in {elapsed:.1f} s")


def test_a_planted_bad_command_is_caught(commands, tmp_path):
    (deploy,) = [c for c in commands if c[1:3] == ["run", "deploy"]][:1]
    (secret,) = [c for c in commands if c[1:3] == ["secrets", "create"]][:1]
    (job,) = [c for c in commands if c[1:5] == ["scheduler", "jobs", "create", "http"]][:1]
    planted = [
        [*deploy, "--concurency=80"],  # a misspelt flag
        [a.replace("--replication-policy=automatic", "--replication-policy=auto") for a in secret],  # a bad choice
        [a for a in job if not a.startswith("--schedule=")],  # a missing required flag
        [a.replace("--function=handler", "--function") for a in deploy],  # a flag missing its value
    ]
    results = parse_all(planted, tmp_path)
    for result in results:  # what test_every_deploy_command_parses would report
        assert result["code"] != 0 and PARSED not in result["output"], result
    assert results[0]["code"] == 2 and "unrecognized arguments: --concurency=80" in results[0]["output"]
    assert "--replication-policy is invalid" in results[1]["output"]  # gcloud checks this choice after parsing
    assert results[2]["code"] == 2 and "--schedule" in results[2]["output"]
    assert results[3]["code"] == 2 and "--function" in results[3]["output"]


def test_the_filters_select_what_they_mean(commands, tmp_path):
    (legacy,) = [c for c in commands if c[1:3] == ["secrets", "list"]][:1]
    (versions,) = [c for c in commands if c[1:4] == ["secrets", "versions", "list"]][:1]
    legacy_filter = next(a for a in legacy if a.startswith("--filter=")).split("=", 1)[1]
    versions_filter = next(a for a in versions if a.startswith("--filter=")).split("=", 1)[1]
    secrets = "projects/123/secrets/"
    cases = [
        (legacy_filter, {"name": f"{secrets}gptload-vault-main-keys-0"}, True),  # an old-layout shard
        (legacy_filter, {"name": f"{secrets}gptload-vault-main-keys-12"}, True),
        (legacy_filter, {"name": f"{secrets}gptload_vault-main-keys-0"}, False),  # the new layout
        (legacy_filter, {"name": f"{secrets}gptload-vault-x-auth-key"}, False),  # deployment "gptload-vault-x"
        (legacy_filter, {"name": f"{secrets}gptload-vault-x_vault-main-keys-0"}, False),  # ... and its shards
        (legacy_filter, {"name": f"{secrets}gptload-auth-key"}, False),
        (versions_filter, {"name": "1", "state": "ENABLED"}, True),
        (versions_filter, {"name": "1", "state": "DISABLED"}, False),
        (versions_filter, {"name": "1", "state": "DESTROYED"}, False),
    ]
    answers = gcloud_run(tmp_path, {"filters": [[f, r] for f, r, _ in cases]})["filters"]
    assert answers == [want for *_, want in cases], list(zip(cases, answers))


def test_index_exemption_commands_parse_and_a_wrong_one_is_caught(commands, tmp_path):
    exemptions = [c for c in commands if c[1:5] == ["firestore", "indexes", "fields", "update"]]
    fields = {(next(a for a in c if a.startswith("--collection-group=")).split("=", 1)[1], c[5]) for c in exemptions}
    assert fields == facts.store_index_exemptions()  # every exemption (TTL fields included) went through the parser
    (rows,) = [c for c in exemptions if c[5] == "rows"][:1]
    planted = [
        [a.replace("--disable-indexes", "--disable-index") for a in rows],  # a misspelt flag
        [a for a in rows if a != "--disable-indexes"],  # no index setting: gcloud requires one of three
        [a for a in rows if not a.startswith("--collection-group=")],  # the field's collection missing
        [*rows[:-1], "--index=order=asc"],  # a bad index mode
    ]
    results = parse_all(planted, tmp_path)
    for result in results:
        assert result["code"] != 0 and PARSED not in result["output"], result
    assert results[0]["code"] == 2 and "unrecognized arguments: --disable-index" in results[0]["output"]
    assert results[1]["code"] == 2 and "Exactly one of (--clear-exemption | --disable-indexes" in results[1]["output"]
    assert "Failed to find attribute [collection-group]" in results[2]["output"]
    assert results[3]["code"] == 2 and "argument --index: Invalid choice: asc" in results[3]["output"]
