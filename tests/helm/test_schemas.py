"""tests/helm/schemas.py: kubeconform's openapi2jsonschema, done here (no I/O)."""

from __future__ import annotations

from tests.helm.schemas import Schema, crd_schemas, kind_suffix, native_schemas, reachable, strict


def test_objects_with_properties_refuse_unknown_fields() -> None:
    schema = strict({"type": "object", "properties": {"a": {"type": "object", "properties": {}}}})
    assert schema["additionalProperties"] is False
    assert schema["properties"]["a"]["additionalProperties"] is False


def test_maps_and_open_objects_stay_open() -> None:
    a_map = {"type": "object", "additionalProperties": {"type": "string"}}
    assert strict(a_map) == a_map
    kept = {"type": "object", "properties": {}, "x-kubernetes-preserve-unknown-fields": True}
    assert "additionalProperties" not in strict(kept)
    assert "additionalProperties" not in strict({"type": "object"})


def test_a_field_named_like_a_keyword_is_a_field() -> None:
    schema = strict(
        {"properties": {"format": {"type": "string"}, "description": {"type": "string"}}}
    )
    assert schema["properties"] == {
        "format": {"type": "string"},
        "description": {"type": "string"},
    }


def test_loose_types_and_nulls() -> None:
    either = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    assert strict({"type": "string", "format": "int-or-string"}) == either
    assert strict({"x-kubernetes-int-or-string": True, "anyOf": []}) == either
    assert strict({"type": "string", "nullable": True}) == {"type": ["string", "null"]}
    # Data is copied as it is: an enum's or a default's values are not schemas.
    assert strict({"enum": [{"format": "int-or-string"}]}) == {
        "enum": [{"format": "int-or-string"}]
    }


def test_file_names_are_kubeconforms() -> None:
    assert kind_suffix("apps", "v1") == "-apps-v1"
    assert kind_suffix("networking.k8s.io", "v1") == "-networking-v1"
    assert kind_suffix("", "v1") == "-v1"


def test_native_kinds_carry_what_they_refer_to() -> None:
    definitions: dict[str, Schema] = {
        "io.k8s.api.x.v1.Thing": {
            "type": "object",
            "properties": {"spec": {"$ref": "#/definitions/io.k8s.api.x.v1.Spec"}},
            "x-kubernetes-group-version-kind": [
                {"group": "x.io", "kind": "Thing", "version": "v1"}
            ],
        },
        "io.k8s.api.x.v1.Spec": {
            "type": "object",
            "properties": {"size": {"$ref": "#/definitions/io.k8s.api.x.v1.Spec"}},
        },
        "io.k8s.api.x.v1.Unused": {"type": "string"},
    }
    assert reachable(definitions, "io.k8s.api.x.v1.Thing") == [
        "io.k8s.api.x.v1.Spec",
        "io.k8s.api.x.v1.Thing",
    ]
    ((name, schema),) = native_schemas({"definitions": definitions})
    assert name == "thing-x-v1.json"
    assert set(schema["definitions"]) == {"io.k8s.api.x.v1.Spec", "io.k8s.api.x.v1.Thing"}
    assert schema["additionalProperties"] is False


def test_custom_resources_get_the_apis_metadata() -> None:
    crd = {
        "kind": "CustomResourceDefinition",
        "spec": {
            "group": "example.io",
            "names": {"kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"metadata": {"type": "object"}, "spec": {}},
                        }
                    },
                },
                {"name": "v0", "served": False, "schema": {"openAPIV3Schema": {}}},
            ],
        },
    }
    meta = {"ObjectMeta": {"type": "object"}}
    ((path, schema),) = crd_schemas([crd], meta)
    assert path == "example.io/widget_v1.json"
    assert schema["additionalProperties"] is False
    assert schema["properties"]["metadata"] == {
        "$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    }
    assert schema["definitions"] == meta
