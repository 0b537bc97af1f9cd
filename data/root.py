"""Where the images are: the user's root, or the flowers demo (mirror, cache, or download)."""
from __future__ import annotations

import os

from tlpipe.components import storage
from tlpipe.components.config import PipelineConfig


def resolve_data_root(config: PipelineConfig, mirror: str | None = None) -> str:
    """`data.root` made absolute (a URL such as gs://... kept as it is), or the flowers demo
    under the work dir. Raises FlowersUnavailable (a usage error) when the demo is out of reach."""
    if config.data.root:
        root = config.data.root
        return storage.absolute(root)  # gs://... stays as it is
    from tlpipe.data.flowers import ensure_flowers

    return ensure_flowers(os.path.join(config.local_dir, "datasets"),
                          mirror=mirror or config.data.flowers_mirror,
                          progress=lambda m: print(f"tlpipe: {m}", flush=True))
