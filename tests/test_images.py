"""Every picture the notebook shows exists, and every picture in images/ is shown."""

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy
import pytest
from PIL import Image

from plumbing import REPO_DIR

IMAGES = REPO_DIR / "images"


def referenced() -> set[str]:
    notebook = nbformat.read(REPO_DIR / "llama3-from-scratch.ipynb", as_version=4)
    found = set()
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            found |= set(re.findall(r"!\[[^\]]*\]\((images/[^)\s]+)\)", cell.source))
            found |= set(re.findall(r'<img[^>]+src="(images/[^"]+)"', cell.source))
    return found


def test_every_referenced_image_exists():
    refs = referenced()
    assert refs, "the notebook shows no diagrams"
    missing = sorted(ref for ref in refs if not (REPO_DIR / ref).is_file())
    assert not missing


def test_every_image_is_referenced():
    on_disk = {f"images/{p.name}" for p in IMAGES.iterdir() if p.suffix in (".png", ".svg")}
    assert on_disk - referenced() == set()


def test_images_have_an_opaque_background():
    # Readable on GitHub's dark theme too: no transparent pixels.
    for path in IMAGES.glob("*.png"):
        with Image.open(path) as image:
            assert image.mode in ("RGB", "RGBA")
            if image.mode == "RGBA":
                assert image.getchannel("A").getextrema() == (255, 255), path.name


def test_readme_shows_the_overview():
    assert "images/architecture.png" in (REPO_DIR / "README.md").read_text()


# Another matplotlib version may place text a pixel apart and smooth its edges otherwise, so
# the regenerated pictures are compared by pixel, not by byte: at most this share of pixels
# may differ by more than this many levels (of 255) in some channel.
PIXEL_LEVELS, PIXEL_SHARE = 64, 0.01


def pixels_apart(one: Path, other: Path) -> float:
    """The share of pixels whose colours differ by more than PIXEL_LEVELS in some channel."""
    with Image.open(one) as first, Image.open(other) as second:
        if first.size != second.size:
            return 1.0
        a = numpy.asarray(first.convert("RGB"), dtype=numpy.int16)
        b = numpy.asarray(second.convert("RGB"), dtype=numpy.int16)
    return float((numpy.abs(a - b).max(axis=-1) > PIXEL_LEVELS).mean())


@pytest.mark.slow  # draws every diagram again (seconds): in make test, not make quick
def test_regenerating_reproduces_the_images(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "generators.make_images", str(tmp_path)],
        cwd=REPO_DIR,
        check=True,
        capture_output=True,
    )
    committed = sorted(p.name for p in IMAGES.glob("*.png"))
    assert sorted(p.name for p in tmp_path.glob("*.png")) == committed
    apart = {name: pixels_apart(IMAGES / name, tmp_path / name) for name in committed}
    assert max(apart.values()) <= PIXEL_SHARE, {n: f"{v:.2%}" for n, v in apart.items() if v}


def test_the_pixel_comparison_sees_a_changed_picture(tmp_path):
    # a box in another colour, or a picture one row taller, must fail the comparison above
    original = IMAGES / "bpe-whole-piece.png"
    with Image.open(original) as image:
        changed = image.convert("RGB")
        box = (changed.width // 3, changed.height // 4, changed.width // 2, changed.height // 2)
        changed.paste((255, 0, 0), box)
        changed.save(tmp_path / "changed.png")
        taller = Image.new("RGB", (image.width, image.height + 1), "white")
        taller.save(tmp_path / "taller.png")
    assert pixels_apart(original, original) == 0
    assert pixels_apart(original, tmp_path / "changed.png") > PIXEL_SHARE
    assert pixels_apart(original, tmp_path / "taller.png") == 1.0
