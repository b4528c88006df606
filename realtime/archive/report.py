"""The HTML report of a search: one self-contained page.

Per prompt, a timeline bar per video with its segments, and a thumbnail per
segment: the best frame, decoded from the video at report time, cropped
around the detector's box with the box drawn, embedded as a data: URI.
Every label is escaped; the page loads nothing from anywhere.
"""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path

import cv2
import numpy as np

from ..live.source import SourceError, SourceSpec, open_reader
from .search import Segment

THUMB_PX = 240            # longest side of a thumbnail
CONTEXT = 0.5             # context around a box, as a share of its size, on each side
BOX_BGR = (60, 220, 60)

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h2 { margin-top: 32px; } .none { color: #777; }
.video { margin: 6px 0; } .name { font-size: 12px; color: #555; }
.bar { position: relative; height: 14px; background: #eee; border-radius: 3px; }
.seg { position: absolute; top: 0; height: 14px; min-width: 3px; background: #2a7;
       border-radius: 3px; }
.thumbs { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 12px; }
figure { margin: 0; width: 240px; } figure img { display: block; max-width: 240px; }
figcaption { font-size: 12px; color: #444; word-break: break-all; }
"""


def read_frame(video: str, kind: str, frame: int) -> np.ndarray | None:
    """One frame of a video (or an image), decoded now; None when it cannot be."""
    try:
        reader = open_reader(SourceSpec(kind, video))
    except (SourceError, OSError):
        return None
    try:
        if frame:
            reader.seek(frame)
        grabbed = reader.read()
        return grabbed.image if grabbed is not None else None
    finally:
        reader.close()


def thumbnail(image: np.ndarray, box: list[float] | None) -> np.ndarray:
    """The box with context around it (the whole frame without a box), box drawn."""
    height, width = image.shape[:2]
    image = image.copy()
    x0, y0, x1, y1 = 0, 0, width, height
    if box is not None:
        bx0, by0, bx1, by1 = (int(round(v)) for v in box)
        cv2.rectangle(image, (bx0, by0), (bx1 - 1, by1 - 1), BOX_BGR, max(1, width // 200))
        pad_x = max(16, int(CONTEXT * (bx1 - bx0)))
        pad_y = max(16, int(CONTEXT * (by1 - by0)))
        x0, y0 = max(0, bx0 - pad_x), max(0, by0 - pad_y)
        x1, y1 = min(width, bx1 + pad_x), min(height, by1 + pad_y)
    crop = image[y0:y1, x0:x1]
    scale = THUMB_PX / max(crop.shape[:2])
    if scale < 1:
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)),
                                 max(1, round(crop.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    return crop


def data_uri(image: np.ndarray) -> str:
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("cannot encode a thumbnail")
    return "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii")


def render(results: dict[str, list[Segment]], videos: dict[str, tuple[str, float]],
           title: str) -> str:
    """The page; `videos` maps each video to (kind, duration in seconds)."""
    esc = html.escape
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{esc(title)}</h1>",
             f"<p>{len(videos)} videos; made {esc(time.strftime('%Y-%m-%d %H:%M'))}</p>"]
    for prompt, segments in results.items():
        parts.append(f"<section><h2>{esc(prompt)} &mdash; {len(segments)} segments</h2>")
        if not segments:
            parts.append('<p class="none">Nowhere in the index.</p></section>')
            continue
        parts += _timelines(segments, videos)
        parts.append('<div class="thumbs">')
        parts += [_figure(segment, videos) for segment in segments]
        parts.append("</div></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _timelines(segments: list[Segment], videos: dict[str, tuple[str, float]]) -> list[str]:
    esc, out = html.escape, []
    for video in dict.fromkeys(s.video for s in segments):
        duration = max(videos.get(video, ("video", 0.0))[1], 1e-6)
        bars = []
        for s in (s for s in segments if s.video == video):
            left = 100.0 * min(s.start_s / duration, 1.0)
            width = 100.0 * max(0.0, min(s.end_s, duration) - s.start_s) / duration
            tip = f"{s.start_s:.1f}-{s.end_s:.1f} s, score {s.score:.2f}"
            bars.append(f'<span class="seg" style="left:{left:.3f}%;width:{width:.3f}%" '
                        f'title="{esc(tip)}"></span>')
        out.append(f'<div class="video"><div class="name">{esc(video)} ({duration:.1f} s)</div>'
                   f'<div class="bar">{"".join(bars)}</div></div>')
    return out


def _figure(segment: Segment, videos: dict[str, tuple[str, float]]) -> str:
    esc = html.escape
    kind = videos.get(segment.video, ("video", 0.0))[0]
    image = read_frame(segment.video, kind, segment.best_frame)
    caption = (f"{Path(segment.video).name} @ {segment.best_t:.2f} s "
               f"({segment.start_s:.1f}-{segment.end_s:.1f} s), score {segment.score:.2f}")
    if segment.box is not None:
        caption += f", box {segment.box_score:.2f}"
    if image is None:
        return (f'<figure><p class="none">frame {segment.best_frame} could not be decoded '
                f'now</p><figcaption>{esc(caption)}</figcaption></figure>')
    alt = f"{segment.prompt} in {Path(segment.video).name} at {segment.best_t:.2f} s"
    return (f'<figure><img src="{data_uri(thumbnail(image, segment.box))}" alt="{esc(alt)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")
