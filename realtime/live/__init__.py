"""The live application: sources, the capture thread, the inference worker,
rendering, outputs and the app that wires them (``python main.py``).

Each stage is one module and talks to the next only through the bounded
buffers of :mod:`realtime.buffers`.
"""
