"""A TF Serving-compatible gRPC server and client."""
