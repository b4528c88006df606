"""Drawing: small functions that each draw one thing onto a BGR frame in place.

:func:`compose` copies a captured frame and draws everything the window and
the output video show.  Nothing here touches a window; OpenCV's GUI calls
stay in the application's main thread.

cv2.putText only draws ASCII, so any other text (a prompt in Greek, Chinese
or with accents) goes through Pillow with a DejaVu font when the system has
one and Pillow's own font otherwise: labels are drawn as given, never an
exception.
"""

from __future__ import annotations

import colorsys
import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..detections import Detections

FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT_SCALE = 0.5
TEXT_PX = 14                 # Pillow font size matching TEXT_SCALE's cap height roughly
MAX_LABEL_CHARS = 40
PANEL_BGR = (32, 32, 32)
TEXT_BGR = (255, 255, 255)
_FONT_FILES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
               "/usr/share/fonts/dejavu/DejaVuSans.ttf",
               "/usr/share/fonts/TTF/DejaVuSans.ttf",
               "/Library/Fonts/Arial Unicode.ttf",
               "C:/Windows/Fonts/arial.ttf")


@dataclass(frozen=True)
class Overlay:
    """What to draw over a frame besides its detections."""

    heatmap: bool = False
    hud: str = ""                 # empty = no HUD line
    banner: str = ""              # e.g. "reconnecting..."; empty = none
    prompts: str = ""             # the active prompts, a line under the HUD; empty = none
    edit: str | None = None       # the prompt edit line's text; None = closed
    edit_error: str = ""          # why the controller refused the edited prompts


def label_colour(label_id: int) -> tuple[int, int, int]:
    """A distinct, saturated BGR colour per prompt index (golden-angle hues)."""
    hue = (label_id * 0.618033988749895 + 0.0) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.9, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def short_label(text: str) -> str:
    return text if len(text) <= MAX_LABEL_CHARS else text[:MAX_LABEL_CHARS - 3] + "..."


@functools.lru_cache(maxsize=4)
def _pil_font(size_px: int):
    from PIL import ImageFont

    for path in _FONT_FILES:
        if Path(path).is_file():
            try:
                return ImageFont.truetype(path, size_px)
            except OSError:
                continue
    try:
        return ImageFont.load_default(size=size_px)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        return ImageFont.load_default()


def text_size(text: str) -> tuple[int, int, int]:
    """(width, height above baseline, depth below baseline) of `text` in pixels."""
    if text.isascii():
        (w, h), base = cv2.getTextSize(text, FONT, TEXT_SCALE, 1)
        return w, h, base
    try:
        left, _, right, bottom = _pil_font(TEXT_PX).getbbox(text)
    except Exception:  # no usable font: the ASCII fallback of put_text is what gets drawn
        return text_size(_ascii(text))
    return right - left, bottom, 0


def put_text(image: np.ndarray, text: str, org: tuple[int, int],
             colour: tuple[int, int, int] = TEXT_BGR) -> None:
    """Draw `text` with its baseline's left end at `org`."""
    if not text.isascii():
        try:
            _put_text_pil(image, text, org, colour)
            return
        except Exception:  # a broken font must not stop the video: draw what ASCII can
            text = _ascii(text)
    cv2.putText(image, text, org, FONT, TEXT_SCALE, colour, 1, cv2.LINE_AA)


def _ascii(text: str) -> str:
    import unicodedata

    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return folded if folded.strip() else "?" * min(len(text), 8)


def _put_text_pil(image: np.ndarray, text: str, org: tuple[int, int],
                  colour: tuple[int, int, int]) -> None:
    from PIL import Image, ImageDraw

    width, height, _ = text_size(text)
    x0, y0 = max(0, org[0]), max(0, org[1] - height)
    x1, y1 = min(image.shape[1], org[0] + width + 2), min(image.shape[0], org[1] + 2)
    if x1 <= x0 or y1 <= y0:
        return
    patch = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1, ::-1]))
    ImageDraw.Draw(patch).text((org[0] - x0, org[1] - height - y0), text,
                               font=_pil_font(TEXT_PX), fill=tuple(int(c) for c in colour[::-1]))
    image[y0:y1, x0:x1] = np.asarray(patch)[:, :, ::-1]


def draw_label(image: np.ndarray, text: str, x: int, y: int,
               colour: tuple[int, int, int]) -> None:
    """A filled tag with `text` whose top-left corner is (x, y), kept inside the image."""
    width, above, below = text_size(text)
    tag_h = above + below + 6
    x = int(min(max(0, x), max(0, image.shape[1] - width - 6)))
    y = int(min(max(0, y), max(0, image.shape[0] - tag_h)))
    cv2.rectangle(image, (x, y), (x + width + 6, y + tag_h), colour, -1)
    ink = (0, 0, 0) if sum(colour) > 400 else TEXT_BGR   # dark text on light tags
    put_text(image, text, (x + 3, y + 3 + above), ink)


def draw_box(image: np.ndarray, box, colour: tuple[int, int, int], caption: str) -> None:
    """A box with its caption on a tag above it (inside when there is no room above)."""
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    thickness = max(2, min(image.shape[:2]) // 240)
    cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), colour, thickness)
    _, above, below = text_size(caption)
    tag_h = above + below + 6
    draw_label(image, caption, x1, y1 - tag_h if y1 >= tag_h else y1 + thickness, colour)


def caption_of(detections: Detections, i: int) -> str:
    """"label 87%", or "label #3 87%" for a tracked box (its track ID)."""
    label = short_label(detections.labels[int(detections.label_ids[i])])
    track = f" #{int(detections.track_ids[i])}" if detections.tracked else ""
    return f"{label}{track} {float(detections.scores[i]) * 100:.0f}%"


def draw_detections(image: np.ndarray, detections: Detections) -> None:
    """Every box as "label 87%" (tracked: "label #id 87%") in its prompt's colour."""
    for i, (box, label_id) in enumerate(zip(detections.boxes, detections.label_ids)):
        draw_box(image, box, label_colour(int(label_id)), caption_of(detections, i))


def draw_heatmap(image: np.ndarray, score_maps: np.ndarray, alpha: float = 0.5) -> None:
    """Tint each cell with the colour of its best prompt, as strongly as its score.

    Cells stay square blocks (nearest neighbour): the map's real resolution.
    """
    if score_maps.ndim != 3 or score_maps.size == 0:
        return
    best = np.argmax(score_maps, axis=0)
    strength = np.clip(np.max(score_maps, axis=0), 0.0, 1.0).astype(np.float32)
    palette = np.array([label_colour(i) for i in range(score_maps.shape[0])], np.float32)
    height, width = image.shape[:2]
    tint = cv2.resize(palette[best], (width, height), interpolation=cv2.INTER_NEAREST)
    weight = cv2.resize(strength, (width, height), interpolation=cv2.INTER_NEAREST)[..., None]
    weight *= alpha
    image[:] = (image * (1.0 - weight) + tint * weight).astype(np.uint8)


def hud_text(capture_fps: float, inference_fps: float, latency_ms: float | None,
             device: str, threshold: float | None = None) -> str:
    """The HUD line: capture fps, inference fps, capture-to-result latency, device."""
    latency = f"{latency_ms:.0f} ms" if latency_ms is not None else "- ms"
    text = (f"capture {capture_fps:.1f} fps | inference {inference_fps:.1f} fps | "
            f"latency {latency} | {device}")
    return text if threshold is None else f"{text} | thr {threshold:.2f}"


def draw_hud(image: np.ndarray, text: str, top: int = 0) -> int:
    """One line on a dark strip at the left, from row `top`; the strip's bottom row."""
    width, above, below = text_size(text)
    bottom = top + above + below + 10
    cv2.rectangle(image, (0, top), (width + 10, bottom), PANEL_BGR, -1)
    put_text(image, text, (5, top + 5 + above))
    return bottom


def fit_text(text: str, width_px: int, keep_end: bool = False) -> str:
    """`text` shortened with "..." to fit in `width_px`: its start kept, or its end
    (an edit line shows where one types)."""
    def cut(n: int) -> str:
        return "..." + text[n:] if keep_end else text[:len(text) - n] + "..."

    if text_size(text)[0] <= width_px:
        return text
    lo, hi = 1, len(text)               # the fewest characters to cut
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if text_size(cut(mid))[0] <= width_px else (mid + 1, hi)
    return cut(lo)


def draw_edit_line(image: np.ndarray, text: str, error: str = "") -> None:
    """The prompt edit line on a strip at the bottom, its error (if any) above it."""
    height, width = image.shape[:2]
    line = fit_text(f"prompts> {text}_", width - 10, keep_end=True)
    _, above, below = text_size("Ag")
    strip_h = above + below + 10
    cv2.rectangle(image, (0, height - strip_h), (width, height), PANEL_BGR, -1)
    put_text(image, line, (5, height - 5 - below))
    if error:
        top = height - 2 * strip_h
        cv2.rectangle(image, (0, top), (width, top + strip_h), PANEL_BGR, -1)
        put_text(image, fit_text(error, width - 10), (5, top + 5 + above), (0, 200, 255))


def draw_ranking(image: np.ndarray, labels, scores, top: int = 5, y: int = 34) -> None:
    """The classify method's result: prompts ranked by score, from row `y` (under the HUD)."""
    order = np.argsort(-np.asarray(scores))[:top]
    for i in order:
        caption = f"{short_label(labels[int(i)])} {float(scores[int(i)]) * 100:.0f}%"
        draw_label(image, caption, 5, y, label_colour(int(i)))
        y += text_size(caption)[1] + 12


def draw_banner(image: np.ndarray, text: str) -> None:
    """A centred message on a dark band, e.g. while a camera reconnects."""
    height, width = image.shape[:2]
    text_w, above, below = text_size(text)
    top = height // 2 - above - 10
    cv2.rectangle(image, (0, top), (width, top + above + below + 20), PANEL_BGR, -1)
    put_text(image, text, ((width - text_w) // 2, top + 10 + above), (0, 200, 255))


def compose(image: np.ndarray, detections: Detections | None,
            overlay: Overlay = Overlay()) -> np.ndarray:
    """A copy of `image` with the detections and the overlay drawn on it."""
    out = image.copy()
    if detections is not None and overlay.heatmap:
        draw_heatmap(out, detections.score_maps)
    hud_bottom = 0
    if overlay.hud:   # under the boxes: a label at the top edge matters more than the HUD
        hud_bottom = draw_hud(out, overlay.hud)
        if overlay.prompts:
            hud_bottom = draw_hud(out, fit_text(overlay.prompts, out.shape[1] - 10), hud_bottom)
    if detections is not None:
        draw_detections(out, detections)
        if detections.frame_scores is not None:
            draw_ranking(out, detections.labels, detections.frame_scores,
                         y=max(34, hud_bottom + 8))
    if overlay.banner:
        draw_banner(out, overlay.banner)
    if overlay.edit is not None:
        draw_edit_line(out, overlay.edit, overlay.edit_error)
    return out
