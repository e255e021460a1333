"""One device setting for every stage: validated at start, recorded, out of artifact keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medsae.config import PipelineConfig
from medsae.device import DEVICE_ENV, DeviceUnavailable, resolve_device
from medsae.encode.config import BATCH_SIZE_CPU, BATCH_SIZE_CUDA, EncodeConfig
from medsae.errors import InputError
from medsae.evaluate.config import EvaluateConfig
from medsae.interpret.config import InterpretConfig
from medsae.report.build import ReportConfig
from medsae.sae import CodesConfig, TrainConfig, train, write_codes
from medsae.workspace import Workspace, read_manifest
from tests.support.synthetic import make_synthetic_workspace

TINY = {"arch": ["topk"], "levels": [[16]], "k": [[2]], "epochs": 1, "batch_size": 32}


@pytest.fixture()
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has no CUDA device (also on one that has)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_resolve_device_names_the_setting(no_cuda: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceUnavailable, match=r"train\.device: 'cuda' requested but no CUDA"):
        resolve_device("cuda", "train.device")
    with pytest.raises(InputError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceUnavailable, match="'cuda:3' requested but this machine has 1"):
        resolve_device("cuda:3")
    assert resolve_device("auto") == torch.device("cuda")


def test_auto_follows_the_environment(no_cuda: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    with pytest.raises(DeviceUnavailable, match=rf"codes\.device \(auto, from \${DEVICE_ENV}\)"):
        resolve_device("auto", "codes.device")


def test_every_model_stage_has_a_runtime_device_field() -> None:
    for cls in (
        EncodeConfig,
        TrainConfig,
        CodesConfig,
        EvaluateConfig,
        InterpretConfig,
        ReportConfig,
    ):
        assert "device" in cls.runtime_fields(), cls.__name__
        assert cls(device="cuda").key_config() == cls().key_config(), cls.__name__
        assert cls(device="cuda").runtime_values()["device"] == "cuda"
    assert TrainConfig(seed=3).key_config() != TrainConfig().key_config()


def test_stages_refuse_cuda_without_one_before_reading_anything(
    no_cuda: None, tmp_path: Path
) -> None:
    empty = tmp_path / "not-a-workspace"
    calls = {
        "train.device": lambda: train(empty, "enc", TrainConfig(device="cuda")),
        "codes.device": lambda: write_codes(empty, "enc", config=CodesConfig(device="cuda")),
    }
    for what, call in calls.items():
        with pytest.raises(DeviceUnavailable, match=rf"^{what}: 'cuda' requested"):
            call()
    from medsae.evaluate import evaluate
    from medsae.interpret.stage import interpret
    from medsae.report import build_report
    from medsae.serve import serve

    with pytest.raises(DeviceUnavailable, match=r"^evaluate\.device"):
        evaluate(empty, "enc", "run", EvaluateConfig(device="cuda:1"))
    with pytest.raises(DeviceUnavailable, match=r"^interpret\.device"):
        interpret(empty, "enc", "run", InterpretConfig(device="cuda"))
    with pytest.raises(DeviceUnavailable, match=r"^report\.device"):
        build_report(empty, ReportConfig(device="cuda"))
    with pytest.raises(DeviceUnavailable, match=r"^--device"):
        serve(empty, port=0, device="cuda")
    from medsae.pipeline import Pipeline

    with pytest.raises(DeviceUnavailable, match=r"^device: 'cuda'"):
        Pipeline(PipelineConfig(device="cuda"), tmp_path / "ws")


def test_a_device_change_keeps_artifacts_up_to_date_and_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, truth = make_synthetic_workspace(tmp_path / "ws", dim=16, n_subjects=4)
    built = train(ws, truth.encoder, TrainConfig(**TINY, device="cpu"))
    assert built.manifest["runtime"]["device"] == "cpu"
    assert built.manifest["runtime"]["resolved_device"] == "cpu"
    assert built.manifest["config"]["device"] == "auto"  # the hashed config: device at default
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    again = train(ws, truth.encoder, TrainConfig(**TINY, device="auto"))
    assert again.skipped
    run = built.manifest["extra"]["runs"][0]
    codes = write_codes(ws, truth.encoder, run, CodesConfig(device="cpu"))[0]
    assert codes.manifest["runtime"]["resolved_device"] == "cpu"
    assert write_codes(ws, truth.encoder, run, CodesConfig(device="auto"))[0].skipped
    manifest = read_manifest(Workspace(ws.root).codes(truth.encoder, run))
    assert manifest is not None and manifest["runtime"]["device"] == "cpu"


def test_the_pipeline_device_reaches_every_model_stage(tmp_path: Path) -> None:
    from medsae.pipeline import PIPELINE, Pipeline

    pipe = Pipeline(PipelineConfig(device="cpu", codes={"device": "auto"}), tmp_path / "ws")
    seen = {
        stage.name: pipe.stage_section(stage).get("device")
        for stage in PIPELINE
        if stage.name in ("encode", "train", "codes", "evaluate", "interpret", "report")
    }
    assert seen.pop("codes") == "auto"  # a section's own device wins
    assert set(seen.values()) == {"cpu"} and len(seen) == 5, seen
    assert "device" not in pipe.stage_section(PIPELINE[0])  # prepare runs no model


def test_encode_batch_size_follows_the_device() -> None:
    assert EncodeConfig().batch_size_on("cpu") == BATCH_SIZE_CPU
    assert EncodeConfig().batch_size_on("cuda") == BATCH_SIZE_CUDA
    assert EncodeConfig(batch_size=7).batch_size_on("cuda") == 7
    assert "batch_size" not in EncodeConfig().content("x")


def test_biomedparse_input_matches_the_cpu_reference() -> None:
    import torch.nn.functional as F

    from medsae.encode.adapters.biomedparse_adapter import model_input

    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, size=(3, 20, 20), dtype=np.uint8)
    mean = torch.tensor([123.7, 116.3, 103.5]).view(1, 3, 1, 1)
    std = torch.tensor([58.4, 57.1, 57.4]).view(1, 3, 1, 1)
    ref = F.interpolate(
        torch.from_numpy(u8).unsqueeze(1).float(), size=(48, 48), mode="bilinear"
    ).expand(-1, 3, -1, -1)
    ref = (ref - mean) / std
    got = model_input(u8, 48, mean, std, "cpu")
    assert got.dtype == torch.float32 and torch.equal(got, ref)


@pytest.mark.cuda
def test_biomedparse_input_on_cuda_is_half_and_close() -> None:
    from medsae.encode.adapters.biomedparse_adapter import model_input

    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, size=(2, 3, 64, 64), dtype=np.uint8).transpose(0, 2, 3, 1)
    mean = torch.tensor([123.7, 116.3, 103.5]).view(1, 3, 1, 1)
    std = torch.tensor([58.4, 57.1, 57.4]).view(1, 3, 1, 1)
    cpu = model_input(u8, 128, mean, std, "cpu")
    gpu = model_input(u8, 128, mean, std, "cuda")
    assert gpu.dtype == torch.float16
    # fp16 keeps 11 significant bits: the standardised values (|x| < 3) to about 2e-3
    torch.testing.assert_close(gpu.float().cpu(), cpu, atol=4e-3, rtol=0)
