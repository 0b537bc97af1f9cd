"""Serving: the TF Serving directory layout, an embedded TF Serving-compatible server (gRPC +
REST) and its client."""
