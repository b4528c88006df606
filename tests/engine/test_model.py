"""Loading CLIP checkpoints from directories, and the device path's faithfulness."""

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, CLIPModel

from realtime import Detector, DetectorConfig, ModelConfig, ModelLoadError, load_model
from realtime.engine.frames import FrameUploader
from realtime.engine.methods import WindowsMethod
from realtime.engine.model import resolve_device, resolve_dtype
from realtime.scenes import MovingScene
from tools.clip_factory import tiny_clip


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {size: tiny_clip(root / f"clip{size}", image_size=size, patch_size=size // 8)
            for size in (64, 96)}


@pytest.mark.parametrize("size", [64, 96])
def test_non_224_models_load_from_a_directory_and_run(tiny_dirs, size):
    model = load_model(ModelConfig(name=str(tiny_dirs[size])))
    assert model.spec.image_px == size
    assert model.spec.mean == pytest.approx((0.5, 0.5, 0.5))       # read, not assumed
    assert model.device.type == "cpu" and model.dtype == resolve_dtype("auto", model.device)
    frame = MovingScene(320, 240, n_shapes=2, seed=1).frame(0).frame
    for method in ("windows", "dense"):
        found = Detector(["a red circle", "a blue square"], DetectorConfig(method=method),
                         model)(frame)
        assert found.score_maps.shape[0] == 2
        assert np.isfinite(found.similarity_maps).all()


def test_text_encoder_pools_at_the_end_token(tiny_dirs):
    model = load_model(ModelConfig(name=str(tiny_dirs[64])))
    a, b = model.encode_text(["a red circle", "a blue star"])
    assert torch.linalg.vector_norm(a).item() == pytest.approx(1.0, abs=1e-5)
    assert not torch.allclose(a, b)


def processor_window_embeddings(model_dir, frame_bgr, grid):
    """The straightforward path: cut each window on the CPU, run the model's own processor."""
    processor = AutoProcessor.from_pretrained(model_dir)
    model = CLIPModel.from_pretrained(model_dir).eval()
    crops = [frame_bgr[y1:y2, x1:x2, ::-1] for x1, y1, x2, y2 in grid.window_boxes()]
    pixels = processor(images=list(crops), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels)
    out = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(out, dim=-1), pixels


@pytest.mark.parametrize("window_tiles", [2, 4])
def test_device_path_matches_per_crop_processor(tiny_dirs, window_tiles):
    # Square tiles (320 x 240 at 40 px) and an input size divisible by the
    # window, so both paths see exactly the same field of view; they differ
    # only in resampling (whole frame vs each crop, float vs uint8 rounding).
    model_dir = str(tiny_dirs[64])
    model = load_model(ModelConfig(name=model_dir))
    config = DetectorConfig(tile_px=40, window_tiles=window_tiles)
    frame = MovingScene(320, 240, n_shapes=3, seed=4).frame(0).frame
    method = WindowsMethod(model, config)
    plan = method.plan(240, 320)
    from realtime.engine.frames import crop_windows, normalise, resize
    image = normalise(resize(FrameUploader(model.device)(frame), plan.resized_h,
                             plan.resized_w, model.spec), model.spec)
    device_pixels = crop_windows(image, plan.rows_idx, plan.cols_idx)
    device_embeddings = model.encode_images(device_pixels)

    reference, reference_pixels = processor_window_embeddings(model_dir, frame, plan.grid)
    assert device_pixels.shape == reference_pixels.shape
    # Pixels: normalised units (std 0.5 -> 1 uint8 level = 0.008).
    assert (device_pixels - reference_pixels).abs().mean().item() < 0.02
    cosine = (device_embeddings * reference).sum(-1)
    assert cosine.min().item() > 0.995


def test_unreachable_model_id_fails_with_one_line_that_names_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelConfig(name="openai/clip-vit-base-patch32-typo"))
    message = str(err.value)
    assert "\n" not in message
    assert "--model DIR" in message


@pytest.mark.parametrize("native_bf16, expected", [(True, torch.bfloat16),
                                                   (False, torch.float32)])
def test_auto_dtype_on_a_cpu_is_bf16_only_where_the_cpu_has_bf16_instructions(
        monkeypatch, native_bf16, expected):
    probe = lambda: native_bf16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", probe, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", probe, raising=False)
    assert resolve_dtype("auto", torch.device("cpu")) == expected
    assert resolve_dtype("auto", torch.device("mps")) == torch.float32


def test_directory_without_a_model_fails_clearly(tmp_path):
    with pytest.raises(ModelLoadError, match="this directory"):
        load_model(ModelConfig(name=str(tmp_path)))


def test_device_and_dtype_resolution_on_a_cpu_machine():
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only behaviour")
    assert resolve_device("auto").type in ("cpu", "mps")
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ModelLoadError, match="unknown device"):
        resolve_device("toaster")


def test_out_of_memory_halves_the_batch_and_retries(tiny_dirs):
    model = load_model(ModelConfig(name=str(tiny_dirs[64])))
    pixels = torch.randn(10, 3, 64, 64)
    expected = model.encode_images(pixels)
    real, seen = model._vision_eager, []

    def limited(batch):
        seen.append(len(batch))
        if len(batch) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(batch)

    model._vision_eager = limited
    got = model.encode_images(pixels)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert seen[:2] == [10, 5] and model.max_batch == 2
    seen.clear()
    model.encode_images(pixels)                  # the smaller batch is remembered
    assert max(seen) == 2


@pytest.mark.parametrize("variant", ["maskclip", "clearclip", "sclip", "naclip"])
def test_every_dense_variant_gives_one_unit_embedding_per_patch(tiny_dirs, variant):
    model = load_model(ModelConfig(name=str(tiny_dirs[64]), device="cpu", dtype="float32"))
    pixels = torch.randn(1, 3, 48, 80)
    patches = model.patch_embeddings(pixels, variant)
    assert patches.shape == (6 * 10, model.hf_model.config.projection_dim)
    torch.testing.assert_close(patches.norm(dim=-1), torch.ones(60))
    if variant != "maskclip":   # each replaces the last block differently
        assert not torch.allclose(patches, model.patch_embeddings(pixels, "maskclip"))


def test_naclip_neighbourhood_falls_off_with_patch_distance():
    from realtime.engine.model import _neighbourhood

    prior = _neighbourhood((28, 28), torch.zeros(1))
    assert prior[0].abs().sum() == 0                       # the class token has no position
    centre = 1 + 14 * 28 + 14
    assert prior[centre, centre] == 1.0
    assert prior[centre, centre + 5] == pytest.approx(np.exp(-0.5), rel=1e-4)  # 5 patches = 1 std

# --------------------------------------------------------------------------- memory budget


def test_batches_are_split_to_fit_the_memory_budget_with_the_same_result(tiny_model_dir):
    from realtime.engine.model import image_bytes

    config = DetectorConfig(tile_px=32, refine=False, fit_mode="crops", verify=False)  # 234 windows
    frame = MovingScene(640, 480, n_shapes=2, seed=3).frame(0).frame
    results, batches = {}, {}
    for budget in ("auto", 32):
        model = load_model(ModelConfig(name=str(tiny_model_dir), device="cpu",
                                       dtype="float32", memory_budget_mb=budget))
        real_vision, seen = model._vision, []
        model._vision = lambda chunk, any_size: seen.append(len(chunk)) or real_vision(
            chunk, any_size)
        results[budget] = Detector(["a red circle"], config, model)(frame).score_maps
        batches[budget] = seen
    per_image = image_bytes(model, 64, 64)
    assert batches["auto"] == [234]                       # plenty: one batch, as before
    assert len(batches[32]) > 1 and sum(batches[32]) == 234
    assert max(batches[32]) * per_image <= 32 * 2**20
    np.testing.assert_allclose(results[32], results["auto"], atol=1e-5)


@pytest.mark.parametrize("method, detector_keys, frame_hw, key", [
    ("occlusion", {}, (100, 2000), "detector.occlusion_cells"),
    ("windows", {"tile_px": 4, "refine": False}, (100, 2000), "detector.tile_px"),
    ("dense", {"dense_input_px": 2048}, (480, 640), "detector.dense_input_px"),
    ("windows", {"refine_input_px": 2048}, (480, 640), "detector.refine_input_px"),
])
def test_a_layout_over_the_memory_budget_is_refused_naming_its_key(tiny_model_dir, method,
                                                                    detector_keys, frame_hw,
                                                                    key):
    import time

    from realtime.config import ConfigError

    model = load_model(ModelConfig(name=str(tiny_model_dir), device="cpu", dtype="float32",
                                   memory_budget_mb=64))
    detector = Detector(["a red circle"], DetectorConfig(method=method, **detector_keys), model)
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        detector.check_frame_size(frame_hw[1], frame_hw[0])
    with pytest.raises(ConfigError):
        detector(np.zeros((*frame_hw, 3), np.uint8))     # the frame itself: refused too
    assert time.monotonic() - start < 2.0                 # before allocating, not after
    text = str(err.value)
    assert text.startswith(f"{key}: ") and "over the memory budget of 64 MiB" in text, text
    assert "model.memory_budget_mb" in text and "\n" not in text


def test_thousands_of_prompts_are_encoded_in_batches_that_fit_the_budget(tiny_model_dir):
    texts = [f"a red circle number {i}" for i in range(1000)]
    embeddings, batches = {}, {}
    for budget in ("auto", 16):
        model = load_model(ModelConfig(name=str(tiny_model_dir), device="cpu",
                                       dtype="float32", memory_budget_mb=budget))
        real, seen = model.hf_model.get_text_features, []

        def counted(real=real, seen=seen, **tokens):
            seen.append(len(tokens["input_ids"]))
            return real(**tokens)

        model.hf_model.get_text_features = counted
        embeddings[budget], batches[budget] = model.encode_text(texts), seen
    assert batches["auto"] == [1000] and len(batches[16]) > 1 and sum(batches[16]) == 1000
    assert max(batches[16]) == model._text_batch()
    torch.testing.assert_close(embeddings[16], embeddings["auto"], atol=1e-5, rtol=1e-5)
