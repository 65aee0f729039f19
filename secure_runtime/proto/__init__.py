"""Generated OIP v2 gRPC stubs (see regenerate.py); do not edit the *_pb2 files by hand."""
