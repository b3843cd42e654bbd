"""Turns the Kubernetes API's OpenAPI document and the operators' CRDs into the JSON schemas that
``kubeconform -strict`` reads offline.

kubeconform looks a manifest's schema up by kind and apiVersion in a directory laid out as its
own schema repositories are, and its ``-strict`` needs schemas that refuse unknown fields. This
does what kubeconform's ``scripts/openapi2jsonschema.py`` does, for both sources:

- every object schema that lists ``properties`` gets ``additionalProperties: false`` (as kubectl's
  validation does), unless it keeps unknown fields (``x-kubernetes-preserve-unknown-fields``) or
  says what its other fields are (a map); the root of a custom resource too, so a misspelled
  ``spec`` is caught;
- an int-or-string is a string or an integer, a quantity a string or a number, and ``nullable``
  allows null.

Native kinds come from ``swagger.json`` (OpenAPI 2) as ``native/<kind><suffix>.json``, each file
self-contained (the definitions it reaches, referenced locally); custom resources as
``crds/<group>/<kind>_<version>.json``. Their metadata is checked against the API's ObjectMeta,
which a CRD leaves open.

    python tests/helm/schemas.py OUT --swagger swagger.json CRD.yaml...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

Schema = dict[str, Any]

DEFINITIONS_REF = "#/definitions/"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# Types that the API's document calls strings but that the API server also takes as numbers.
LOOSE_TYPES: dict[str, Schema] = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "oneOf": [{"type": "string"}, {"type": "integer"}]
    },
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "oneOf": [{"type": "string"}, {"type": "number"}]
    },
}


# Keywords whose values are data (an allowed value, a default), not schemas.
VERBATIM = frozenset({"default", "enum", "example", "required"})


def strict(node: Any) -> Any:
    """A copy of a schema node with unknown fields refused and the loose types widened."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string" or node.get("x-kubernetes-int-or-string"):
        return {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    out: Schema = {}
    for key, value in node.items():
        if key == "description":
            continue
        if key in VERBATIM or key.startswith("x-kubernetes-"):
            out[key] = value
            continue
        # Property names are data, not schema keywords: a field called `format` stays a field.
        if key in ("properties", "definitions", "patternProperties") and isinstance(value, dict):
            out[key] = {name: strict(child) for name, child in value.items()}
        else:
            out[key] = strict(value)
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(DEFINITIONS_REF):
            yield ref.removeprefix(DEFINITIONS_REF)
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def reachable(definitions: dict[str, Schema], root: str) -> list[str]:
    """The definitions a definition refers to, itself included, directly or not."""
    seen: list[str] = []
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.append(name)
        todo.extend(ref for ref in _refs(definitions[name]) if ref not in seen)
    return sorted(seen)


def kind_suffix(group: str, version: str) -> str:
    """kubeconform's file name suffix: `-apps-v1`, `-networking-v1`, `-v1` for the core group."""
    return f"-{group.split('.')[0]}-{version}".lower() if group else f"-{version}".lower()


def native_schemas(swagger: Schema) -> Iterator[tuple[str, Schema]]:
    """(file name, schema) for every kind of the API's OpenAPI 2 document."""
    raw: dict[str, Schema] = swagger["definitions"]
    definitions = {name: LOOSE_TYPES.get(name) or strict(body) for name, body in raw.items()}
    for name, body in raw.items():
        for gvk in body.get("x-kubernetes-group-version-kind", []):
            kind, group, version = gvk["kind"], gvk["group"], gvk["version"]
            schema: Schema = dict(definitions[name])
            # Itself too: a recursive kind (a CRD's JSONSchemaProps) refers to itself.
            schema["definitions"] = {
                used: definitions[used] for used in reachable(definitions, name)
            }
            yield f"{kind.lower()}{kind_suffix(group, version)}.json", schema


def crd_documents(paths: Iterable[Path]) -> Iterator[Schema]:
    """Every CustomResourceDefinition in the YAML files (a `List` of them too)."""
    for path in paths:
        with path.open(encoding="utf-8") as stream:
            for document in yaml.safe_load_all(stream):
                if not isinstance(document, dict):
                    continue
                items = document.get("items") if document.get("kind") == "List" else [document]
                for item in items or []:
                    if item.get("kind") == "CustomResourceDefinition":
                        yield item


def crd_schemas(
    crds: Iterable[Schema], meta_definitions: dict[str, Schema]
) -> Iterator[tuple[str, Schema]]:
    """(file path, schema) for every served version of every CRD, its metadata checked against
    ``meta_definitions`` (ObjectMeta and what it refers to)."""
    for crd in crds:
        spec = crd["spec"]
        group, kind = spec["group"], spec["names"]["kind"]
        for version in spec["versions"]:
            body = version.get("schema", {}).get("openAPIV3Schema")
            if body is None or not version.get("served", True):
                continue
            schema = strict(body)
            if "metadata" in schema.get("properties", {}):
                schema["properties"]["metadata"] = {"$ref": DEFINITIONS_REF + OBJECT_META}
                schema["definitions"] = meta_definitions
            yield f"{group}/{kind.lower()}_{version['name']}.json", schema


def write(out: Path, files: Iterable[tuple[str, Schema]]) -> int:
    """Write each schema under ``out``; the number written."""
    count = 0
    for relative, schema in files:
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True))
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to write native/ and crds/ into")
    parser.add_argument("--swagger", type=Path, required=True, help="the API's swagger.json")
    parser.add_argument("crds", type=Path, nargs="*", help="YAML files holding CRDs")
    args = parser.parse_intermixed_args(argv)

    swagger = json.loads(args.swagger.read_text(encoding="utf-8"))
    native = write(args.out / "native", native_schemas(swagger))
    meta_definitions = {
        name: LOOSE_TYPES.get(name) or strict(swagger["definitions"][name])
        for name in reachable(swagger["definitions"], OBJECT_META)
    }
    custom = write(args.out / "crds", crd_schemas(crd_documents(args.crds), meta_definitions))
    if not custom:
        print("no CustomResourceDefinition found in the files given", file=sys.stderr)
        return 1
    print(f"{native} native and {custom} custom resource schemas written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
