"""Datasets for tlpipe, kept free of TensorFlow so that fetching or faking images stays cheap.

`data.flowers` provides the embedded demo dataset (download, verify, cache, or use a local mirror);
`data.synthetic` writes tiny but learnable image folders so tests never need the network.
"""
