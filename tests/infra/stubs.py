"""Shell-level reproductions of infra/deploy.sh: run the real script (not --dry-run) with a stub ``gcloud`` (and,
where a test needs it, a stub ``python3``) first on PATH.

The stub (a bash script generated from the rules) records every call's argv and answers by rules: the first rule whose words all
appear in the call decides its exit status and output, optionally only for its first ``times`` matching calls
(an eventual-consistency failure that clears up). A call no rule matches succeeds with no output, i.e. by
default every resource "exists" and every change "works".
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.infra import facts


def _stub(calls: Path, rules: list[dict], counts: Path, piped: Path) -> str:
    """The stub as a bash script (a Python one costs ~60 ms of CPU a call, and a deploy makes ~50 calls).

    Calls are logged as their arguments separated by US (0x1f), one call per RS (0x1e)-terminated record. What
    ``secrets versions add SECRET --data-file=-`` reads from stdin (a value the script generated in this test run)
    is kept in ``piped/SECRET`` for the tests to check."""
    q = shlex.quote
    lines = [
        "#!/usr/bin/env bash",
        'ARGS=(gcloud "$@")',
        f"{{ printf '%s\\x1f' \"${{ARGS[@]}}\"; printf '\\x1e'; }} >> {q(str(calls))}",
        f'for a in "$@"; do [ "$a" = --data-file=- ] && cat > {q(str(piped))}/"${{4:-stdin}}"; done',
        'has() { local w a; for w in "$@"; do for a in "${ARGS[@]}"; do [ "$a" = "$w" ] && continue 2; done; return 1; done; }',
    ]
    for i, rule in enumerate(rules):
        body = []
        if "times" in rule:
            counter = q(f"{counts}{i}")
            body += [f"c=0; [ -f {counter} ] && c=$(<{counter}); echo $((c + 1)) > {counter}"]
            body += [f'if [ "$c" -lt {int(rule["times"])} ]; then']
        body += [
            f"printf '%s' {q(rule.get('stdout', ''))}",
            f"printf '%s' {q(rule.get('stderr', ''))} >&2",
            f"exit {int(rule.get('rc', 0))}",
        ]
        if "times" in rule:
            body += ["fi"]
        lines += [f"if has {' '.join(q(w) for w in rule['has'])}; then", *("  " + b for b in body), "fi"]
    lines += ["exit 0"]
    return "\n".join(lines) + "\n"


# What a describe/list answers when the resources exist and are sound (a project number, an enabled version of
# each secret (AUTH_KEY, ENCRYPTION_KEY), the service's URL, a live custom role; no Cloud Functions function of an
# older deployment).
EXISTING = [
    {"has": ["projects", "describe"], "stdout": "123456789\n"},
    {"has": ["secrets", "versions", "list"], "stdout": "1\n"},
    {"has": ["run", "services", "describe"], "stdout": "https://gptload-xyz-uc.a.run.app\n"},
    {"has": ["functions", "describe"], "rc": 1, "stderr": "ERROR: NOT_FOUND\n"},  # no function of old deployments
    {"has": ["firestore", "indexes", "composite", "list"], "stdout": "[]\n"},
    {"has": ["iam", "roles", "describe", "--format=value(deleted)"], "stdout": "\n"},
]
# Nothing exists yet: every describe fails (the reads the script needs still answer).
FRESH = [
    {"has": ["projects", "describe"], "stdout": "123456789\n"},
    {"has": ["run", "services", "describe"], "stdout": "https://gptload-xyz-uc.a.run.app\n"},
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
    piped: dict[str, str] = field(default_factory=dict)  # secret name -> the value piped into its new version

    def called(self, *words: str) -> list[list[str]]:
        """Calls whose argv starts with gcloud WORDS..."""
        return [c for c in self.calls if c[1 : 1 + len(words)] == list(words)]


def deploy(tmp_path: Path, rules: list[dict], *args: str, python3: str | None = None, env: dict | None = None) -> Run:
    """Run infra/deploy.sh for real against the stub; ``python3`` (shell text) replaces python3 on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    calls, counts, piped = tmp_path / "calls", tmp_path / "count-", tmp_path / "piped"
    piped.mkdir(exist_ok=True)
    stub = bin_dir / "gcloud"
    stub.write_text(_stub(calls, rules, counts, piped))
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
    records = calls.read_text().split("\x1e")[:-1] if calls.exists() else []
    values = {p.name: p.read_text() for p in piped.iterdir()}
    return Run(result.returncode, result.stdout, result.stderr, [r.split("\x1f")[:-1] for r in records], values)
