#!/usr/bin/env bash
# Regenerates tracebridge/sinks/perfetto/tracebridge_perfetto_pb2.py from protos/tracebridge_perfetto.proto.
# grpcio-tools 1.70.0 ships protoc for protobuf 5.29: its gencode runs on every protobuf runtime >= 5.29,
# which is the floor pyproject.toml declares. A newer protoc would raise that floor for every user.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q 'grpcio-tools==1.70.0'
"$tmp/venv/bin/python" -m grpc_tools.protoc -Iprotos --python_out=tracebridge/sinks/perfetto \
    protos/tracebridge_perfetto.proto
rm -rf "$tmp"
echo "wrote tracebridge/sinks/perfetto/tracebridge_perfetto_pb2.py"
