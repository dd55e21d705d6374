"""infra/terraform/*.tf against the providers' own schemas (tests/infra/provider_schema.py): every resource and data
block, argument, nested block, required argument, enum and attribute reference. What `terraform validate` would
catch, offline; the planted faults below prove each kind of mistake is caught."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.infra import facts
from tests.infra import provider_schema as ps

META = {"count", "for_each", "depends_on", "provider", "lifecycle"}
PROVIDER_PREFIXES = "|".join(s.split("/")[1] for s in ps.PACKAGES)
# data.TYPE.NAME / ephemeral.TYPE.NAME / TYPE.NAME, [index], then .attr / [n] / ["key"] steps. Not preceded by
# anything that would make it part of a longer word, a path or a literal ("roles/storage.objectViewer").
REFERENCE = re.compile(
    rf"(?<![\w./:-])(?:(data|ephemeral)\.)?((?:{PROVIDER_PREFIXES})_\w+)\.(\w+)(\[[^\]]*\])?((?:\.\w+|\[[^\]]*\])*)"
)


@pytest.fixture(scope="module")
def schemas_available():
    facts.require_hcl2()
    if not ps.fetched() and shutil.which("npm"):
        try:
            ps.fetch()
        except Exception as exc:  # offline: skip locally, fail in CI (below)
            print(f"could not fetch the provider schemas: {exc}")
    require(ps.fetched(), f"provider schemas not fetched (python -m tests.infra.provider_schema -> {ps.cache_dir()})")


def _unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key


def _is_block(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and v.get("__is_block__") for v in value)


def _literal(value: Any) -> str | None:
    """The text of a plain string literal ("DESCENDING"), None for an expression or a non-string."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"' and "${" not in value:
        return value[1:-1]
    return None


def load(texts: dict[str, str]) -> dict[str, list[tuple[str, str, str, dict]]]:
    """{"resource"|"data"|"ephemeral": [(file, type, name, body)]} plus every other top-level block's raw body."""
    import hcl2

    out: dict[str, list] = {"resource": [], "data": [], "ephemeral": [], "other": []}
    for file, text in texts.items():
        doc = hcl2.loads(text)
        for kind, blocks in doc.items():
            for block in blocks:
                if kind in ("resource", "data", "ephemeral"):
                    for rtype, named in block.items():
                        for name, body in named.items():
                            out[kind].append((file, _unquote(rtype), _unquote(name), body))
                else:
                    out["other"].append((file, kind, "", block))
    return out


def _check_block(schema: ps.Schema, iface: str | None, body: dict, where: str, errors: list[str], top: bool) -> None:
    arguments = schema.block(iface).arguments
    present = set()
    for key, value in body.items():
        if key.startswith("__"):
            continue
        if top and key in META:
            continue
        if key == "dynamic":
            for dyn in value:
                for label, spec in dyn.items():
                    label = _unquote(label)
                    arg = arguments.get(label)
                    if arg is None or arg.block is None:
                        errors.append(f"{where}: dynamic {label!r} is not a nested block of {schema.type}")
                        continue
                    present.add(label)
                    for content in spec.get("content", []):
                        _check_block(schema, arg.block, content, f"{where}.{label}", errors, top=False)
            continue
        arg = arguments.get(key)
        if arg is None:
            errors.append(f"{where}: unknown argument {key!r} (schema: {sorted(arguments)})")
            continue
        present.add(key)
        if arg.block:
            if not _is_block(value):
                errors.append(f"{where}: {key!r} is a nested block, not an argument")
                continue
            if len(value) > 1 and not arg.repeatable:
                errors.append(f"{where}: block {key!r} may appear once")
            for item in value:
                _check_block(schema, arg.block, item, f"{where}.{key}", errors, top=False)
        else:
            if _is_block(value):
                errors.append(f"{where}: {key!r} is an argument, not a nested block")
                continue
            literal = _literal(value)
            if arg.enum and literal is not None and literal not in arg.enum:
                errors.append(f"{where}: {key} = {literal!r} is not one of {list(arg.enum)}")
    for name, arg in arguments.items():
        if arg.required and name not in present:
            errors.append(f"{where}: missing required {'block' if arg.block else 'argument'} {name!r}")


def _strings(value: Any):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def _check_reference(match: re.Match, declared: dict, where: str, errors: list[str]) -> None:
    kind, rtype, name, _index, steps = match.groups()
    kind = kind or "resource"
    ref = match.group(0)
    if (kind, rtype, name) not in declared:
        errors.append(f"{where}: {ref} names no declared {kind} {rtype}.{name}")
        return
    schema = declared[(kind, rtype, name)]
    if schema is None:
        return
    parts = re.findall(r"\.(\w+)|\[([^\]]*)\]", steps)
    # TYPE.NAME alone (depends_on) names the resource; its attribute chain is in `steps`.
    owner: str | None = schema.main_class
    for attr, index in parts:
        if index:
            continue  # a list element (a block is a list, even with one element) or a map key
        if owner is None:
            break  # past a plain value (a map, an object attribute): not checked further
        type_text = schema.attribute(owner, attr)
        if type_text is None:
            errors.append(f"{where}: {ref}: {rtype} has no attribute {attr!r} here")
            return
        owner = schema.element_class(type_text)


def check(texts: dict[str, str]) -> list[str]:
    """Every mistake `terraform validate` would report about provider schemas, as messages."""
    blocks = load(texts)
    errors: list[str] = []
    declared: dict[tuple[str, str, str], ps.Schema | None] = {}
    for kind in ("resource", "data", "ephemeral"):
        for file, rtype, name, body in blocks[kind]:
            where = f"{file}: {kind} {rtype}.{name}"
            if ps.provider_of(rtype) is None:
                errors.append(f"{where}: no provider schema for {rtype} (add its package to provider_schema.PACKAGES)")
                declared[(kind, rtype, name)] = None
                continue
            # The CDKTF bindings carry no ephemeral resources; an ephemeral random_password takes a subset of the
            # managed resource's arguments (hashicorp/random docs), so it is checked against that schema.
            schema = ps.schema("resource" if kind == "ephemeral" else kind, rtype)
            if schema is None:
                errors.append(f"{where}: {rtype} is not a {kind} of {ps.provider_of(rtype)}")
                declared[(kind, rtype, name)] = None
                continue
            declared[(kind, rtype, name)] = schema
            _check_block(schema, None, body, where, errors, top=True)
    everything = [(f"{f}: {k} {t}.{n}", b) for k in ("resource", "data", "ephemeral") for f, t, n, b in blocks[k]]
    everything += [(f"{f}: {k}", b) for f, k, _, b in blocks["other"]]
    for where, body in everything:
        for text in _strings(body):
            for match in REFERENCE.finditer(text):
                _check_reference(match, declared, where, errors)
    return errors


def tf_texts() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(facts.TF_DIR.glob("*.tf"))}


def test_every_block_argument_and_reference_matches_the_provider_schemas(schemas_available):
    texts = tf_texts()
    errors = check(texts)
    assert errors == []
    # and the check did look at everything: every resource/data type of the files has a schema
    blocks = load(texts)
    assert len(blocks["resource"]) > 30 and blocks["data"]
    refs = [m.group(0) for _, b in [(0, b) for k in ("resource", "data") for *_, b in blocks[k]] for s in _strings(b)
            for m in REFERENCE.finditer(s)]  # fmt: skip
    assert len(refs) > 50, refs


def test_the_pinned_provider_has_the_write_only_secret(schemas_available):
    # secrets.tf writes AUTH_KEY through secret_data_wo (hashicorp/google >= 6.23); the pinned schema must have it.
    arguments = ps.schema("resource", "google_secret_manager_secret_version").block().arguments
    assert {"secret_data_wo", "secret_data_wo_version", "secret_data"} <= arguments.keys()
    assert not arguments["secret_data_wo"].required


def test_required_providers_admit_the_schema_versions(schemas_available):
    text = (facts.TF_DIR / "versions.tf").read_text()
    for source in ps.PACKAGES:
        match = re.search(rf'source\s*=\s*"{source}"\s*\n\s*version\s*=\s*"([^"]+)"', text)
        assert match, f"{source} is not pinned in versions.tf"
        assert _admits(match.group(1), ps.provider_version(source)), (source, match.group(1))
    for rtype in {t for k in ("resource", "data", "ephemeral") for _, t, _, _ in load(tf_texts())[k]}:
        assert ps.provider_of(rtype) in ps.PACKAGES


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def _admits(constraint: str, version: str) -> bool:
    """Terraform's ~>, >=, = constraints (comma-separated), enough for versions.tf."""
    v = _version(version)
    for part in constraint.split(","):
        op, _, target = part.strip().partition(" ")
        t = _version(target)
        if op == "~>":
            upper = (*t[:-2], t[-2] + 1) if len(t) > 1 else (t[0] + 1,)
            ok = t <= v[: len(t)] + (0,) * (len(t) - len(v[: len(t)])) and v[: len(upper)] < upper
        elif op == ">=":
            ok = v >= t
        elif op == "=":
            ok = v == t
        else:
            raise AssertionError(f"constraint {part!r} not modelled")
        if not ok:
            return False
    return True


def test_version_constraints_are_modelled_right():
    assert _admits("~> 6.50", "6.50.0") and _admits("~> 6.50", "6.99.1") and not _admits("~> 6.50", "7.0.0")
    assert not _admits("~> 6.50", "6.49.0") and _admits("~> 2.4", "2.7.1") and _admits(">= 1.0, ~> 3.6", "3.7.2")


# -- planted faults: each edit of the real files must be reported ----------------------------------------------
FAULTS = {
    "unknown argument": (
        "function.tf",
        'resource "google_storage_bucket" "source" {\n',
        'resource "google_storage_bucket" "source" {\n  colour = "blue"\n',
        "unknown argument 'colour'",
    ),
    "wrong nesting": (
        "function.tf",
        "          secret_key_ref {\n            secret = google_secret_manager_secret.auth_key.secret_id\n",
        "          secret = google_secret_manager_secret.auth_key.secret_id\n          secret_key_ref {\n",
        "unknown argument 'secret'",
    ),
    "missing required argument": (
        "iam.tf",
        '  role    = "roles/datastore.user"\n',
        "",
        "missing required argument 'role'",
    ),
    "missing required block": (
        "firestore_schema.tf",
        '  fields {\n    field_path = "group"\n    order      = "ASCENDING"\n  }\n\n  fields {\n    field_path = "hour"\n    order      = "ASCENDING"\n  }\n',
        "",
        "missing required block 'fields'",
    ),
    "index exemption with a misspelt argument": (
        "firestore_schema.tf",
        '  field      = "rows"\n',
        '  field_path = "rows"\n',
        "unknown argument 'field_path'",
    ),
    "index exemption without its field": (
        "firestore_schema.tf",
        '  field      = "rows"\n',
        "",
        "missing required argument 'field'",
    ),
    "index exemption with a bad index mode": (
        "firestore_schema.tf",
        '  field      = "rows"\n\n  index_config {}\n',
        '  field      = "rows"\n\n  index_config {\n    indexes {\n      order = "ASC"\n    }\n  }\n',
        "order = 'ASC' is not one of",
    ),
    "index exemption as an argument": (
        "firestore_schema.tf",
        '  field      = "rows"\n\n  index_config {}\n',
        '  field      = "rows"\n\n  index_config = {}\n',
        "'index_config' is a nested block, not an argument",
    ),
    "bad enum": (
        "firestore.tf",
        'type        = "FIRESTORE_NATIVE"',
        'type        = "NATIVE"',
        "type = 'NATIVE' is not one of",
    ),
    "argument written as a block": (
        "scheduler.tf",
        "  retry_config {\n",
        "  retry_config = {\n",
        "'retry_config' is a nested block, not an argument",
    ),
    "block written twice": (
        "scheduler.tf",
        "  retry_config {\n",
        "  retry_config {\n    retry_count = 1\n  }\n  retry_config {\n",
        "block 'retry_config' may appear once",
    ),
    "bad attribute reference": (
        "function.tf",
        "service_account = google_service_account.runtime.email",
        "service_account = google_service_account.runtime.mail",
        "google_service_account has no attribute 'mail'",
    ),
    "bad nested attribute reference": (
        "outputs.tf",
        "value       = google_cloud_run_v2_service.gptload.uri\n",
        "value       = google_cloud_run_v2_service.gptload.url\n",
        "has no attribute 'url'",
    ),
    "reference to an undeclared resource": (
        "function.tf",
        "service_account = google_service_account.runtime.email",
        "service_account = google_service_account.runtme.email",
        "names no declared resource google_service_account.runtme",
    ),
    "bad data source attribute": (
        "main.tf",
        "data.google_project.this.number",
        "data.google_project.this.project_number",
        "google_project has no attribute 'project_number'",
    ),
    "bad reference to the encryption key's version": (
        "function.tf",
        "version = google_secret_manager_secret_version.encryption_key.version\n",
        "version = google_secret_manager_secret_version.encryption_key.version_id\n",
        "google_secret_manager_secret_version has no attribute 'version_id'",
    ),
    "unknown argument of the encryption key's generator": (
        "secrets.tf",
        'ephemeral "random_password" "encryption_key" {\n',
        'ephemeral "random_password" "encryption_key" {\n  size = 48\n',
        "unknown argument 'size'",
    ),
    "unknown resource type": (
        "iam.tf",
        'resource "google_service_account" "runtime" {',
        'resource "google_service_acount" "runtime" {',
        "google_service_acount is not a resource of hashicorp/google",
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_planted_fault_is_caught(schemas_available, fault):
    file, old, new, expected = FAULTS[fault]
    texts = tf_texts()
    assert texts[file].count(old) >= 1, f"the fault's anchor is gone from {file}: {old!r}"
    texts[file] = texts[file].replace(old, new, 1)
    errors = check(texts)
    assert any(expected in e for e in errors), errors


def test_the_cache_lives_outside_the_repository():
    assert not Path(ps.cache_dir()).resolve().is_relative_to(facts.ROOT)
