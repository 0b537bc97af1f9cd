"""The tlpipe DAG (`create_pipeline`), its configuration, runners and CLI."""
