"""Generated gRPC/protobuf code for the vlmguard.v1 API."""
