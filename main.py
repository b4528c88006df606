#!/usr/bin/env python3
"""Real-time zero-shot object detection with CLIP: the command line.

    python main.py --source 0 --prompt "a red mug" --prompt "a cat"
    python main.py --source video.mp4 --prompt "a person" --headless \\
        --output annotated.mp4 --detections detections.jsonl
    python main.py --demo
    python main.py index --source "recordings/*.mp4" --out index/
    python main.py search --index index/ --prompt "a red mug" --report report.html

Settings come from the defaults, then a --config YAML file, then the flags
(each later one wins).  The help of each flag is the help of the
configuration key it sets, so the two never disagree.  Exit codes: see
realtime/app.py (0 done, 1 runtime failure, 2 input error, 130/143 signals);
index and search: realtime/archive/jobs.py (and 3: some chunks failed).
"""

from __future__ import annotations

import os
import signal
import sys


def _stop_before_start(signum, _frame) -> None:
    """Ctrl+C (or SIGTERM) before the application installs its own handlers: the
    imports take seconds (torch) and nothing is open for writing yet, so leave at
    once, with one line and no traceback."""
    name = signal.Signals(signum).name
    os.write(2, f"stopped by {name} before the run started\n".encode())
    os._exit(130 if signum == signal.SIGINT else 143)


if __name__ == "__main__":   # first, before the slow imports below
    signal.signal(signal.SIGINT, _stop_before_start)
    signal.signal(signal.SIGTERM, _stop_before_start)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import logging  # noqa: E402

from realtime.config import (METHODS, SECTIONS, Config, ConfigError, config_from_dict,
                             field_help, load_config)

# (flag, section, key, argparse options): one row per configuration flag.
FLAGS: tuple[tuple[str, str, str, dict], ...] = (
    ("--source", "app", "source", {"metavar": "SRC"}),
    ("--model", "model", "name", {"metavar": "ID_OR_DIR"}),
    ("--device", "model", "device", {"metavar": "DEVICE"}),
    ("--dtype", "model", "dtype", {"choices": ("auto", "float32", "float16", "bfloat16")}),
    ("--memory-budget-mb", "model", "memory_budget_mb", {"metavar": "MB|auto"}),
    ("--method", "detector", "method", {"choices": METHODS}),
    ("--threshold", "detector", "threshold", {"type": float, "metavar": "T"}),
    ("--gate", "detector", "gate", {"type": float, "metavar": "P"}),
    ("--tile-px", "detector", "tile_px", {"metavar": "PX|auto"}),
    ("--window-tiles", "detector", "window_tiles", {"type": int, "metavar": "K"}),
    ("--stride-tiles", "detector", "stride_tiles", {"type": int, "metavar": "S"}),
    ("--refine", "detector", "refine", {"action": argparse.BooleanOptionalAction}),
    ("--dense-input-px", "detector", "dense_input_px", {"metavar": "PX|auto"}),
    ("--dense-variant", "detector", "dense_variant",
     {"choices": ("maskclip", "clearclip", "sclip", "naclip")}),
    ("--fit", "detector", "fit", {"action": argparse.BooleanOptionalAction}),
    ("--fit-mode", "detector", "fit_mode", {"choices": ("auto", "segment", "crops", "zoom")}),
    ("--verify", "detector", "verify", {"action": argparse.BooleanOptionalAction}),
    ("--track", "track", "enabled", {"action": argparse.BooleanOptionalAction}),
    ("--min-hits", "track", "min_hits", {"type": int, "metavar": "N"}),
    ("--hold-s", "track", "hold_s", {"type": float, "metavar": "S"}),
    ("--smoothing", "track", "smoothing", {"type": float, "metavar": "F"}),
    ("--headless", "app", "headless", {"action": argparse.BooleanOptionalAction}),
    ("--output", "app", "output", {"metavar": "PATH.mp4"}),
    ("--detections", "app", "detections", {"metavar": "PATH.jsonl"}),
    ("--max-frames", "app", "max_frames", {"type": int, "metavar": "N"}),
    ("--realtime", "app", "realtime", {"action": argparse.BooleanOptionalAction}),
    ("--fullscreen", "app", "fullscreen", {"action": argparse.BooleanOptionalAction}),
    ("--heatmap", "app", "heatmap", {"action": argparse.BooleanOptionalAction}),
    ("--hud", "app", "hud", {"action": argparse.BooleanOptionalAction}),
    ("--max-reconnects", "app", "max_reconnects", {"type": int, "metavar": "N"}),
    ("--snapshot-dir", "app", "snapshot_dir", {"metavar": "DIR"}),
    ("--demo", "app", "demo", {"action": argparse.BooleanOptionalAction}),
    ("--serve", "serve", "address", {"metavar": "[HOST:]PORT"}),
    ("--serve-token", "serve", "token", {"metavar": "TOKEN"}),
    ("--serve-max-viewers", "serve", "max_viewers", {"type": int, "metavar": "N"}),
    ("--serve-max-fps", "serve", "max_fps", {"type": float, "metavar": "FPS"}),
)

# The archive commands (docs/archive.md): the model and detector flags of the
# detector, plus their own.
ARCHIVE_COMMANDS = ("index", "search")
ENGINE_FLAGS = tuple(row for row in FLAGS if row[1] in ("model", "detector")
                     and row[2] != "verify")   # stored frames have no pixels to verify on
INDEX_FLAGS = (
    ("--sample-fps", "archive", "sample_fps", {"type": float, "metavar": "FPS"}),
    ("--chunk-s", "archive", "chunk_s", {"type": float, "metavar": "S"}),
    ("--max-attempts", "archive", "max_attempts", {"type": int, "metavar": "N"}),
    ("--ray", "archive", "ray", {"metavar": "local|auto|ADDRESS"}),
    ("--workers", "archive", "workers", {"type": int, "metavar": "N"}),
    ("--worker-cpus", "archive", "worker_cpus", {"type": int, "metavar": "N"}),
)
SEARCH_FLAGS = (
    ("--top", "archive", "top", {"type": int, "metavar": "N"}),
    ("--max-gap-s", "archive", "max_gap_s", {"type": float, "metavar": "S"}),
    ("--confirm", "archive", "confirm", {"action": argparse.BooleanOptionalAction}),
)

KEYS_HELP = ("keys in the window: q/Esc quit, space pause, h heat map, +/- threshold, "
             "s snapshot, p/Tab edit the prompts (comma-separated; Enter applies, Esc cancels)")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit code 2, as argparse)."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _px_or_auto(text: str):
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer or auto (got {text!r})") from None


def _default_text(section: str, key: str) -> str:
    """"default: X", with the allowed range the configuration enforces."""
    value = getattr(getattr(Config(), section), key)
    text = ("on" if value else "off") if isinstance(value, bool) else (
        "none" if value == "" else str(value))
    meta = next(f.metadata for f in dataclasses.fields(SECTIONS[section]) if f.name == key)
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and hi is not None:
        text += f"; range {lo:g}..{hi:g}"
    elif lo is not None:
        text += f"; at least {lo:g}"
    return f"default: {text}"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="main.py",
        description="Real-time zero-shot object detection with CLIP on a webcam, stream, "
                    "video file, image or folder of images.",
        epilog=f"{KEYS_HELP}. Browser view: --serve 8080 serves the annotated stream, the "
               "prompts, the threshold and REST endpoints on http://127.0.0.1:8080/ (see README, "
               "Browser view; needs pip install -r requirements-web.txt). Exit codes: 0 done, "
               "1 runtime failure, 2 input error, 130 Ctrl+C, 143 SIGTERM.")
    parser.add_argument("--config", metavar="FILE.yaml",
                        help="YAML preset (see configs/); flags override it (default: none)")
    parser.add_argument("--prompt", action="append", metavar="TEXT",
                        help=f"{field_help('app', 'prompts')}; repeat for several "
                             "(default: none; --demo: the scene's captions)")
    parser.add_argument("--prompts-file", metavar="FILE",
                        help=f"{field_help('app', 'prompts_file')} (default: none)")
    _add_flags(parser, FLAGS)
    return parser


def _add_flags(parser: argparse.ArgumentParser, rows) -> None:
    """One flag per configuration key, its help the key's help and default."""
    for flag, section, key, options in rows:
        options = dict(options)
        if key in ("tile_px", "dense_input_px", "memory_budget_mb"):
            options["type"] = _px_or_auto
        help_text = f"{field_help(section, key)} ({_default_text(section, key)})"
        parser.add_argument(flag, dest=f"{section}.{key}", default=None, help=help_text,
                            **options)


def _flag_overrides(args: argparse.Namespace, rows) -> dict[str, dict]:
    overrides: dict[str, dict] = {section: {} for section in SECTIONS}
    for _, section, key, _ in rows:
        value = getattr(args, f"{section}.{key}")
        if value is not None:
            overrides[section][key] = value
    return overrides


def config_from_args(args: argparse.Namespace) -> Config:
    """Defaults, then --config, then the flags given; ConfigError names a bad key."""
    config = load_config(args.config) if args.config else Config()
    overrides = _flag_overrides(args, FLAGS)
    if args.prompt is not None or args.prompts_file is not None:
        # Prompts on the command line replace those of the config file.
        overrides["app"]["prompts"] = list(args.prompt or [])
        overrides["app"]["prompts_file"] = args.prompts_file or ""
    return config_from_dict(overrides, config)


def _setup_logging() -> bool:
    debug = os.environ.get("REALTIME_DEBUG", "") not in ("", "0")
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    return debug


def build_archive_parser(command: str) -> argparse.ArgumentParser:
    """`main.py index` or `main.py search` (docs/archive.md)."""
    from realtime.archive.jobs import EXIT_CODES_HELP

    if command == "index":
        parser = OneLineParser(
            prog="main.py index", description="Index recorded video once: decode each file, "
            "sample frames, store the CLIP embeddings the detector needs to answer any text "
            "later (INDEX_DIR/manifest.jsonl and Parquet files; docs/archive.md).",
            epilog=f"{EXIT_CODES_HELP} Interrupted: what was written is kept; run again "
                   "with --resume.")
        parser.add_argument("--source", nargs="+", action="extend", required=True,
                            metavar="PATH_OR_GLOB", help="video or image files, folders "
                            "(searched recursively) or glob patterns; repeatable")
        parser.add_argument("--out", required=True, metavar="INDEX_DIR",
                            help="folder of the index (created; must not hold an index "
                                 "unless --resume)")
        parser.add_argument("--resume", action="store_true", help="continue an index: skip "
                            "complete chunks, redo failed or missing ones, re-index files "
                            "whose size or mtime changed (default: off)")
        rows = INDEX_FLAGS + ENGINE_FLAGS
    else:
        parser = OneLineParser(
            prog="main.py search", description="Ask an index when and where a text appears: "
            "every stored frame scored, runs of matching frames as segments, the detector's "
            "box at each segment's best frame.  Model and layout default to the index's.",
            epilog=EXIT_CODES_HELP)
        parser.add_argument("--index", required=True, metavar="INDEX_DIR",
                            help="a folder written by main.py index")
        parser.add_argument("--prompt", action="append", metavar="TEXT",
                            help="text to search for; repeat for several (each is its own "
                                 "question)")
        parser.add_argument("--prompts-file", metavar="FILE",
                            help=f"{field_help('app', 'prompts_file')} (default: none)")
        parser.add_argument("--json", metavar="HITS.jsonl", default="",
                            help="write one segment a line (default: none)")
        parser.add_argument("--report", metavar="REPORT.html", default="",
                            help="write a self-contained HTML page with timelines and "
                                 "thumbnails (default: none)")
        rows = SEARCH_FLAGS + ENGINE_FLAGS
    parser.add_argument("--config", metavar="FILE.yaml",
                        help="YAML preset (see configs/); flags override it (default: none)")
    _add_flags(parser, rows)
    parser.set_defaults(rows=rows)
    return parser


def archive_main(argv: list[str]) -> int:
    command = argv[0]
    args = build_archive_parser(command).parse_args(argv[1:])
    debug = _setup_logging()
    from realtime.archive import jobs
    from realtime.engine.prompts import PromptError, read_prompts_file

    try:
        existing = args.index if command == "search" else args.out if args.resume else ""
        # An index's own model and layout first: a search needs no flag to match them.
        config = config_from_dict(jobs.index_settings(existing)) if existing else Config()
        config = load_config(args.config, config) if args.config else config
        config = config_from_dict(_flag_overrides(args, args.rows), config)
        if command == "search":
            prompts = list(args.prompt or [])
            prompts += list(read_prompts_file(args.prompts_file)) if args.prompts_file else []
    except (ConfigError, PromptError, jobs.IndexStoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if command == "index":
        return _guarded(lambda: jobs.index_job(config, args.source, args.out, args.resume), debug)
    return _guarded(lambda: jobs.search_job(config, args.index, prompts, args.json, args.report),
                    debug)


def _guarded(run, debug: bool) -> int:
    """A command's exit code; Ctrl+C before its own handlers, and an unexpected error,
    as one line (130 and 1)."""
    try:
        return run()
    except KeyboardInterrupt:   # only before the handlers are installed
        print("stopped by SIGINT", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(set REALTIME_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] and argv[0] in ARCHIVE_COMMANDS:
        return archive_main(argv)
    args = build_parser().parse_args(argv)
    debug = _setup_logging()
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from realtime.live import app

    return _guarded(lambda: app.run(config, also_reads=[("--config", args.config)]
                                    if args.config else []), debug)


if __name__ == "__main__":
    sys.exit(main())
