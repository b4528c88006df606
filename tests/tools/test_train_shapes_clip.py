"""The trainer of models/shapes-clip, run for a few steps: it is deterministic and
writes a model that loads through the detector's own loading path."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from realtime.config import ModelConfig
from realtime.engine.model import load_model
from tools import train_shapes_clip

TINY_RUN = ["--steps", "2", "--batch", "16", "--eval-images", "24", "--dense-scenes", "1"]


@pytest.mark.slow
def test_a_short_run_is_deterministic_and_loads_like_any_checkpoint(tmp_path):
    for name in ("a", "b"):
        train_shapes_clip.main(["--out", str(tmp_path / name), *TINY_RUN])
    weights_a = load_file(tmp_path / "a" / "model.safetensors")
    weights_b = load_file(tmp_path / "b" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all((weights_a[k] == weights_b[k]).all() for k in weights_a)

    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert 0.0 <= metrics["window_accuracy"] <= 1.0 and metrics["logit_scale"] > 0
    assert "## Held-out metrics" in (tmp_path / "a" / "TRAINING.md").read_text()

    model = load_model(ModelConfig(name=str(tmp_path / "a"), device="cpu"))
    assert model.spec.image_px == 64 and model.spec.image_px != 224
    assert model.encode_text(["a red circle"]).shape[0] == 1
