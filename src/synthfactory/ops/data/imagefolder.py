"""The image-folder source: `<root>/<class_name>/<image files>`, any size and mode."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from synthfactory.ops.data.images import Decoded, ImageCollector, RealDataset, decode_image
from synthfactory.ops.data.prompts import check_class_names

# Raster formats Pillow decodes (`.jfif`/`.jpe` are JPEG as browsers save it; `.pgm`/`.ppm`
# hold classic face and texture sets; `.mpo` is a camera's multi-picture JPEG).
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".webp",
                    ".tif", ".tiff", ".avif", ".pgm", ".ppm", ".pbm", ".pnm", ".tga", ".jp2",
                    ".j2k", ".qoi", ".mpo"}
# Images Pillow cannot decode without a plugin: named as such instead of "not an image file"
# (and counted as lost images by the report's `skipped_images` warning; other files are not).
UNDECODABLE_EXTENSIONS = {".heic": "HEIC", ".heif": "HEIF", **{
    raw: "camera RAW" for raw in (".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf",
                                  ".rw2")}}


def imagefolder_classes(root: Path) -> list[str]:
    if not root.is_dir():
        raise FileNotFoundError(f"real_images.root {str(root)!r} is not a directory: point it at a "
                                "folder holding one sub-folder of images per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"real_images.root {str(root)!r} has no class folders: expected "
                         "<root>/<class_name>/<image files>")
    check_class_names(classes)  # blank or look-alike folder names fail here, not in a step
    return classes


def is_hidden(path: Path, folder: Path) -> bool:
    """Whether a file under a class folder is hidden: its name or a folder on the way starts
    with '.' (`.DS_Store`, macOS `._photo.jpg` forks, `.ipynb_checkpoints/` copies). Hidden
    files are never read, as hidden class folders are not."""
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def load_imagefolder(root: str, resolution: int, channels: int,
                     class_names: list[str] | None = None) -> RealDataset:
    """Every readable image under `<root>/<class>/`, resized; unreadable files are counted, skipped.

    `class_names` picks (and orders) the class folders; by default every sub-folder, sorted.
    Skipped, counted per reason: hidden files (`is_hidden`), files without an image extension,
    empty files, files no decoder
    recognises, corrupt or truncated images, and images over `PIL.Image.MAX_IMAGE_PIXELS` pixels
    (decompression bombs: checked from the header, before decoding). Images in other modes (CMYK,
    16-bit, alpha, palette) are converted and counted per mode in `converted`. A class left with
    no readable image is an error: it could never be evaluated.
    """
    root_path = Path(root)
    available = imagefolder_classes(root_path)
    class_names = list(class_names or available)
    missing = [name for name in class_names if name not in available]
    if missing:
        raise ValueError(f"real_images.class_names {missing[:5]} have no folder under "
                         f"real_images.root {root!r}")
    collected = ImageCollector()
    for label, name in enumerate(class_names):
        skipped_before = Counter(collected.skipped)
        folder = root_path / name
        found = sum(collected.add(read_image_file(path, folder, resolution, channels), label,
                                  path.relative_to(root_path).as_posix())
                    for path in sorted(p for p in folder.rglob("*") if p.is_file()))
        if found == 0:
            class_skipped = collected.skipped - skipped_before
            why = ", ".join(f"{count} {reason}" for reason, count in sorted(class_skipped.items()))
            raise ValueError(f"class {name!r} under real_images.root {root!r} has no readable image"
                             f" (skipped: {why or 'no files'}): add images to it or remove the "
                             "folder")
    return collected.dataset(class_names)


def read_image_file(path: Path, folder: Path, resolution: int, channels: int) -> Decoded:
    """(reason, None) for a file under `folder` to skip (hidden, not an image, empty, or what
    `decode_image` refuses), else (None, (resized image, source mode)): how every image
    folder is read (the real images and the retrieval pool)."""
    if is_hidden(path, folder):
        return "hidden file (its name or a folder on its path starts with '.')", None
    suffix = path.suffix.lower()
    if suffix in UNDECODABLE_EXTENSIONS:
        return (f"{UNDECODABLE_EXTENSIONS[suffix]} image (Pillow cannot decode it: convert the "
                "files to JPEG or PNG)"), None
    if suffix not in IMAGE_EXTENSIONS:
        return "not an image file", None
    if path.stat().st_size == 0:
        return "empty file", None
    return decode_image(path, resolution, channels)

