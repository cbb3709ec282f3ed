#!/usr/bin/env bash
# Regenerate e2ee/wire/*_pb2.py and *_pb2.pyi from e2ee/wire/*.proto.
# Uses grpcio-tools' bundled protoc and mypy-protobuf from the `dev` extra (installed into
# .venv if missing). The proto path is the repository root, so a file e2ee/wire/x.proto
# becomes the module e2ee.wire.x_pb2 and imports between .proto files are written
# "e2ee/wire/other.proto".
set -euo pipefail
# shellcheck source=scripts/_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"

PY="$VENV/bin/python"
if ! "$PY" -c 'import grpc_tools.protoc, mypy_protobuf' >/dev/null 2>&1 \
        || [ ! -x "$VENV/bin/protoc-gen-mypy" ]; then
    echo "gen_proto: installing the dev extra (grpcio-tools, mypy-protobuf)" >&2
    "$PY" -m pip install -q -e ".[dev]"
fi

shopt -s nullglob
protos=(e2ee/wire/*.proto)
if [ ${#protos[@]} -eq 0 ]; then
    echo "gen_proto: no e2ee/wire/*.proto files" >&2
    exit 1
fi

# google/protobuf/*.proto (well-known types) ship inside grpc_tools.
wkt="$("$PY" -c 'import os, grpc_tools; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"

"$PY" -m grpc_tools.protoc \
    --proto_path=. \
    --proto_path="$wkt" \
    --plugin=protoc-gen-mypy="$VENV/bin/protoc-gen-mypy" \
    --python_out=. \
    --mypy_out=. \
    "${protos[@]}"

printf 'gen_proto: regenerated %s\n' "${protos[@]/%.proto/_pb2.py(i)}" >&2
