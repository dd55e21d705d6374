"""Run gcloud command lines through the real gcloud CLI, in one process, without credentials.

Run with gcloud's own Python and its ``lib`` directory on ``PYTHONPATH`` (tests/infra/test_gcloud_commands.py does
that); it is not imported by the tests. Reads {"commands": [argv, ...], "filters": [[expression, resource], ...]}
(each argv starting with "gcloud") on stdin and writes {"commands": [{"argv", "code", "output"}, ...], "filters":
[true|false|"error", ...]} on stdout: what each command did, and whether each ``--filter`` expression (gcloud's own
filter language, compiled by gcloud) selects the given resource.

Each command goes through the same calliope CLI ``gcloud`` builds (``gcloud_main.CreateCLI``), i.e. the same
argument parser, flag types and argument-group rules. With an empty configuration (CLOUDSDK_CONFIG pointing at a
fresh directory) a command that parses stops at its first API call with "You do not currently have an active
account selected" (exit 1); a command gcloud cannot parse exits 2 ("unrecognized arguments", "argument --x:
invalid choice", a missing required flag, ...). Loading the CLI once instead of once per command takes the check
from ~1 s to ~0.05 s per command.
"""

import json
import os
import sys
import tempfile


def main() -> int:
    request = json.load(sys.stdin)
    import gcloud  # lib/gcloud.py, the launcher's module: puts lib/ and lib/third_party first on sys.path

    gcloud._fix_google_module()
    from googlecloudsdk import gcloud_main

    cli = gcloud_main.CreateCLI([])
    results = []
    real_out, real_err = os.dup(1), os.dup(2)
    for argv in request.get("commands", []):
        with tempfile.TemporaryFile() as capture:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(capture.fileno(), 1)
            os.dup2(capture.fileno(), 2)
            try:
                cli.Execute(argv[1:])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException as exc:  # reported, not raised: the next command still runs
                code = f"{type(exc).__name__}: {exc}"
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(real_out, 1)
                os.dup2(real_err, 2)
            capture.seek(0)
            output = capture.read().decode("utf-8", "replace")
        results.append({"argv": argv, "code": code, "output": output[:3000]})
    from googlecloudsdk.core.resource import resource_filter

    matches: list = []
    for expression, resource in request.get("filters", []):
        try:
            matches.append(bool(resource_filter.Compile(expression).Evaluate(resource)))
        except Exception as exc:  # a filter gcloud cannot compile
            matches.append(f"error: {exc}")
    sys.stdout.write(json.dumps({"commands": results, "filters": matches}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
