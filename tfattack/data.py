"""The data boundary: image folders and NIPS 2017 metadata in, lossless 8-bit PNGs out.

Layout read (the NIPS 2017 adversarial competition's):
  - a folder of images `<ImageId>.png` (also .jpg/.jpeg; ImageId = file stem);
  - a metadata CSV with a header naming at least `ImageId` and `TrueLabel` (`TargetClass` for targeted
    runs): the DEV set's `dev_dataset.csv` (ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,
    OriginalLandingURL,License,Author,AuthorProfileURL) or a plain `images.csv`, found next to the
    images or in their parent folder; or none, and then the images have no ground-truth labels;
  - optionally a `target_class.csv` (`filename,class` per line, no header) for targeted runs.
Labels and targets in these files count 1..1000 (TF-slim's 1001-way convention, 0 = background). They
are converted to the standard indices 0..999 here and nowhere else (`tfattack.models.nips17_to_index`).

    dataset = data.read_dataset("images/")            # ids, paths, sizes, labels (0..999) or None, notes
    for note in dataset.notes: print(note)            # conversions, skipped files, label source: said once
    reader = data.batches(dataset, batch_size=8)      # batches of equal-size images (static shapes)
    for batch in reader: ... batch.images ...         # float32 [B, H, W, 3] in [0, 1]
    reader.skipped                                    # files that failed to decode (the run went on)
    data.check_output_dir("images/", "out/")          # never write into the input folder; creates nothing
    data.make_output_dir("out/")                      # once every other check has passed
    data.write_png(adv, data.output_path("out/", image_id))   # atomic, lossless, mode 0666 & ~umask

Grey, palette, 16-bit and RGBA images are converted to 8-bit RGB (and the dataset's notes say so
once); images keep their own size. Files that cannot be read, images of more than MAX_IMAGE_PIXELS
pixels (refused from their header, never decoded) and broken symbolic links are skipped and listed,
never fatal; each skip reason is one line starting with the file's path.
Metadata errors (missing columns, images without a row, labels out of range) raise `DataError`, one
line naming the file, the line and the column.
"""

from __future__ import annotations

import collections
import csv as _csv
import dataclasses
import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from tfattack import files
from tfattack.errors import UserError
from tfattack.names import first_few

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Metadata file names tried, next to the images first, then in their parent folder (the DEV layout is
# `dataset/images/*.png` + `dataset/dev_dataset.csv`).
METADATA_CSV_NAMES = ("dev_dataset.csv", "images.csv")
REQUIRED_COLUMNS = ("ImageId", "TrueLabel")
TARGET_COLUMN = "TargetClass"
NIPS17_IMAGE_SIZE = 299
# Images with more pixels are refused from their header, before any pixel is decoded. A run holds each image as
# float32 RGB, 12 bytes a pixel (480 MB at this limit), and an attack keeps several copies of every image of a
# batch (adversarial image, gradient, momentum, and the transformed copies of each gradient pass), so one image
# past this limit is already gigabytes of working memory, while ImageNet-style inputs (the DEV set: 299x299) are
# a small fraction of it. It is below PIL's own Image.MAX_IMAGE_PIXELS, so this limit, with this module's
# message, is the one a user meets, not PIL's decompression-bomb warning or error.
MAX_IMAGE_PIXELS = 40_000_000

# What each PIL mode becomes on the way to 8-bit RGB, as said in the dataset notes.
_CONVERSIONS = {
    "L": "greyscale: the grey channel is repeated as R, G and B",
    "1": "1-bit black-and-white: converted to 8-bit grey, repeated as R, G and B",
    "LA": "greyscale with alpha: the alpha channel is dropped (stored grey values kept), grey repeated as R, G and B",
    "RGBA": "RGBA: the alpha channel is dropped (stored colour values kept, no compositing)",
    "RGBa": "RGBa: the alpha channel is dropped",
    "P": "palette: expanded to RGB (any transparency dropped)",
    "PA": "palette with alpha: expanded to RGB, alpha dropped",
    "I;16": "16-bit greyscale: rounded to 8 bits (outputs are 8-bit PNGs), repeated as R, G and B",
    "I;16B": "16-bit greyscale: rounded to 8 bits (outputs are 8-bit PNGs), repeated as R, G and B",
    "I;16L": "16-bit greyscale: rounded to 8 bits (outputs are 8-bit PNGs), repeated as R, G and B",
    "I": "32-bit integer greyscale (16-bit PNG): values read as 0..65535, rounded to 8 bits",
    "CMYK": "CMYK: converted to RGB by PIL",
    "YCbCr": "YCbCr: converted to RGB by PIL",
}


class DataError(UserError):
    """Bad input data or metadata; the message is one line naming the file (and line/column)."""


class ImageReadError(DataError):
    """An image file that cannot be decoded (corrupt, truncated, not an image)."""


class ImageTooLargeError(ImageReadError):
    """An image of more than MAX_IMAGE_PIXELS pixels: refused from its header, never decoded."""


# How the dataset's notes group skipped files (`Skipped.kind`).
UNREADABLE = "unreadable"
TOO_LARGE = "too large"
BROKEN_LINK = "broken symbolic link"


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A file left out of a run: `reason` is one line that starts with the file's path; `kind` groups it in notes."""

    path: str
    reason: str
    kind: str = UNREADABLE

    def __post_init__(self):
        # A reason read without its Skipped (a log line, a report's list) must still say which file it is about.
        if not self.reason.startswith(str(self.path)):
            object.__setattr__(self, "reason", f"{self.path}: {self.reason}")

    @classmethod
    def from_error(cls, path, err: ImageReadError) -> "Skipped":
        return cls(str(path), str(err), TOO_LARGE if isinstance(err, ImageTooLargeError) else UNREADABLE)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """The images of one folder and what is known about them, sorted by ImageId.

    Attributes:
      input_dir: the folder the images are in.
      ids, paths: ImageId (file stem) and path of each readable image.
      sizes: (height, width) of each image, read from the file header.
      modes: PIL mode of each image as stored ("RGB", "L", "RGBA", ...).
      labels: int64 [N] standard indices 0..999 (TrueLabel - 1), or None when there is no metadata CSV.
      targets: int64 [N] standard indices 0..999 (TargetClass - 1 or target_class.csv), or None.
      label_file, target_file: where labels and targets came from (None if nowhere).
      notes: human-readable facts to say once (label source, conversions, odd sizes, skipped files).
      skipped: files whose header could not be read (not images, corrupt), images of more than
        MAX_IMAGE_PIXELS pixels, and broken symbolic links; they are not in `ids`.
    """

    input_dir: str
    ids: Tuple[str, ...]
    paths: Tuple[str, ...]
    sizes: Tuple[Tuple[int, int], ...]
    modes: Tuple[str, ...]
    labels: Optional[np.ndarray]
    targets: Optional[np.ndarray]
    label_file: Optional[str] = None
    target_file: Optional[str] = None
    notes: Tuple[str, ...] = ()
    skipped: Tuple[Skipped, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)

    def require_labels(self) -> np.ndarray:
        if self.labels is None:
            raise DataError(f"{self.input_dir}: no ground-truth labels (no {' or '.join(METADATA_CSV_NAMES)} "
                            f"with {REQUIRED_COLUMNS[1]} here or in the parent folder)")
        return self.labels

    def require_targets(self) -> np.ndarray:
        if self.targets is None:
            raise DataError(f"{self.input_dir}: a targeted run needs target classes: a metadata CSV with a "
                            f"{TARGET_COLUMN} column or a target_class.csv (filename,class)")
        return self.targets

    def select(self, ids: Sequence[str]) -> "Dataset":
        """The dataset restricted to `ids` (e.g. one shard), in this dataset's order."""
        wanted = set(ids)
        unknown = sorted(wanted - set(self.ids))
        if unknown:
            raise DataError(f"{self.input_dir}: no image with ImageId {unknown[0]!r}")
        keep = [i for i, image_id in enumerate(self.ids) if image_id in wanted]

        def pick(values):
            return None if values is None else values[keep]

        return dataclasses.replace(
            self, ids=tuple(self.ids[i] for i in keep), paths=tuple(self.paths[i] for i in keep),
            sizes=tuple(self.sizes[i] for i in keep), modes=tuple(self.modes[i] for i in keep),
            labels=pick(self.labels), targets=pick(self.targets))


# --- metadata -----------------------------------------------------------------------------------


def find_metadata_csv(input_dir: str) -> Optional[str]:
    """The metadata CSV next to the images or in their parent folder, or None."""
    folder = Path(input_dir)
    for candidate_dir in (folder, folder.resolve().parent):
        for name in METADATA_CSV_NAMES:
            candidate = candidate_dir / name
            if candidate.is_file():
                return str(candidate)
    return None


def _nips17_class(value: str, path: str, line: int, column: str) -> int:
    """One 1..1000 label from a CSV cell -> standard index 0..999, or a DataError naming the cell."""
    from tfattack.models import nips17_to_index

    try:
        number = int(str(value).strip())
    except ValueError:
        raise DataError(f"{path}: line {line}, column {column}: expected an integer class 1..1000, got {value!r}") from None
    if not 1 <= number <= 1000:
        raise DataError(f"{path}: line {line}, column {column}: class {number} is out of range 1..1000 "
                        f"(NIPS 2017 labels count from 1)")
    return int(nips17_to_index([number])[0])


def read_metadata_csv(path: str) -> Tuple[Dict[str, int], Optional[Dict[str, int]]]:
    """Reads a NIPS 2017 metadata CSV -> ({ImageId: label 0..999}, {ImageId: target 0..999} or None).

    Targets are None when the CSV has no TargetClass column (or that column is empty everywhere).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(_csv.reader(handle))
    except OSError as err:
        raise DataError(f"{path}: cannot read metadata CSV ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text CSV file") from None
    if not rows:
        raise DataError(f"{path}: empty metadata CSV (expected a header with {', '.join(REQUIRED_COLUMNS)})")
    header = [cell.strip() for cell in rows[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} in the header (found: {', '.join(header)})")
    column = {name: header.index(name) for name in header}
    has_targets = TARGET_COLUMN in column
    labels: Dict[str, int] = {}
    targets: Dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise DataError(f"{path}: line {line}: {len(row)} columns, the header has {len(header)}")
        image_id = row[column["ImageId"]].strip()
        if not image_id:
            raise DataError(f"{path}: line {line}, column ImageId: empty")
        if image_id in labels:
            raise DataError(f"{path}: line {line}, column ImageId: {image_id!r} appears twice")
        labels[image_id] = _nips17_class(row[column["TrueLabel"]], path, line, "TrueLabel")
        if has_targets and row[column[TARGET_COLUMN]].strip():
            targets[image_id] = _nips17_class(row[column[TARGET_COLUMN]], path, line, TARGET_COLUMN)
    return labels, (targets or None)


def read_target_class_csv(path: str) -> Dict[str, int]:
    """Reads a NIPS 2017 `target_class.csv` (`filename,class` per line, no header) -> {ImageId: 0..999}."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(_csv.reader(handle))
    except OSError as err:
        raise DataError(f"{path}: cannot read target class CSV ({err.strerror or err})") from None
    targets: Dict[str, int] = {}
    for line, row in enumerate(rows, start=1):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise DataError(f"{path}: line {line}: expected 'filename,class' (no header), got {','.join(row)!r}")
        image_id = Path(row[0].strip()).stem
        if image_id in targets:
            raise DataError(f"{path}: line {line}, column 1: {row[0].strip()!r} appears twice")
        targets[image_id] = _nips17_class(row[1], path, line, "class (column 2)")
    return targets


# --- the folder ---------------------------------------------------------------------------------


def list_images(input_dir: str) -> List[Path]:
    """Image files directly in `input_dir` (by extension), sorted by name; DataError if none/absent.

    Broken symbolic links with an image name are listed too (`broken_link_reason` tells them apart), so
    that `read_dataset` reports them instead of losing them silently.
    """
    folder = Path(input_dir)
    if not folder.is_dir():
        raise DataError(f"input_dir {input_dir}: no such folder")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                   and (p.is_file() or broken_link_reason(p) is not None))
    if not found:
        raise DataError(f"input_dir {input_dir}: no images ({', '.join(IMAGE_EXTENSIONS)}) in it")
    stems = collections.Counter(p.stem for p in found)
    twice = sorted(s for s, n in stems.items() if n > 1)
    if twice:
        names = ", ".join(p.name for p in found if p.stem == twice[0])
        raise DataError(f"input_dir {input_dir}: ImageId {twice[0]!r} is ambiguous ({names})")
    return found


def broken_link_reason(path: Path) -> Optional[str]:
    """For a symbolic link that leads nowhere, its skip reason ("<path>: broken symbolic link to <target> (<why>)");
    None for anything else."""
    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
        return None
    except OSError as err:
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"{path}: broken symbolic link to {target} ({err.strerror or err})"


def _too_large_reason(path, size: Tuple[int, int]) -> str:
    width, height = size
    return (f"{path}: {width}x{height} pixels is over the {MAX_IMAGE_PIXELS}-pixel limit "
            f"(tfattack.data.MAX_IMAGE_PIXELS)")


def _size_past_pil_limit(path) -> Optional[Tuple[int, int]]:
    """(width, height) of a file PIL's decompression-bomb check refused to open, or None if unknown.

    Image.open checks the size after its format plugin has read the header; calling the plugin directly reads
    the same header without that check (and without decoding pixels).
    """
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(16)
            for name in Image.ID:
                factory, accept = Image.OPEN[name]
                verdict = True if accept is None else accept(prefix)
                if not verdict or isinstance(verdict, str):  # a string is PIL's "looks like it, but unsupported"
                    continue
                handle.seek(0)
                try:
                    return tuple(factory(handle, str(path)).size)
                except (OSError, SyntaxError, ValueError, IndexError, TypeError, EOFError, struct.error,
                        Image.DecompressionBombError):
                    continue
    except OSError:
        pass
    return None


# What PIL raises for a file it cannot identify or decode (corrupt, truncated, not an image).
_PIL_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                    Image.DecompressionBombError)


def _open_image(path) -> Image.Image:
    """`path` opened with its header read and no pixel decoded (close it, or use it in a `with`).

    Raises ImageTooLargeError for more than MAX_IMAGE_PIXELS pixels, ImageReadError for a file that cannot
    be identified as an image; both name the file.
    """
    try:
        with warnings.catch_warnings():
            # PIL's warning threshold is above MAX_IMAGE_PIXELS: every image it would warn about is refused
            # below, with a message naming this module's limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except Image.DecompressionBombError as err:
        size = _size_past_pil_limit(path)
        if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
            raise ImageTooLargeError(_too_large_reason(path, size)) from None
        raise ImageReadError(f"{path}: cannot read image ({_reason(err)})") from None
    except _PIL_READ_ERRORS as err:
        raise ImageReadError(f"{path}: cannot read image ({_reason(err)})") from None
    if image.size[0] * image.size[1] > MAX_IMAGE_PIXELS:
        image.close()
        raise ImageTooLargeError(_too_large_reason(path, image.size))
    return image


def _header(path: Path) -> Tuple[Tuple[int, int], str]:
    """(height, width) and PIL mode from the file header, without decoding the pixels.

    Raises ImageReadError (ImageTooLargeError past MAX_IMAGE_PIXELS) naming the file.
    """
    with _open_image(path) as image:
        width, height = image.size
        return (height, width), image.mode


def _reason(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__



def _format_notes(input_dir, ids, sizes, modes, skipped) -> List[str]:
    notes = []
    by_mode = collections.defaultdict(list)
    for image_id, mode in zip(ids, modes):
        if mode != "RGB":
            by_mode[mode].append(image_id)
    for mode, members in sorted(by_mode.items()):
        what = _CONVERSIONS.get(mode, f"mode {mode}: converted to RGB by PIL")
        notes.append(f"{len(members)} image(s) {what} ({first_few(members)})")
    odd = collections.Counter(s for s in sizes if s != (NIPS17_IMAGE_SIZE, NIPS17_IMAGE_SIZE))
    if odd:
        listed = ", ".join(f"{w}x{h}: {n}" for (h, w), n in sorted(odd.items()))
        notes.append(f"{sum(odd.values())} image(s) not {NIPS17_IMAGE_SIZE}x{NIPS17_IMAGE_SIZE} ({listed}): kept at "
                     f"their own size (each model resizes internally; outputs keep each image's size)")
    for kind in dict.fromkeys(s.kind for s in skipped):
        reasons = [s.reason for s in skipped if s.kind == kind]
        notes.append(f"{len(reasons)} file(s) in {input_dir} skipped, {kind}: "
                     + "; ".join(reasons[:3]) + (" ..." if len(reasons) > 3 else ""))
    return notes


def read_dataset(input_dir: str, csv: Optional[str] = None, target_class_csv: Optional[str] = None) -> Dataset:
    """Lists the images of `input_dir` and attaches labels and targets (0..999).

    Args:
      input_dir: folder of `<ImageId>.png` (or .jpg/.jpeg) files.
      csv: metadata CSV (ImageId, TrueLabel[, TargetClass], ...); default: `dev_dataset.csv` or
        `images.csv` in `input_dir` or its parent, else no labels.
      target_class_csv: NIPS'17 `target_class.csv`; its targets replace the metadata CSV's TargetClass.

    Every image needs a row in the metadata CSV (else DataError naming the image); rows without an
    image are ignored (a subset of the DEV set is a valid input). Unreadable files, images of more than
    MAX_IMAGE_PIXELS pixels (decided from the header, nothing decoded) and broken symbolic links are
    skipped and listed in `skipped` and `notes`.
    """
    found = list_images(input_dir)
    ids, paths, sizes, modes, skipped = [], [], [], [], []
    for path in found:
        broken = broken_link_reason(path)
        if broken is not None:
            skipped.append(Skipped(str(path), broken, BROKEN_LINK))
            continue
        try:
            size, mode = _header(path)
        except ImageReadError as err:
            skipped.append(Skipped.from_error(path, err))
            continue
        ids.append(path.stem)
        paths.append(str(path))
        sizes.append(size)
        modes.append(mode)
    if not ids:
        raise DataError(f"input_dir {input_dir}: none of its {len(found)} image file(s) can be read "
                        f"(first: {skipped[0].reason})")
    notes = _format_notes(input_dir, ids, sizes, modes, skipped)

    label_file = csv if csv is not None else find_metadata_csv(input_dir)
    labels = targets = None
    target_file = None
    if label_file is not None:
        if not os.path.isfile(label_file):
            raise DataError(f"metadata CSV {label_file}: no such file")
        by_id, target_by_id = read_metadata_csv(label_file)
        missing = [(i, p) for i, p in zip(ids, paths) if i not in by_id]
        if missing:
            raise DataError(f"{label_file}: no row for ImageId {missing[0][0]!r} (image {missing[0][1]}); "
                            f"{len(missing)} image(s) of {input_dir} are not in the CSV")
        labels = np.asarray([by_id[i] for i in ids], np.int64)
        unused = len(by_id) - len(ids)
        notes.insert(0, f"labels: TrueLabel from {label_file} (1..1000 converted to 0..999)"
                        + (f"; {unused} CSV row(s) have no image here (ignored)" if unused else ""))
        if target_by_id is not None and all(i in target_by_id for i in ids):
            targets = np.asarray([target_by_id[i] for i in ids], np.int64)
            target_file = label_file
    else:
        notes.insert(0, f"labels: no metadata CSV ({' or '.join(METADATA_CSV_NAMES)}) in {input_dir} or its "
                        f"parent: the images have no ground-truth labels")
    if target_class_csv is not None:
        by_id = read_target_class_csv(target_class_csv)
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DataError(f"{target_class_csv}: no line for image {missing[0]}.png; "
                            f"{len(missing)} image(s) of {input_dir} have no target class")
        targets = np.asarray([by_id[i] for i in ids], np.int64)
        target_file = target_class_csv
    if target_file is not None:
        notes.insert(1, f"targets: from {target_file} (1..1000 converted to 0..999)")
    return Dataset(input_dir=str(input_dir), ids=tuple(ids), paths=tuple(paths), sizes=tuple(sizes),
                   modes=tuple(modes), labels=labels, targets=targets, label_file=label_file,
                   target_file=target_file, notes=tuple(notes), skipped=tuple(skipped))


# --- pixels in ----------------------------------------------------------------------------------


def _to_rgb_uint8(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(image).astype(np.float64)
        grey = np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8)  # 65535 / 255 = 257
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode in ("L", "LA", "1"):
        grey = np.asarray(image.convert("L") if mode == "1" else image.getchannel("L"), np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode in ("RGBA", "RGBa"):
        return np.asarray(image, np.uint8)[..., :3]
    return np.asarray(image.convert("RGBA" if "transparency" in image.info or mode == "PA" else "RGB"),
                      np.uint8)[..., :3]


def read_image_uint8(path: str) -> np.ndarray:
    """Decodes one image to uint8 [H, W, 3] RGB (conversions as in the module doc).

    Raises ImageReadError (a DataError) naming the file for anything that is not a complete readable
    image, and ImageTooLargeError, before decoding anything, for more than MAX_IMAGE_PIXELS pixels.
    """
    image = _open_image(path)
    try:
        with image:
            image.load()
            pixels = _to_rgb_uint8(image)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except _PIL_READ_ERRORS as err:
        raise ImageReadError(f"{path}: cannot read image ({_reason(err)})") from None
    return np.ascontiguousarray(pixels)


def load_image(path: str) -> np.ndarray:
    """One image as float32 [H, W, 3] RGB in [0, 1] (8-bit levels / 255); raises ImageReadError."""
    return read_image_uint8(path).astype(np.float32) / np.float32(255.0)


def load_images(paths: Sequence[str]) -> Tuple[List[np.ndarray], List[Skipped]]:
    """Decodes `paths` -> (float32 [H, W, 3] arrays of the readable ones in input order, skipped files).

    A file that cannot be decoded (or is over MAX_IMAGE_PIXELS) does not stop the others: it is returned
    in `skipped` with the reason, which starts with its path.
    """
    images, skipped = [], []
    for path in paths:
        try:
            images.append(load_image(path))
        except ImageReadError as err:
            skipped.append(Skipped.from_error(path, err))
    return images, skipped


# --- batches ------------------------------------------------------------------------------------


def batches_by_size(indices: Sequence[int], sizes: Sequence, batch_size: int) -> List[List[int]]:
    """Groups image indices into batches of at most `batch_size` images of one (height, width).

    Every batch has one image shape, so a compiled model or attack is traced once per size. Batches
    come in the order of their first image; inside a batch, input order is kept.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: Dict[tuple, List[int]] = {}
    for index in indices:
        groups.setdefault(tuple(sizes[index]), []).append(index)
    out = []
    for members in groups.values():
        out += [members[i:i + batch_size] for i in range(0, len(members), batch_size)]
    return sorted(out, key=lambda batch: batch[0])


@dataclasses.dataclass(frozen=True)
class Batch:
    """Images of one size: `images` float32 [B, H, W, 3] in [0, 1], with their ids, labels, targets.

    `indices` are positions in the dataset. When the reader pads, the first `count` rows are real
    and the rest are zero images (ids, labels and targets cover the real ones only).
    """

    indices: Tuple[int, ...]
    ids: Tuple[str, ...]
    images: np.ndarray
    labels: Optional[np.ndarray]
    targets: Optional[np.ndarray]

    @property
    def count(self) -> int:
        return len(self.ids)


class BatchReader:
    """Iterates a dataset in batches of equal-size images; undecodable files are skipped and listed.

    `pad=True` fills every batch up to `batch_size` with zero images (one static batch shape per size).
    After (or during) iteration, `skipped` lists the files that failed to decode or are over
    MAX_IMAGE_PIXELS (never decoded), each reason starting with the file's path.
    """

    def __init__(self, dataset: Dataset, batch_size: int, pad: bool = False):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.pad = pad
        self.plan = batches_by_size(range(len(dataset)), dataset.sizes, self.batch_size)
        self.skipped: List[Skipped] = []

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[Batch]:
        ds = self.dataset
        for planned in self.plan:
            images, kept = [], []
            for index in planned:
                try:
                    images.append(load_image(ds.paths[index]))
                    kept.append(index)
                except ImageReadError as err:
                    self.skipped.append(Skipped.from_error(ds.paths[index], err))
            if not kept:
                continue
            stack = np.stack(images)
            if self.pad and len(kept) < self.batch_size:
                filler = np.zeros((self.batch_size - len(kept),) + stack.shape[1:], np.float32)
                stack = np.concatenate([stack, filler])
            yield Batch(indices=tuple(kept), ids=tuple(ds.ids[i] for i in kept), images=stack,
                        labels=None if ds.labels is None else ds.labels[kept],
                        targets=None if ds.targets is None else ds.targets[kept])


def batches(dataset: Dataset, batch_size: int, pad: bool = False) -> BatchReader:
    """`BatchReader(dataset, batch_size, pad)`: see there."""
    return BatchReader(dataset, batch_size, pad)


# --- sharding -----------------------------------------------------------------------------------


def shard(ids: Sequence[str], num_shards: int, shard_index: int) -> List[str]:
    """The ids of shard `shard_index` of `num_shards`: contiguous blocks of the sorted ids.

    Deterministic and independent of the order `ids` come in (e.g. a directory listing); the shards
    cover every id exactly once and differ in size by at most one.
    """
    if not isinstance(num_shards, int) or num_shards < 1:
        raise DataError(f"num_shards must be an integer >= 1, got {num_shards!r}")
    if not isinstance(shard_index, int) or not 0 <= shard_index < num_shards:
        raise DataError(f"shard_index must be in 0..{num_shards - 1}, got {shard_index!r}")
    ordered = sorted(set(ids))
    if len(ordered) != len(ids):
        raise DataError("shard: ids must be unique")
    # array_split's blocks: the first len % num_shards of them one id longer.
    return np.array_split(np.array(ordered, dtype=object), num_shards)[shard_index].tolist()


# --- pixels out ---------------------------------------------------------------------------------


def output_path(output_dir: str, image_id: str) -> str:
    """Where the output for `image_id` goes: `<output_dir>/<ImageId>.png` (the input's name, as PNG)."""
    return os.path.join(output_dir, f"{image_id}.png")


def check_output_dir(input_dir: str, output_dir: str) -> str:
    """Checks, creating nothing, that `output_dir` is not `input_dir` or inside it (originals stay untouched)
    and is not an existing file; DataError naming output_dir otherwise. Returns `output_dir`.

    Create the folder with `make_output_dir` once every other check of the run has passed, so that an early
    error leaves no empty folder behind.
    """
    source = Path(input_dir).resolve()
    target = Path(output_dir).resolve()
    if target == source or source in target.parents:
        where = "is" if target == source else "is inside"
        raise DataError(f"output_dir {output_dir} {where} input_dir {input_dir}: outputs are never written "
                        f"next to the original images; choose another folder")
    if target.exists() and not target.is_dir():
        raise DataError(f"output_dir {output_dir}: exists and is not a folder")
    return str(output_dir)


def make_output_dir(output_dir: str) -> str:
    """Creates `output_dir` (and its parents) if needed and checks that files can be created in it; returns it.

    DataError naming output_dir if it cannot be created or written. `check_output_dir` first: this one does
    not know the input folder.
    """
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataError(f"output_dir {output_dir}: exists and is not a folder") from None
    except OSError as err:
        raise DataError(f"output_dir {output_dir}: cannot be created ({err.strerror or err})") from None
    try:
        files.check_writable(str(output_dir), f"output_dir {output_dir}")
    except OSError as err:
        raise DataError(str(err)) from None
    return str(output_dir)


def to_uint8(image01) -> np.ndarray:
    """float images in [0, 1] (any shape; or uint8) -> uint8 pixels, rounded to the nearest level (not truncated)."""
    array = np.asarray(image01)
    if array.dtype == np.uint8:
        return array
    array = np.asarray(array, np.float64)
    if not np.all(np.isfinite(array)):
        raise DataError("image has NaN or infinite values")
    # Half a level of slack: float noise around 0 and 1 rounds into range; anything more is a bug upstream.
    if array.size and (array.min() < -0.5 / 255 or array.max() > 1 + 0.5 / 255):
        raise DataError(f"image values must be in [0, 1], got [{array.min():.4g}, {array.max():.4g}]")
    return np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)


def write_png(image01, path: str) -> None:
    """Writes one RGB image as a lossless 8-bit PNG, atomically (temporary file + os.replace).

    `image01`: float [H, W, 3] in [0, 1] (rounded to the nearest 8-bit level) or uint8. An interrupted
    run leaves either the old file or the complete new one, never half an image. The file gets mode
    `0666 & ~umask`, as a plain `open()` would give (`tfattack.files.atomic_write`).
    """
    if not str(path).lower().endswith(".png"):
        raise DataError(f"{path}: outputs are PNG files (name them <ImageId>.png)")
    try:
        pixels = to_uint8(image01)
    except DataError as err:
        raise DataError(f"{path}: {err}") from None
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise DataError(f"{path}: expected an RGB image [H, W, 3], got shape {pixels.shape}")
    files.atomic_write(path, lambda stream: Image.fromarray(pixels, "RGB").save(stream, format="PNG"))
