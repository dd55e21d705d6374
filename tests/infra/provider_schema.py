"""Terraform provider schemas, read from the TypeScript declarations of the prebuilt CDKTF bindings.

`terraform validate` needs the provider binaries, which cannot be downloaded here. The npm packages
``@cdktf/provider-*`` are generated from the same provider schemas and carry them as ``.d.ts`` files, one per
resource or data source (``lib/<kebab-name>/index.d.ts``):

- ``export interface <Class>Config extends cdktf.TerraformMetaArguments { ... }``: the arguments. A property
  without ``?`` is required; its doc comment links ``...docs/resources/<type>#<snake_name>``, the name written in
  HCL; a type naming another interface of the file is a nested block (``Iface[]``: repeatable); "Possible values:
  [...]" in the comment is the enum the provider validates.
- ``export declare class <Class> extends cdktf.TerraformResource`` (or ``TerraformDataSource``) with
  ``static readonly tfResourceType = "<type>"``: its getters are every attribute a reference may read, and a
  getter typed ``<X>OutputReference`` / ``<X>List`` leads to a nested block's own getters.

``python -m tests.infra.provider_schema`` fetches the pinned packages with ``npm pack`` (what ``.ci/run`` does)
into a cache outside the repository: ``$GPTLOAD_SCHEMA_CACHE``, else ``$XDG_CACHE_HOME/gptload/provider-schemas``,
else ``~/.cache/gptload/provider-schemas``. Only ``lib/*/index.d.ts`` and ``package.json`` are kept (~35 MB).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

# provider source -> (npm package, exact version, provider version the package was generated from)
PACKAGES = {
    "hashicorp/google": ("@cdktf/provider-google", "16.12.1", "6.50.0"),
    "hashicorp/random": ("@cdktf/provider-random", "12.0.1", "3.7.2"),
    "hashicorp/archive": ("@cdktf/provider-archive", "11.0.1", "2.7.1"),
    "hashicorp/time": ("@cdktf/provider-time", "11.0.1", "0.13.1"),
}


def cache_dir() -> Path:
    if os.environ.get("GPTLOAD_SCHEMA_CACHE"):
        return Path(os.environ["GPTLOAD_SCHEMA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gptload" / "provider-schemas"


def package_dir(source: str) -> Path:
    package, version, _ = PACKAGES[source]
    return cache_dir() / f"{package.split('/')[-1]}-{version}"


def fetched() -> bool:
    return all((package_dir(s) / ".complete").exists() for s in PACKAGES)


def fetch() -> None:
    """npm pack each pinned package (unless cached) and keep its declarations."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed (needed to fetch the provider schemas)")
    for source, (package, version, provider_version) in PACKAGES.items():
        dest = package_dir(source)
        if (dest / ".complete").exists():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [npm, "pack", "--silent", f"{package}@{version}"], cwd=tmp, check=True, capture_output=True, timeout=600
            )
            (tgz,) = Path(tmp).glob("*.tgz")
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            with tarfile.open(tgz) as tar:
                for member in tar:
                    name = member.name
                    keep = name == "package/package.json" or re.fullmatch(r"package/lib/[a-z0-9-]+/index\.d\.ts", name)
                    if keep and member.isfile():
                        target = dest / name.removeprefix("package/")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
        meta = json.loads((dest / "package.json").read_text())
        assert meta["version"] == version, (package, meta["version"])
        (dest / ".complete").write_text(provider_version + "\n")


# -- the schema ---------------------------------------------------------------------------------------------------
@dataclass
class Argument:
    name: str  # as written in HCL
    required: bool
    block: str | None = None  # interface name of a nested block
    repeatable: bool = False  # a list block (may appear more than once)
    enum: tuple[str, ...] = ()


@dataclass
class Block:
    """The arguments of a resource, data source or nested block."""

    arguments: dict[str, Argument] = field(default_factory=dict)


@dataclass
class Schema:
    """One resource or data source: its arguments (nested) and its attributes (getters, nested)."""

    kind: str  # "resource" | "data"
    type: str
    blocks: dict[str, Block]  # interface name -> block; the top level is config
    config: str
    classes: dict[str, dict[str, str]]  # class name -> {getter (camelCase): its type}
    main_class: str

    def block(self, name: str | None = None) -> Block:
        return self.blocks[name or self.config]

    def attribute(self, owner: str, snake: str) -> str | None:
        """The type of attribute ``snake`` of class ``owner`` (None: no such attribute)."""
        getters = self.classes.get(owner, {})
        camel = re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), snake)
        for candidate in (camel, f"{camel}Attribute"):
            if candidate in getters:
                return getters[candidate]
        return None

    def element_class(self, type_text: str) -> str | None:
        """The class whose getters a value of this type has (a nested block's), or None for a plain value."""
        match = re.fullmatch(r"(\w+?)(OutputReference|List)", type_text.strip())
        if match is None:
            return None
        name = f"{match.group(1)}OutputReference"
        return name if name in self.classes else None


_PROPERTY = re.compile(
    r"(?:/\*\*(?P<doc>(?:(?!\*/).)*)\*/\s*)?readonly (?P<name>\w+)(?P<opt>\??): (?P<type>[^;]+);", re.S
)
_INTERFACE = re.compile(r"export interface (\w+)(?: extends [\w.]+)? \{\n(.*?)\n\}", re.S)
_CLASS = re.compile(r"export declare class (\w+) extends cdktf\.(\w+) \{\n(.*?)\n\}", re.S)
_GETTER = re.compile(r"^\s+get (\w+)\(\): ([^;]+);", re.M)


def _snake(camel: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)


def parse(text: str) -> Schema:
    interfaces = {name: body for name, body in _INTERFACE.findall(text)}
    blocks: dict[str, Block] = {}
    for iname, body in interfaces.items():
        block = Block()
        for m in _PROPERTY.finditer(body):
            doc = m.group("doc") or ""
            link = re.search(r"#(\w+) \w+#\w+\}", doc)
            name = link.group(1) if link else _snake(m.group("name"))
            ptype = m.group("type")
            first = re.match(r"\s*(\w+)", ptype)
            nested = first.group(1) if first and first.group(1) in interfaces else None
            enum = re.search(r"Possible values: \[([^\]]*)\]", doc)
            block.arguments[name] = Argument(
                name=name,
                required=not m.group("opt"),
                block=nested,
                repeatable=bool(nested) and f"{nested}[]" in ptype,
                enum=tuple(json.loads(f"[{enum.group(1)}]")) if enum else (),
            )
        blocks[iname] = block
    classes = {}
    main = kind = rtype = None
    for cname, base, body in _CLASS.findall(text):
        classes[cname] = dict(_GETTER.findall(body))
        declared = re.search(r'tfResourceType = "(\w+)"', body)
        if declared and base in ("TerraformResource", "TerraformDataSource"):
            main, rtype = cname, declared.group(1)
            kind = "resource" if base == "TerraformResource" else "data"
    assert main and kind and rtype, "no resource or data source class in this file"
    config = f"{main}Config"
    assert config in blocks, f"no {config}"
    return Schema(kind=kind, type=rtype, blocks=blocks, config=config, classes=classes, main_class=main)


@cache
def _index(source: str) -> dict[tuple[str, str], Path]:
    """(kind, type) -> declaration file, for every resource and data source of a provider (cached on disk)."""
    root = package_dir(source)
    index_file = root / "index.json"
    if index_file.exists():
        raw = json.loads(index_file.read_text())
    else:
        raw = []
        for path in sorted((root / "lib").glob("*/index.d.ts")):
            text = path.read_text()
            m = re.search(
                r"extends cdktf\.(TerraformResource|TerraformDataSource) \{\s*static readonly tfResourceType = \"(\w+)\"",
                text,
            )
            if m:
                raw.append(["resource" if m.group(1) == "TerraformResource" else "data", m.group(2), path.parent.name])
        index_file.write_text(json.dumps(raw))
    return {(k, t): root / "lib" / d / "index.d.ts" for k, t, d in raw}


def provider_of(rtype: str) -> str | None:
    prefix = rtype.split("_", 1)[0]
    source = f"hashicorp/{prefix}"
    return source if source in PACKAGES else None


@cache
def schema(kind: str, rtype: str) -> Schema | None:
    """The schema of a resource (kind "resource") or data source ("data"); None if the provider has none."""
    source = provider_of(rtype)
    if source is None:
        return None
    path = _index(source).get((kind, rtype))
    return parse(path.read_text()) if path else None


def provider_version(source: str) -> str:
    return PACKAGES[source][2]


if __name__ == "__main__":
    fetch()
    print(cache_dir())
    sys.exit(0)
