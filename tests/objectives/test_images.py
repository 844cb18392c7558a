"""Image folders (one subfolder per class) decoded with Pillow: real PNG/JPEG files on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thaw.objectives import DataSource, DataSourceError, load_data, load_image_folder

CLASSES = ("cat", "dog", "fox")
# (width, height) of the generated images: every file has its own size and none is the target's
SIZES = [(20, 14), (33, 33), (17, 40), (64, 48), (25, 25), (12, 30), (41, 19), (28, 36)]
COLORS = {"cat": (220, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 230)}


def write_image(path: Path, size: tuple[int, int], color: tuple[int, int, int], seed: int) -> None:
    """A noisy image of one dominant colour; the format follows the suffix."""
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = np.clip(
        np.array(color, dtype=np.int16) + rng.integers(-20, 21, size=(h, w, 3)), 0, 255
    ).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path)


def make_folder(
    root: Path,
    per_class: int = 8,
    classes: tuple[str, ...] = CLASSES,
    corrupt: bool = True,
    seed: int = 0,
) -> Path:
    """``root/<class>/img_<i>.png|.jpg``, alternating formats and sizes.

    With ``corrupt``: ``cat/broken.jpg`` and ``dog/broken.png`` (garbage bytes, skipped as
    unreadable), plus ``dog/notes.txt``, ``dog/Thumbs.db`` and a hidden ``dog/.DS_Store``: not
    images, so ignored and listed, never counted as unreadable.
    """
    for c, name in enumerate(classes):
        for i in range(per_class):
            suffix = ".png" if i % 2 == 0 else ".jpg"
            write_image(
                root / name / f"img_{i}{suffix}",
                SIZES[i % len(SIZES)],
                COLORS.get(name, (128, 128, 128)),
                seed=seed * 1000 + c * 100 + i,
            )
    if corrupt:
        (root / classes[0] / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg \x00\x17" * 8)
        (root / classes[1] / "broken.png").write_bytes(b"\x89PNG but truncated")
        (root / classes[1] / "notes.txt").write_text("labelled by Bob, 2024\n")
        (root / classes[1] / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 thumbnails")
        (root / classes[1] / ".DS_Store").write_bytes(b"\x00\x01hidden")
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "train")


# --------------------------------------------------------------------------------- loading


def test_loads_resized_uint8_and_lists_unreadable_files(folder: Path) -> None:
    # 24 images + 2 unreadable files: 2/26 = 7.7 %, so raise the 5 % default
    data = load_image_folder(folder, (24, 32), val_fraction=0.25, max_skipped_fraction=0.1)
    assert data.class_names == CLASSES
    assert data.x_train.dtype == np.uint8 and data.x_val.dtype == np.uint8
    assert data.x_train.shape == (18, 24, 32, 3)  # (height, width) as asked, from every size
    assert data.x_val.shape == (6, 24, 32, 3)
    assert data.image_shape == (24, 32, 3)
    assert data.y_train.dtype == np.int32
    assert data.counts(data.y_train) == [6, 6, 6]
    assert data.counts(data.y_val) == [2, 2, 2]
    assert data.source == str(folder)

    assert len(data.skipped_files) == 2
    skipped = sorted(data.skipped_files)
    assert skipped[0].startswith("cat/broken.jpg (")
    assert skipped[1].startswith("dog/broken.png (")
    assert data.ignored_files == ("dog/.DS_Store", "dog/Thumbs.db", "dog/notes.txt")
    assert data.summary()["ignored_files"] == list(data.ignored_files)
    summary = data.summary()
    assert summary["skipped_files"] == list(data.skipped_files)
    assert summary["class_names"] == list(CLASSES)

    # labels follow the folders: each class's dominant colour channel survives the resize
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val)):
        dominant = x.reshape(len(x), -1, 3).mean(axis=1).argmax(axis=1)
        np.testing.assert_array_equal(dominant, y)


def test_grayscale_and_rgba_images_become_rgb(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", per_class=4, classes=("a", "b"), corrupt=False)
    Image.new("L", (10, 12), 77).save(root / "a" / "gray.png")
    Image.new("RGBA", (9, 9), (10, 20, 30, 0)).save(root / "b" / "alpha.png")
    Image.new("P", (15, 6)).save(root / "b" / "palette.gif")
    data = load_image_folder(root, (8, 8), val_fraction=0.4)
    assert data.skipped_files == ()
    assert len(data.y_train) + len(data.y_val) == 11
    assert data.x_train.shape[1:] == (8, 8, 3)


def test_one_channel_models_get_grayscale_images(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", per_class=4, classes=("a", "b"), corrupt=False)
    data = load_image_folder(root, (16, 16), val_fraction=0.5, channels=1)
    assert data.x_train.shape == (4, 16, 16, 1)
    assert data.x_val.dtype == np.uint8


def test_load_data_resizes_to_the_model_input(folder: Path) -> None:
    data = load_data(
        DataSource("directory", path=str(folder), max_skipped_fraction=0.1, val_fraction=0.25),
        image_shape=(40, 36, 3),
    )
    assert data.image_shape == (40, 36, 3)


@pytest.mark.parametrize("image_shape", [None, (None, None, 3)])
def test_load_data_needs_a_fixed_model_input(
    folder: Path, image_shape: tuple[int | None, ...] | None
) -> None:
    with pytest.raises(DataSourceError, match=r"has no fixed height and width; set 'model\."):
        load_data(DataSource("directory", path=str(folder)), image_shape=image_shape)


# ------------------------------------------------------------------------ unreadable files


def test_too_many_unreadable_files_names_the_threshold(folder: Path) -> None:
    with pytest.raises(DataSourceError) as info:
        load_image_folder(folder, (16, 16))  # default max_skipped_fraction 0.05 < 2/26
    message = str(info.value)
    assert "2 of 26 files could not be read as images (more than 5%)" in message
    assert "cat/broken.jpg" in message
    assert "'data.max_skipped_fraction'" in message


def test_threshold_counts_the_validation_folder_too(tmp_path: Path) -> None:
    train = make_folder(tmp_path / "train", per_class=10, corrupt=False)
    val = make_folder(tmp_path / "val", per_class=2, corrupt=False, seed=1)
    for name in CLASSES:
        (val / name / "bad.png").write_bytes(b"garbage")
    with pytest.raises(DataSourceError, match=r"3 of 39 files could not be read .*more than 5%"):
        load_image_folder(train, (8, 8), val_path=val)
    data = load_image_folder(train, (8, 8), val_path=val, max_skipped_fraction=0.1)
    assert sorted(data.skipped_files) == [
        f"validation/{name}/bad.png (UnidentifiedImageError)" for name in CLASSES
    ]


def test_a_class_with_only_unreadable_files(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", per_class=3, classes=("a", "b"), corrupt=False)
    (root / "c").mkdir()
    (root / "c" / "x.jpg").write_bytes(b"nope")
    with pytest.raises(DataSourceError, match=r"class 'c' has no readable image in"):
        load_image_folder(root, (8, 8), max_skipped_fraction=1.0)


# --------------------------------------------------------------------------------- splits


def test_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", per_class=10, corrupt=False)
    a = load_image_folder(root, (8, 8), val_fraction=0.3, seed=7)
    b = load_image_folder(root, (8, 8), val_fraction=0.3, seed=7)
    c = load_image_folder(root, (8, 8), val_fraction=0.3, seed=8)
    for key in ("x_train", "y_train", "x_val", "y_val"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert a.counts(a.y_train) == [7, 7, 7] and a.counts(a.y_val) == [3, 3, 3]
    assert c.counts(c.y_val) == [3, 3, 3]
    assert not np.array_equal(a.x_val, c.x_val)  # another seed, another split
    # train and validation never share an image
    train_rows = {x.tobytes() for x in a.x_train}
    assert not any(x.tobytes() in train_rows for x in a.x_val)
    # the split is part of the fingerprint
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_separate_validation_folder(tmp_path: Path) -> None:
    train = make_folder(tmp_path / "train", per_class=5, corrupt=False)
    val = make_folder(tmp_path / "val", per_class=2, corrupt=False, seed=1)
    data = load_image_folder(train, (12, 12), val_path=val)
    assert data.counts(data.y_train) == [5, 5, 5]  # every training image is used for training
    assert data.counts(data.y_val) == [2, 2, 2]
    assert data.x_val.shape == (6, 12, 12, 3)


def test_validation_folder_with_other_classes(tmp_path: Path) -> None:
    train = make_folder(tmp_path / "train", per_class=2, corrupt=False)
    val = make_folder(tmp_path / "val", per_class=2, classes=("cat", "dog", "wolf"), corrupt=False)
    with pytest.raises(DataSourceError) as info:
        load_image_folder(train, (8, 8), val_path=val)
    message = str(info.value)
    assert f"validation folder {val} has classes ['cat', 'dog', 'wolf']" in message
    assert "training folder has ['cat', 'dog', 'fox']; they must match" in message


def test_validation_folder_class_without_readable_images(tmp_path: Path) -> None:
    train = make_folder(tmp_path / "train", per_class=2, classes=("a", "b"), corrupt=False)
    val = make_folder(tmp_path / "val", per_class=2, classes=("a", "b"), corrupt=False)
    for f in (val / "b").iterdir():
        f.write_bytes(b"truncated")
    with pytest.raises(DataSourceError, match=r"class 'b' has no readable image in .*val"):
        load_image_folder(train, (8, 8), val_path=val, max_skipped_fraction=1.0)


@pytest.mark.parametrize(
    ("fraction", "missing"), [(0.2, "validation"), (0.9, "training")], ids=["tiny", "huge"]
)
def test_val_fraction_that_empties_a_class(tmp_path: Path, fraction: float, missing: str) -> None:
    root = make_folder(tmp_path / "d", per_class=6, classes=("a", "b"), corrupt=False)
    for f in sorted((root / "b").iterdir())[2:]:
        f.unlink()  # class b keeps 2 images
    with pytest.raises(DataSourceError) as info:
        load_image_folder(root, (8, 8), val_fraction=fraction)
    message = str(info.value)
    assert f"class 'b' has 2 usable images; a validation fraction of {fraction}" in message
    assert f"leaves it without {missing} images" in message
    assert "'data.val_path'" in message


# ---------------------------------------------------------------------- folder structure


def test_fewer_than_two_classes(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", per_class=3, classes=("only",), corrupt=False)
    with pytest.raises(DataSourceError, match=r"has one class subfolder \('only'\); a classifier"):
        load_image_folder(root, (8, 8))


def test_empty_class_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", per_class=3, classes=("a", "b"), corrupt=False)
    (root / "c").mkdir()
    (root / "c" / ".hidden").write_text("x")  # hidden files do not count
    with pytest.raises(
        DataSourceError,
        match=r"class folder .*/c has no images \(it holds only non-image files: .hidden, "
        r"...\); add images",
    ):
        load_image_folder(root, (8, 8))


def test_folder_without_class_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    for i in range(4):
        write_image(root / f"img_{i}.png", (10, 10), (1, 2, 3), seed=i)
    (root / ".git").mkdir()  # hidden folders are not classes
    with pytest.raises(DataSourceError) as info:
        load_image_folder(root, (8, 8))
    assert f"{root} has no class subfolders; put each class's images in its own" in str(info.value)


def test_missing_folder_and_a_file_instead_of_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"image folder .*nowhere does not exist"):
        load_image_folder(tmp_path / "nowhere", (8, 8))
    file = tmp_path / "x.png"
    write_image(file, (4, 4), (0, 0, 0), seed=0)
    with pytest.raises(DataSourceError, match=r"x\.png is not a folder"):
        load_image_folder(file, (8, 8))


# ---------------------------------------------------------------------------- fingerprint


def test_fingerprint_follows_the_bytes_of_the_files(folder: Path) -> None:
    def fingerprint() -> str:
        return load_image_folder(
            folder, (16, 16), val_fraction=0.25, max_skipped_fraction=0.1
        ).fingerprint()

    first = fingerprint()
    assert len(first) == 64
    assert fingerprint() == first  # nothing changed

    target = folder / "dog" / "img_2.png"
    target.write_bytes(target.read_bytes())  # rewritten, same bytes, newer mtime
    assert fingerprint() == first

    with Image.open(target) as img:
        pixels = np.asarray(img).copy()
    pixels[0, 0] = 255 - pixels[0, 0]  # one pixel of one file
    Image.fromarray(pixels).save(target)
    changed = fingerprint()
    assert changed != first

    (folder / "dog" / "img_2.png").rename(folder / "dog" / "img_2b.png")  # same bytes, new name
    assert fingerprint() not in (first, changed)


def test_fingerprint_depends_on_the_image_size(folder: Path) -> None:
    a = load_image_folder(folder, (16, 16), val_fraction=0.25, max_skipped_fraction=0.1)
    b = load_image_folder(folder, (16, 17), val_fraction=0.25, max_skipped_fraction=0.1)
    assert a.fingerprint() != b.fingerprint()
