"""The CRD's structural schema of ``spec``, generated from :mod:`luna_contract.spec`.

Kubernetes wants a *structural* schema: every type spelled out, no ``$ref``, no ``anyOf`` for
optional fields, free-form objects marked ``x-kubernetes-preserve-unknown-fields``. This module
walks the typed spec (``msgspec.inspect``) and writes exactly that; ``crds/lunaplugins.yaml``
must hold it (a test compares them and prints what to paste on any drift):

    python -m luna_contract.crd_schema
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec.inspect as mi

from luna_contract.spec import SPEC_DESCRIPTION, SPEC_EXTRA_SCHEMA, LunaPluginSpec

__all__ = ["spec_schema"]

Schema = dict[str, Any]


def spec_schema() -> Schema:
    """The ``openAPIV3Schema`` of a LunaPlugin's ``spec``."""
    schema = _schema(mi.type_info(LunaPluginSpec))
    return {"type": "object", "description": SPEC_DESCRIPTION, **SPEC_EXTRA_SCHEMA, **_drop_type(schema)}


def _drop_type(schema: Schema) -> Schema:
    return {key: value for key, value in schema.items() if key != "type"}


def _schema(info: mi.Type) -> Schema:
    if isinstance(info, mi.Metadata):
        inner = _schema(info.type)
        extra = dict(info.extra_json_schema or {})
        return {**inner, **extra}
    if isinstance(info, mi.UnionType):
        kinds = [kind for kind in info.types if not isinstance(kind, mi.NoneType)]
        if len(kinds) != 1:
            raise TypeError(f"a structural schema cannot hold the union {info!r}")
        return _schema(kinds[0])
    if isinstance(info, mi.StrType):
        return _drop_none(
            {
                "type": "string",
                "maxLength": info.max_length,
                "minLength": info.min_length,
                "pattern": info.pattern,
            }
        )
    if isinstance(info, mi.LiteralType):
        if not all(isinstance(value, str) for value in info.values):
            raise TypeError(f"only string literals are supported, not {info!r}")
        return {"type": "string", "enum": list(info.values)}
    if isinstance(info, mi.FloatType):
        if info.lt is not None or info.multiple_of is not None:
            raise TypeError(f"only gt, ge and le bounds are supported on numbers, not {info!r}")
        low = info.ge if info.gt is None else info.gt
        return _drop_none(
            {
                "type": "number",
                "minimum": low,
                "exclusiveMinimum": True if info.gt is not None else None,
                "maximum": info.le,
            }
        )
    if isinstance(info, mi.BoolType):
        return {"type": "boolean"}
    if isinstance(info, mi.IntType):
        return _drop_none({"type": "integer", "minimum": info.ge, "maximum": info.le})
    if isinstance(info, mi.ListType):
        return _drop_none(
            {
                "type": "array",
                "minItems": info.min_length,
                "maxItems": info.max_length,
                "items": _schema(info.item_type),
            }
        )
    if isinstance(info, mi.DictType):
        if not isinstance(info.value_type, mi.AnyType):
            raise TypeError(f"only free-form objects are supported, not {info!r}")
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if isinstance(info, mi.StructType):
        properties: Schema = {}
        for struct_field in info.fields:
            prop = _schema(struct_field.type)
            if not struct_field.required and _is_literal(struct_field.default):
                prop["default"] = _json_number(struct_field.default)
            properties[struct_field.encode_name] = prop
        required = [f.encode_name for f in info.fields if f.required]
        return {"type": "object", **({"required": required} if required else {}), "properties": properties}
    raise TypeError(f"no structural schema for {info!r}")


def _is_literal(value: object) -> bool:
    return isinstance(value, (str, int, bool, float)) and value is not None


def _json_number(value: object) -> object:
    """A whole float as an int: the API server returns ``30.0`` as ``30``, and the CRD's
    fingerprint must be the same read from the file or from the server."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _drop_none(schema: Schema) -> Schema:
    return {key: value for key, value in schema.items() if value is not None}


def main() -> int:
    """Print the spec's schema as YAML, to paste under ``properties.spec`` of the CRD."""
    import yaml

    sys.stdout.write(yaml.safe_dump(spec_schema(), sort_keys=False, width=100))
    return 0


if __name__ == "__main__":
    sys.exit(main())
