"""The encode stage: store contents, skip, resume after a kill, job arrays, bad input, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsae.data.table import open_images, read_slices
from medsae.encode import EmbeddingStore, EncodeConfig, encode, encoder_from_store, get_encoder
from medsae.encode import runner as runner_mod
from medsae.errors import ArtifactError, InputError
from medsae.workspace import Workspace, read_manifest


def _dinov3_config(folder: Path, **kw: object) -> EncodeConfig:
    options = {"model": str(folder), "input_size": 32, "pooling": "mean"}
    return EncodeConfig(
        encoder="dinov3", options=options, device="cpu", batch_size=4, shard_rows=5, **kw
    )


def test_stage_writes_aligned_store_and_skips_when_up_to_date(
    ws: Workspace, tiny_dinov3_dir: Path
) -> None:
    config = _dinov3_config(tiny_dinov3_dir)
    outcome = encode(ws, config)
    assert outcome.status == "built" and outcome.path == ws.embeddings("dinov3")
    store = EmbeddingStore(outcome.path)
    images = np.asarray(open_images(ws.slices))
    assert (store.n_rows, store.dim, store.encoder) == (len(images), 32, "dinov3")
    assert [s.stop - s.start for s in store.shards] == [5, 5, 5, 3]
    direct = get_encoder(
        "dinov3", model=str(tiny_dinov3_dir), input_size=32, pooling="mean", device="cpu"
    ).encode(images)
    np.testing.assert_allclose(store.read(), direct, rtol=1e-4, atol=1e-5)
    assert (
        store.meta["registry_name"] == "dinov3" and store.meta["preprocessing"]["pooling"] == "mean"
    )
    assert store.meta["norms"]["max"] >= store.meta["norms"]["min"] > 0
    assert read_manifest(outcome.path)["inputs"]["slices"] == read_manifest(ws.slices)["key"]
    # runtime settings do not invalidate the store; content settings do
    assert encode(ws, config.model_copy(update={"batch_size": 7, "workers": 0})).status == "skipped"
    assert encode(ws, config.model_copy(update={"dtype": "float16"})).status == "rebuilt"
    assert EmbeddingStore(outcome.path).meta["dtype"] == "float16"
    rebuilt = encoder_from_store(EmbeddingStore(outcome.path), device="cpu")
    np.testing.assert_allclose(rebuilt.encode(images[:2]), direct[:2], rtol=1e-4, atol=1e-5)


def test_resume_keeps_finished_shards(
    ws: Workspace, plugin_entry_point: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = EncodeConfig(encoder="pixelstats", shard_rows=4, batch_size=3)
    real_finish = runner_mod.finish_shard
    written: list[str] = []

    def finish_then_die(folder: Path, shard: object, *args: object, **kwargs: object) -> None:
        real_finish(folder, shard, *args, **kwargs)  # type: ignore[arg-type]
        written.append(shard.file)  # type: ignore[attr-defined]
        if len(written) == 2:
            raise KeyboardInterrupt  # killed after two shards

    monkeypatch.setattr(runner_mod, "finish_shard", finish_then_die)
    with pytest.raises(KeyboardInterrupt):
        encode(ws, config)
    partial = ws.embeddings("pixelstats").parent / ".pixelstats.partial"
    assert sorted(p.name for p in partial.glob("shard-*.npy")) == [
        "shard-00000.npy",
        "shard-00001.npy",
    ]
    assert not ws.embeddings("pixelstats").exists()
    written.clear()
    monkeypatch.setattr(runner_mod, "finish_shard", real_finish)
    outcome = encode(ws, config)
    assert outcome.manifest["counts"]["reused_shards"] == 2
    assert outcome.manifest["counts"]["encoded_shards"] == 3
    store = EmbeddingStore(outcome.path)
    images = np.asarray(open_images(ws.slices))
    np.testing.assert_allclose(store.read(), get_encoder("pixelstats").encode(images))


def test_two_jobs_assemble_the_same_store_as_one(
    ws: Workspace, tmp_path: Path, tiny_dinov3_dir: Path
) -> None:
    base = _dinov3_config(tiny_dinov3_dir)
    first = encode(ws, base.model_copy(update={"shard_index": 0, "num_shards": 2}))
    assert first.stage == "encode-part" and not ws.embeddings("dinov3").exists()
    with pytest.raises(ArtifactError, match=r"2 shard\(s\) missing"):
        encode(ws, base.model_copy(update={"merge_only": True}))
    encode(ws, base.model_copy(update={"shard_index": 1, "num_shards": 2}))
    merged = encode(ws, base.model_copy(update={"merge_only": True}))
    assert merged.manifest["counts"]["encoded_shards"] == 0
    assert not (ws.embeddings("dinov3").parent / "dinov3.parts").exists()
    again = encode(
        ws, base.model_copy(update={"shard_index": 1, "num_shards": 2})
    )  # a resubmitted job
    assert again.skipped and again.path == ws.embeddings("dinov3")
    single_ws = Workspace(tmp_path / "single")
    import shutil

    shutil.copytree(ws.slices, single_ws.slices)
    single = encode(single_ws, base)
    a, b = EmbeddingStore(merged.path), EmbeddingStore(single.path)
    assert a.shards == b.shards and a.meta["store_key"] == b.meta["store_key"]
    np.testing.assert_array_equal(a.read(), b.read())
    with pytest.raises(InputError, match="shard_index 2 must be < num_shards 2"):
        from medsae.config import build_config

        build_config(EncodeConfig, {"shard_index": 2, "num_shards": 2})


def test_external_adapter_stage_resumes_by_shard(
    ws: Workspace, fake_adapter_command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "encoded.txt"
    config = EncodeConfig(
        encoder="external",
        options={"command": fake_adapter_command, "marker": str(marker)},
        shard_rows=5,
    )
    monkeypatch.setenv("FAKE_ADAPTER_FAIL_AFTER", "2")  # the adapter dies after two shards
    with pytest.raises(ArtifactError, match=r"exit status 3"):
        encode(ws, config)
    assert marker.read_text().split() == ["shard-00000.npy", "shard-00001.npy"]
    monkeypatch.delenv("FAKE_ADAPTER_FAIL_AFTER")
    outcome = encode(ws, config)
    assert outcome.manifest["counts"]["reused_shards"] == 2
    assert marker.read_text().split() == [f"shard-0000{i}.npy" for i in range(4)]  # none twice
    store = EmbeddingStore(outcome.path)
    assert store.encoder == "fake" and store.dim == 8
    images = np.asarray(open_images(ws.slices))
    np.testing.assert_allclose(
        store.read()[:, 0], images.reshape(len(images), -1).mean(1) / 255, rtol=1e-5
    )


def test_nan_outputs_name_the_slices(
    ws: Workspace, plugin_entry_point: None, fake_adapter_command: str
) -> None:
    images = np.asarray(open_images(ws.slices))
    table = read_slices(ws.slices)
    bad_mean = float(images[7].mean())
    with pytest.raises(ArtifactError, match=table["slice_id"][7]):
        encode(ws, EncodeConfig(encoder="pixelstats", options={"nan_mean": bad_mean}))
    with pytest.raises(ArtifactError, match=rf"NaN/Inf.*{table['slice_id'][11]}"):
        encode(
            ws,
            EncodeConfig(
                encoder="external", options={"command": fake_adapter_command, "nan_row": 11}
            ),
        )
    partial = ws.embeddings("fake").parent / ".fake.partial"
    assert not (partial / "shard-00000.npy").exists()  # the bad shard is not kept for a resume


def test_float16_overflow_is_refused(ws: Workspace, plugin_entry_point: None) -> None:
    with pytest.raises(ArtifactError, match=r"after conversion to float16"):
        encode(ws, EncodeConfig(encoder="pixelstats", options={"scale": 1e6}, dtype="float16"))


def test_bad_inputs(ws: Workspace, tmp_path: Path, plugin_entry_point: None) -> None:
    with pytest.raises(InputError, match=r"unknown encoder; known encoders"):
        encode(ws, EncodeConfig(encoder="nope"))
    with pytest.raises(ArtifactError, match=r"run `medsae prepare`|no finished artifact"):
        encode(Workspace(tmp_path / "empty"), EncodeConfig(encoder="pixelstats"))
    encode(ws, EncodeConfig(encoder="pixelstats", name="shared"))
    with pytest.raises(ArtifactError, match=r"refusing to replace them"):
        encode(
            ws,
            EncodeConfig(encoder="efficientnet-lite0", name="shared", options={"input_size": 32}),
        )
    images = np.load(ws.slices / "images.npy")
    np.save(ws.slices / "images.npy", images.astype(np.float32))
    with pytest.raises(InputError, match=r"images.npy: expected uint8"):
        encode(ws, EncodeConfig(encoder="pixelstats", name="other"))
    np.save(ws.slices / "images.npy", images[:-1])
    with pytest.raises(ArtifactError, match=r"images.npy has 17 rows but the slice table has 18"):
        encode(ws, EncodeConfig(encoder="pixelstats", name="other"))
    table = read_slices(ws.slices).iloc[:0]
    table.to_parquet(ws.slices / "slices.parquet", index=False)
    with pytest.raises(InputError, match=r"slice table is empty"):
        encode(ws, EncodeConfig(encoder="pixelstats"))


def test_mismatched_partial_shard_is_refused(
    ws: Workspace, plugin_entry_point: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = EncodeConfig(encoder="pixelstats", shard_rows=4)
    monkeypatch.setattr(
        runner_mod, "finish_shard", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)
    )
    with pytest.raises(KeyboardInterrupt):
        encode(ws, config)
    partial = ws.embeddings("pixelstats").parent / ".pixelstats.partial"
    np.save(partial / "shard-00000.npy", np.zeros((4, 9), np.float32))  # 9-d: another encoder
    with pytest.raises(ArtifactError, match=r"refusing to mix encoders"):
        encode(ws, config)


def test_encoder_from_store_requires_provenance(ws: Workspace) -> None:
    store = EmbeddingStore(ws.embeddings("synthetic"))
    with pytest.raises(ArtifactError, match=r"does not record how its encoder"):
        encoder_from_store(store)


def test_cli_encoders_and_encode(ws: Workspace, fake_adapter_command: str) -> None:
    from typer.testing import CliRunner

    from medsae.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["encoders"])
    assert listed.exit_code == 0, listed.output
    for name in ("efficientnet-lite0", "dinov3", "random", "external"):
        assert name in listed.output
    result = runner.invoke(
        app,
        [
            "encode",
            "--workspace",
            str(ws.root),
            "--encoder",
            "external",
            "--option",
            f"command={fake_adapter_command}",
            "--option",
            "dim=5",
            "--name",
            "fake5",
            "--dtype",
            "float16",
            "--shard-rows",
            "7",
        ],
    )
    assert result.exit_code == 0, result.output
    store = EmbeddingStore(ws.embeddings("fake5"))
    assert (store.dim, store.meta["dtype"], len(store.shards)) == (5, "float16", 3)
    assert (
        json.loads((ws.embeddings("fake5") / "manifest.json").read_text())["config"]["options"][
            "dim"
        ]
        == 5
    )
    assert isinstance(read_slices(ws.slices), pd.DataFrame)
