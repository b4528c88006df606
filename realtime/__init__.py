"""Real-time zero-shot object detection with CLIP."""

from .config import (Config, ConfigError, DetectorConfig, ModelConfig, AppConfig,
                     config_from_dict, load_config)
from .detections import Detections
from .engine import ClipModel, Detector, ModelLoadError, PromptError, load_model

__all__ = ["AppConfig", "ClipModel", "Config", "ConfigError", "Detections", "Detector",
           "DetectorConfig", "ModelConfig", "ModelLoadError", "PromptError", "config_from_dict",
           "load_config", "load_model"]
