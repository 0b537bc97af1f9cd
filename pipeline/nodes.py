"""Node ids of the DAG in run order; light to import (the CLI validates --to with it)."""

NODE_ORDER = ["ingest", "statistics_gen", "schema_gen", "latest_label_domain", "label_domain",
              "example_validator", "transform", "tuner", "trainer", "latest_blessed_model",
              "evaluator", "pusher"]

# The baseline Resolver: resolves inputs, runs no executor of its own.
RESOLVER_NODE = "latest_blessed_model"
# Every Resolver. ML Metadata may record one as FAILED when it found nothing to resolve (the
# label-domain Resolver on a first run): not a failure of the run.
RESOLVER_NODES = (RESOLVER_NODE, "latest_label_domain")

# Stands in for the tuner (an Importer) when a run reuses earlier tuned hyperparameters.
HYPERPARAMETERS_NODE = "latest_hyperparameters"
