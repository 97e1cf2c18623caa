"""Every picture the notebook shows exists, and every picture in images/ is shown."""

import re
import subprocess
import sys

import matplotlib
import nbformat
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


def test_regenerating_reproduces_the_images(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "generators.make_images", str(tmp_path)],
        cwd=REPO_DIR,
        check=True,
        capture_output=True,
    )
    committed = sorted(p.name for p in IMAGES.glob("*.png"))
    assert sorted(p.name for p in tmp_path.glob("*.png")) == committed
    for name in committed:
        with Image.open(IMAGES / name) as ours, Image.open(tmp_path / name) as fresh:
            assert ours.size == fresh.size, name
        if (
            matplotlib.__version__ == "3.11.2"
        ):  # the version that drew the committed files: byte-for-byte
            assert (IMAGES / name).read_bytes() == (tmp_path / name).read_bytes(), name
