"""The Ray Data backend writes the same store as the local one (local Ray instance)."""

from __future__ import annotations

import numpy as np
import pytest

from medsae.data.table import open_images
from medsae.encode import EmbeddingStore, EncodeConfig, encode, get_encoder
from medsae.workspace import Workspace

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


@pytest.fixture
def local_ray() -> object:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_backend_writes_the_same_store(ws: Workspace, local_ray: object) -> None:
    options = {"arch": "efficientnet-lite0", "seed": 3, "input_size": 32}
    config = EncodeConfig(
        encoder="random", options=options, device="cpu", shard_rows=6, batch_size=4
    )
    outcome = encode(ws, config.model_copy(update={"backend": "ray", "ray_actors": 1}))
    store = EmbeddingStore(outcome.path)
    assert store.meta["backend"] == "ray" and [s.stop - s.start for s in store.shards] == [6, 6, 6]
    images = np.asarray(open_images(ws.slices))
    direct = get_encoder("random", device="cpu", **options).encode(images)
    np.testing.assert_allclose(store.read(), direct, rtol=1e-4, atol=1e-5)
    # the local backend sees the same key: nothing to redo
    assert encode(ws, config).status == "skipped"
