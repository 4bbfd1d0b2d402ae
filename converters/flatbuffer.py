"""The one place that reads (and rebuilds) the `.tflite` flatbuffer.

Everything in this project that looks inside a `.tflite` file goes through
here: `parse` gives LiteRT's flatbuffer object API (`ModelT`, from
`ai_edge_litert.schema_py_generated`), `build` packs an edited or new `ModelT`
back into a file, `table_view` gives the zero-copy table API over a writable
copy (for edits in place that keep every byte offset), and `enum_names` /
`op_name` / `text` turn the schema's numbers and byte strings into names.

Untrusted bytes must pass `converters.verify.verify_tflite` first: the probe
that does so runs in a child process and loads this file by path, so this
module imports only the standard library at import time (`ai_edge_litert` and
`flatbuffers` are imported when called).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FILE_IDENTIFIER", "build", "enum_names", "op_name", "parse", "schema",
           "table_view", "text"]

FILE_IDENTIFIER = b"TFL3"


def schema() -> Any:
    """LiteRT's generated schema module (`ModelT`, `TensorType`, `BuiltinOperator`, ...)."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def parse(content: bytes | bytearray) -> Any:
    """The whole model as LiteRT's object API (`schema().ModelT`).

    Pass a `bytearray` when the model will be edited and rebuilt (the object
    API then holds writable arrays); `bytes` are parsed as they are.
    """
    return schema().ModelT.InitFromPackedBuf(content, 0)


def build(model: Any, *, size_hint: int = 1024) -> bytes:
    """Packs a `ModelT` into `.tflite` bytes (with the `TFL3` file identifier)."""
    import flatbuffers

    builder = flatbuffers.Builder(size_hint)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def table_view(content: bytes) -> tuple[bytearray, Any]:
    """A writable copy of `content` and the zero-copy `Model` table over it."""
    buf = bytearray(content)
    return buf, schema().Model.GetRootAs(buf, 0)


def enum_names(cls: type) -> dict[int, str]:
    """Value -> name of a schema enum class (e.g. `schema().TensorType`)."""
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def text(name: Any) -> str:
    """A schema string (bytes or None) as text."""
    if isinstance(name, bytes):
        return name.decode(errors="replace")
    return "" if name is None else str(name)


def op_name(code: Any, op_names: dict[int, str]) -> str:
    """The name of an `OperatorCodeT`: `CONV_2D`, or `CUSTOM:<name>` for custom ops."""
    builtin = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
    name = op_names.get(builtin, f"BUILTIN_{builtin}")
    return f"CUSTOM:{text(code.customCode)}" if name == "CUSTOM" else name
