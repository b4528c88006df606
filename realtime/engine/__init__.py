"""The engine: a frame and prompts in, :class:`~realtime.detections.Detections` out.

It knows nothing about threads, windows or files: front ends (the live app,
the web server, archive jobs) call :class:`Detector` and draw or store what it
returns.
"""

from .detector import Detector
from .model import ClipModel, ModelLoadError, load_model
from .prompts import PromptError

__all__ = ["ClipModel", "Detector", "ModelLoadError", "PromptError", "load_model"]
