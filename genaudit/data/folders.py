"""Image folders in ImageFolder layout, read as they are found on disks: one sub-folder per class (sorted by
name: class 0, 1, ...), image files anywhere below it, listed as torchvision lists them and decoded lazily.

What happens to each kind of entry (a run either reads an entry as one image, ignores it, or stops with exit 2
and a message naming it; nothing is skipped behind the user's back):

- **Ignored, silently** (as torchvision does): files without an image extension (`notes.txt`, `.DS_Store`,
  `Thumbs.db`, ...), and any other entry without one (links, FIFOs); files directly in the top folder.
- **Read**: regular files with an image extension (IMAGE_EXTENSIONS), and links with one whose target is a
  regular file inside the given folder (a file link is one sample, like a copy: tools such as rdfind replace
  duplicate images by links). Each path is one sample; folders are never entered through links, so a loop
  cannot repeat the data and the walk always ends.
- **Refused** (exit 2, naming the entry and the fix):
  - a class folder that is a link, or a link to a folder below a class folder: linked folders are not entered
    (they can loop back, e.g. `a/loop -> ..`, or lead out of the data folder);
  - a link with an image extension that leads out of the given folder, nowhere (broken), or around in a loop;
  - an entry with an image extension that is not a regular file (a FIFO, a device, a socket, or a link to one):
    only regular files are opened, with O_NONBLOCK and checked with fstat, so a FIFO never blocks the run;
  - a folder that cannot be read (permissions).
  - **an image file that cannot be decoded** — empty, truncated, text or another kind of file under an image
    name, a format other than JPEG/PNG/GIF/PPM/PGM/BMP/TIFF/WebP (so e.g. an EPS file never reaches
    Ghostscript), more pixels than Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`, 89.5
    million by default; refused from the header, before anything is decoded), or 32-bit/float pixels whose
    range is unknown (Pillow modes I, F). Refused rather than skipped: a skipped image would silently change
    which samples are audited. Images are decoded only when a run draws them, so such a file is reported
    by the first run that draws it.

Pixel modes: 16-bit images are scaled to 8 bits (x / 257); every other mode (1-bit, grayscale, palette, RGBA,
CMYK, ...) becomes RGB as torchvision converts it (alpha is dropped). Images of different sizes need `--resize`.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np

from genaudit.errors import GenauditError, first_line

# The image files an ImageFolder reads (torchvision.datasets.folder.IMG_EXTENSIONS). The listing below follows
# torchvision's ImageFolder rules (tested against it) without importing torch, which costs seconds at start-up.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# The Pillow decoders those extensions call for (PPM also reads PGM; GIF for the web images saved as .jpg/.png
# that are GIFs). Pillow's other decoders are never tried on a file, whatever its contents claim to be.
FORMATS = ("JPEG", "PNG", "GIF", "PPM", "BMP", "TIFF", "WEBP")
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def shown(path: str | os.PathLike) -> str:
    """A path as it may be printed: control characters (a terminal escape in a file name) and bytes that are not
    UTF-8 are written as escapes instead of reaching the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in os.fspath(path))


def _kind(mode: int) -> str | None:
    """None for a regular file, else what the entry is (for the message)."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                                         (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                                         (stat.S_ISSOCK, "a socket")) if test(mode)), "not a regular file")


def _not_regular(path: str, kind: str) -> GenauditError:
    return GenauditError(f"{shown(path)} has an image name but is {kind}, not a regular file; genaudit opens only "
                         "regular image files. Remove it from the folder.")


def regular_inside(path: str, real_root: str) -> str:
    """The real path of `path` when it is (or links to) a regular file inside `real_root`; else a GenauditError
    naming it: a link out of the folder, broken or looping, or something other than a regular file."""
    try:
        real = os.path.realpath(path, strict=True)
        mode = os.stat(real).st_mode
    except OSError as exc:
        if not os.path.islink(path):  # listed, then removed or made unreadable
            raise GenauditError(f"{shown(path)} cannot be opened ({exc.strerror}).") from None
        raise GenauditError(f"{shown(path)} is a link that leads nowhere ({exc.strerror}: it is broken or loops). "
                            "Remove it, or restore what it should point to.") from None
    if os.path.commonpath([real_root, real]) != real_root:
        raise GenauditError(f"{shown(path)} is a link to {shown(real)}, outside the data folder {shown(real_root)}; "
                            "genaudit reads no file outside the folder given to --data. Copy the image into the "
                            "folder, or remove the link.")
    kind = _kind(mode)
    if kind:
        raise _not_regular(path, kind)
    return real


def _linked_folder(path: str, where: str) -> GenauditError:
    return GenauditError(
        f"{shown(path)} is a link to a folder ({shown(os.readlink(path))}); genaudit does not enter linked "
        f"{where} (a link can loop back, counting images many times, or lead out of the data folder). Remove the "
        "link, or put the images themselves there (cp -r; cp -al makes hard links, which are read as files)."
    )


def _scan(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError as exc:
        raise GenauditError(f"The folder {shown(folder)} cannot be read ({exc.strerror}). Make it readable, or "
                            "move it out of the data folder.") from None


def _leads_to_folder(entry: os.DirEntry) -> bool:
    """Whether the entry is a folder or links to one; False for a link that is broken or loops."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _class_images(top: str, real_root: str) -> list[str]:
    """Image files below one class folder, in torchvision's order (folders sorted by path, then names); a walk
    that enters no linked folder (see the module docstring), so it ends and lists each path once."""
    listed, pending = [], [top]
    while pending:
        folder = pending.pop()
        names = []
        for entry in _scan(folder):
            image = entry.name.lower().endswith(IMAGE_EXTENSIONS)
            if entry.is_symlink():
                if _leads_to_folder(entry):
                    raise _linked_folder(entry.path, "folders")
                if image:
                    regular_inside(entry.path, real_root)
                    names.append(entry.name)
            elif entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
            elif image:
                if not entry.is_file(follow_symlinks=False):
                    raise _not_regular(entry.path, _kind(entry.stat(follow_symlinks=False).st_mode))
                names.append(entry.name)
        listed.append((folder, names))
    return [os.path.join(folder, name) for folder, names in sorted(listed) for name in names]


def load_folder(path: Path, size: tuple[int, int] | None = None) -> tuple[FolderImages, np.ndarray]:
    """An ImageFolder layout (see the module docstring): its images, decoded lazily (see FolderImages), and
    their labels."""
    real_root = os.path.realpath(path)
    classes = [entry for entry in _scan(str(path)) if _leads_to_folder(entry)]
    files, labels, empty = [], [], []
    for label, entry in enumerate(classes):
        if entry.is_symlink():
            raise _linked_folder(entry.path, "class folders")
        found = _class_images(entry.path, real_root)
        files += found
        labels += [label] * len(found)
        empty += [] if found else [entry.name]
    if not classes or empty:
        problem = "it has no class sub-folders" if not classes else f"no images in {', '.join(map(shown, empty[:5]))}"
        raise GenauditError(
            f"{shown(path)} is not an image folder in ImageFolder layout (one sub-folder per class with images, "
            f"{'/'.join(IMAGE_EXTENSIONS)}): {problem}."
        )
    return FolderImages(path, files, size), np.array(labels, dtype=np.int64)


class FolderImages:
    """The images of an ImageFolder layout as RGB (torchvision's convention), decoded only when indexed: a
    subsample of a large folder costs only its own memory. Indexing with an array of indices gives (n, 3, H, W)
    uint8; images of other sizes are resized to `size` (H, W) as they are decoded, when it is given, else they
    must all have the size of the first."""

    def __init__(self, path: Path, files: list[str], size: tuple[int, int] | None = None):
        self.path, self.files, self.size = path, files, size
        self.real_root = os.path.realpath(path)
        self.shape: tuple | None = None
        first = self[np.array([0])]
        self.shape, self.ndim, self.dtype = (len(files), *first.shape[1:]), first.ndim, first.dtype

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        indices = np.atleast_1d(indices)
        images = [self._decode(self.files[i]) for i in indices]
        # each image must have the first file's size (self.shape is None only while __init__ decodes that file)
        first, size = (self.files[0], self.shape[2:]) if self.shape else (self.files[indices[0]], images[0].shape[:2])
        for i, image in zip(indices, images):
            if image.shape[:2] != size:
                raise GenauditError(
                    f"Images in {shown(self.path)} have different sizes (H×W): {shown(self.files[i])} is "
                    f"{image.shape[0]}×{image.shape[1]}, {shown(first)} is {size[0]}×{size[1]}; pass --resize H,W to "
                    "bring them to one size as they are read."
                )
        return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))  # H x W x RGB -> RGB x H x W

    def _open(self, file: str) -> BinaryIO:
        """The file opened for reading when it is (still) a regular file inside the folder; O_NONBLOCK, so that
        a FIFO put in its place since the listing cannot block."""
        real = regular_inside(file, self.real_root)
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        kind = _kind(os.fstat(fd).st_mode)
        if kind:
            os.close(fd)
            raise _not_regular(file, kind)
        return os.fdopen(fd, "rb")

    def _decode(self, file: str) -> np.ndarray:
        """One image file as H x W x RGB uint8 (resized to `size`), or a GenauditError that names it."""
        from PIL import Image, UnidentifiedImageError

        try:
            with self._open(file) as fh, warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(fh, formats=FORMATS) as image:
                    if image.mode in SIXTEEN_BIT:
                        image = Image.fromarray(np.round(np.asarray(image, np.float32) / 257).astype(np.uint8))
                    elif image.mode in ("I", "F") or image.mode.startswith("I;"):
                        raise GenauditError(
                            f"{shown(file)} holds 32-bit, signed or floating-point pixels (Pillow mode "
                            f"'{image.mode}') whose range is not known, so genaudit would misread them. Save it as an "
                            "8- or 16-bit image, or give the data as a .npz of arrays."
                        )
                    image = image.convert("RGB")
                    if self.size is not None and image.size != (self.size[1], self.size[0]):
                        image = image.resize((self.size[1], self.size[0]), Image.BILINEAR)
                    return np.asarray(image)
        except GenauditError:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise GenauditError(
                f"{shown(file)} was not decoded: {first_line(exc)} (Pillow's limit, PIL.Image.MAX_IMAGE_PIXELS). "
                "Shrink the image or remove it; if it is genuine, raise PIL.Image.MAX_IMAGE_PIXELS (Python API)."
            ) from None
        except Exception as exc:  # Pillow's decoders raise many types (OSError, SyntaxError, ValueError, ...)
            why = (f"not a {', '.join(FORMATS)} image: empty, cut off before its header, or another kind of file"
                   if isinstance(exc, UnidentifiedImageError) else first_line(exc))
            hint = (" Files named '._*' are macOS metadata, not images: delete them "
                    "(find DIR -name '._*' -delete)." if os.path.basename(file).startswith("._") else "")
            raise GenauditError(
                f"{shown(file)} cannot be read as an image ({why}). genaudit stops at a damaged image rather than "
                f"skip it, which would change the audited samples: repair or delete the file, or move it out of "
                f"{shown(self.path)}.{hint}"
            ) from None
