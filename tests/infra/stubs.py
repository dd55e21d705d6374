"""Shell-level reproductions of infra/deploy.sh: run the real script (not --dry-run) with a stub ``gcloud`` (and,
where a test needs it, a stub ``python3``) first on PATH.

The stub records every call (argv, one JSON list per line) and answers by rules: the first rule whose words all
appear in the call decides its exit status and output, optionally only for its first ``times`` matching calls
(an eventual-consistency failure that clears up). A call no rule matches succeeds with no output, i.e. by
default every resource "exists" and every change "works".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.infra import facts

STUB = """#!{python}
import json, sys
argv = ["gcloud", *sys.argv[1:]]
if "--data-file=-" in argv:
    sys.stdin.read()  # a secret piped in: consumed, not recorded
with open({calls!r}, "a") as fh:
    fh.write(json.dumps(argv) + "\\n")
with open({rules!r}) as fh:
    rules = json.load(fh)
for i, rule in enumerate(rules):
    if all(word in argv for word in rule["has"]):
        if "times" in rule:
            with open({counts!r} + str(i), "a+") as fh:
                fh.seek(0)
                seen = len(fh.read())
                fh.write("x")
            if seen >= rule["times"]:
                continue
        sys.stdout.write(rule.get("stdout", ""))
        sys.stderr.write(rule.get("stderr", ""))
        sys.exit(rule.get("rc", 0))
sys.exit(0)
"""

# What a describe/list answers when the resources exist and are sound (a project number, an enabled AUTH_KEY
# version, the function's URL, a live custom role).
EXISTING = [
    {"has": ["projects", "describe"], "stdout": "123456789\n"},
    {"has": ["secrets", "versions", "list"], "stdout": "1\n"},
    {"has": ["functions", "describe"], "stdout": "https://gptload-xyz-uc.a.run.app\n"},
    {"has": ["firestore", "indexes", "composite", "list"], "stdout": "[]\n"},
    {"has": ["iam", "roles", "describe", "--format=value(deleted)"], "stdout": "\n"},
]
# Nothing exists yet: every describe fails (the reads the script needs still answer).
FRESH = [
    {"has": ["projects", "describe"], "stdout": "123456789\n"},
    {"has": ["functions", "describe"], "stdout": "https://gptload-xyz-uc.a.run.app\n"},
    {"has": ["firestore", "indexes", "composite", "list"], "stdout": "[]\n"},
    {"has": ["secrets", "versions", "list"], "stdout": ""},
    {"has": ["describe"], "rc": 1, "stderr": "ERROR: NOT_FOUND\n"},
]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    calls: list[list[str]] = field(default_factory=list)

    def called(self, *words: str) -> list[list[str]]:
        """Calls whose argv starts with gcloud WORDS..."""
        return [c for c in self.calls if c[1 : 1 + len(words)] == list(words)]


def deploy(tmp_path: Path, rules: list[dict], *args: str, python3: str | None = None, env: dict | None = None) -> Run:
    """Run infra/deploy.sh for real against the stub; ``python3`` (shell text) replaces python3 on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    calls, rules_file, counts = tmp_path / "calls.jsonl", tmp_path / "rules.json", tmp_path / "count-"
    rules_file.write_text(json.dumps(rules))
    stub = bin_dir / "gcloud"
    stub.write_text(STUB.format(python=sys.executable, calls=str(calls), rules=str(rules_file), counts=str(counts)))
    stub.chmod(0o755)
    if python3 is not None:
        fake = bin_dir / "python3"
        fake.write_text(f"#!/bin/sh\nREAL_PYTHON3={sys.executable}\n{python3}\n")
        fake.chmod(0o755)
    full_env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "DEPLOY_RETRY_DELAYS": "0 0 0",  # the script's backoff, without the waiting
        **(env or {}),
    }
    result = subprocess.run(
        ["bash", str(facts.DEPLOY_SH), "--project", "p", "--region", "r", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )
    lines = calls.read_text().splitlines() if calls.exists() else []
    return Run(result.returncode, result.stdout, result.stderr, [json.loads(line) for line in lines])
