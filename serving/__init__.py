"""Serving: the TF Serving directory layout, and (later) server and client."""
