"""One test per kind of bad input: each is found, and the message names the file (and the CSV
row and line). The bad inputs are made in a copy of a small synthetic set."""
from __future__ import annotations

import shutil
import traceback
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from skinlib.data import (
    GROUND_TRUTH_CSV, IMAGES_DIR, METADATA_CSV, DataError, DataWarning, ImageError, ISICDataset,
    check_dataset, load_index, open_image, read_ground_truth, read_metadata,
)


@pytest.fixture
def data(synthetic_dir, tmp_path) -> Path:
    """A fresh copy of the synthetic set to break."""
    return Path(shutil.copytree(synthetic_dir, tmp_path / "data"))


def image_path(data: Path, row: int = 0) -> Path:
    """The JPEG of the ground truth's data row `row` (0-based)."""
    name = (data / GROUND_TRUTH_CSV).read_text().splitlines()[row + 1].split(",")[0]
    return data / IMAGES_DIR / f"{name}.jpg"


def edit_line(path: Path, line: int, edit) -> None:
    """Replace line `line` (1-based, the header is line 1) of a CSV with edit(old_line)."""
    lines = path.read_text().splitlines()
    lines[line - 1] = edit(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")


def set_classes(values: list[str]):
    """An edit that writes new class values (MEL..SCC, UNK) into a ground-truth line."""
    return lambda old: ",".join([old.split(",")[0], *values])


def only_problem(data: Path) -> str:
    report = check_dataset(data, progress=False)
    assert not report.ok
    assert len(report.problems) == 1, report.problems
    return report.problems[0]


# --------------------------------------------------------------------------- broken images
def test_zero_byte_jpeg_is_reported_by_name(data):
    bad = image_path(data, 3)
    bad.write_bytes(b"")
    problem = only_problem(data)
    assert bad.name in problem and "0 bytes" in problem
    with pytest.raises(ImageError, match=bad.name):
        open_image(bad)


def test_truncated_jpeg_is_reported_by_name(data):
    bad = image_path(data, 4)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    problem = only_problem(data)
    assert bad.name in problem and "truncated" in problem
    with pytest.raises(ImageError, match=bad.name):
        open_image(bad)


def test_png_named_jpg_is_reported_by_name(data):
    bad = image_path(data, 5)
    Image.open(bad).save(bad, format="PNG")
    problem = only_problem(data)
    assert bad.name in problem and "PNG" in problem
    with pytest.raises(ImageError, match=bad.name):
        open_image(bad)


def test_text_file_named_jpg_is_reported_by_name(data):
    bad = image_path(data, 6)
    bad.write_text("404 Not Found\n")
    problem = only_problem(data)
    assert bad.name in problem and "not an image" in problem and "404 Not Found" in problem
    with pytest.raises(ImageError, match=bad.name):
        open_image(bad)


def test_decompression_bomb_is_reported_by_name(data, monkeypatch):
    bad = image_path(data, 7)
    # Pillow raises above twice the limit and only warns between the limit and twice it;
    # both are errors here. The synthetic images have 300 x 225 = 67,500 pixels.
    for limit in (1_000, 50_000):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(ImageError, match=f"{bad.name}.*decompression-bomb"):
            open_image(bad)
    report = check_dataset(data, progress=False)
    assert len(report.problems) == 160 and "decompression-bomb" in report.problems[0]


def test_unreadable_image_in_a_dataloader_worker_raises_image_error_naming_it(data):
    bad = image_path(data, 0)
    bad.write_bytes(b"")
    batches = iter(DataLoader(ISICDataset(load_index(data).head(4)), batch_size=4, num_workers=1))
    try:
        next(batches)
    except ImageError as error:
        message = str(error)
        # The traceback's frames hold the iterator; cleared, it is freed (and its worker
        # stopped) at once instead of at a later garbage collection, which waits 5 s.
        traceback.clear_frames(error.__traceback__)
    else:
        pytest.fail("no ImageError from the worker")
    del batches
    assert bad.name in message and "empty file" in message


@pytest.mark.parametrize("mode", ["CMYK", "L"])
def test_cmyk_and_grayscale_jpegs_are_converted_to_rgb(data, mode):
    path = image_path(data, 8)
    original = Image.open(path)
    original.convert(mode).save(path, quality=95)
    assert Image.open(path).mode == mode
    image = open_image(path)
    assert image.mode == "RGB" and image.size == original.size
    assert check_dataset(data, progress=False).ok


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA"])
def test_palette_and_transparent_images_are_converted_to_rgb(data, tmp_path, mode):
    # JPEG cannot hold these modes: they come as PNG files, which open_image also reads.
    path = tmp_path / f"image-{mode}.png"
    original = Image.open(image_path(data, 9))
    original.convert(mode).save(path)
    image = open_image(path)
    assert image.mode == "RGB" and image.size == original.size
    # The colours survive the round trip (a palette has 256 colours, grey has none).
    difference = np.abs(np.asarray(image, float) - np.asarray(original.convert(mode).convert("RGB"), float))
    assert difference.mean() < 1


# --------------------------------------------------------------------------- broken CSVs
def test_ground_truth_row_with_no_class_is_named_by_row_and_line(data):
    edit_line(data / GROUND_TRUTH_CSV, 6, set_classes(["0.0"] * 9))
    with pytest.raises(DataError, match=rf"{GROUND_TRUTH_CSV}: no class .* row 5 \(line 6, ISIC_9"):
        load_index(data)
    assert GROUND_TRUTH_CSV in only_problem(data)


def test_ground_truth_row_with_two_classes_is_named_by_row_and_line(data):
    edit_line(data / GROUND_TRUTH_CSV, 10, set_classes(["1.0", "1.0"] + ["0.0"] * 7))
    with pytest.raises(DataError, match=rf"{GROUND_TRUTH_CSV}: more than one class .* row 9 \(line 10"):
        read_ground_truth(data / GROUND_TRUTH_CSV)


def test_ground_truth_row_with_unk_is_rejected(data):
    edit_line(data / GROUND_TRUTH_CSV, 3, set_classes(["0.0"] * 8 + ["1.0"]))
    with pytest.raises(DataError, match=rf"{GROUND_TRUTH_CSV}: UNK=1 in row 2 \(line 3"):
        read_ground_truth(data / GROUND_TRUTH_CSV)


def test_ground_truth_value_other_than_0_or_1_is_named(data):
    edit_line(data / GROUND_TRUTH_CSV, 4, set_classes(["0.5", "0.5"] + ["0.0"] * 7))
    with pytest.raises(DataError, match=r"0 or 1.* row 3 \(line 4.*MEL='0.5'"):
        read_ground_truth(data / GROUND_TRUTH_CSV)


def test_missing_column_is_named(data):
    path = data / GROUND_TRUTH_CSV
    edit_line(path, 1, lambda header: header.replace("VASC", "VASCULAR"))
    with pytest.raises(DataError, match=rf"{GROUND_TRUTH_CSV}: missing column\(s\) VASC"):
        load_index(data)
    edit_line(data / METADATA_CSV, 1, lambda header: header.replace("lesion_id", "lesion"))
    with pytest.raises(DataError, match=rf"{METADATA_CSV}: missing column\(s\) lesion_id"):
        read_metadata(data / METADATA_CSV)


def test_duplicate_image_id_is_named_with_both_rows(data):
    path = data / GROUND_TRUTH_CSV
    first = path.read_text().splitlines()[1].split(",")[0]
    edit_line(path, 8, lambda old: ",".join([first, *old.split(",")[1:]]))
    with pytest.raises(DataError, match=rf"duplicate image id.*{first}.*row 1 \(line 2.*row 7 \(line 8"):
        load_index(data)


def test_csv_row_whose_image_is_missing_is_counted_and_named(data):
    gone = [image_path(data, 2), image_path(data, 11)]
    for path in gone:
        path.unlink()
    with pytest.raises(DataError, match=r"2 image\(s\) listed .* missing") as error:
        load_index(data)
    assert all(path.name in str(error.value) for path in gone)
    assert "2 image(s)" in only_problem(data)


def test_image_without_csv_row_is_counted_warned_and_ignored(data):
    stray = data / IMAGES_DIR / "ISIC_9999999.jpg"
    shutil.copy(image_path(data, 0), stray)
    (data / IMAGES_DIR / "LICENSE.txt").write_text("not an image, not counted")
    with pytest.warns(DataWarning, match=r"1 \.jpg file\(s\) have no row .*ISIC_9999999\.jpg"):
        index = load_index(data)
    assert len(index) == 160 and "ISIC_9999999" not in set(index["image"])
    report = check_dataset(data, progress=False)
    assert report.ok and any("ISIC_9999999.jpg" in w for w in report.warnings)


def test_metadata_missing_warns_and_every_image_is_its_own_group(data):
    (data / METADATA_CSV).unlink()
    with pytest.warns(DataWarning, match=f"{METADATA_CSV} not found"):
        index = load_index(data)
    assert (index["group"] == index["image"]).all()


def test_csv_with_windows_line_endings_reads_fine(data):
    expected = load_index(data)
    for name in (GROUND_TRUTH_CSV, METADATA_CSV):
        path = data / name
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert b"\r\n" in (data / GROUND_TRUTH_CSV).read_bytes()
    assert load_index(data).equals(expected)


def test_csv_with_utf8_byte_order_mark_reads_fine(data):
    expected = load_index(data)
    for name in (GROUND_TRUTH_CSV, METADATA_CSV):
        path = data / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_index(data).equals(expected)


# --------------------------------------------------------------------------- wrong folders
def test_empty_folder_says_what_is_expected(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path}: folder is empty. Expected an ISIC 2019 folder"):
        load_index(tmp_path)
    assert "folder is empty" in only_problem(tmp_path)


def test_missing_folder_says_what_is_expected(tmp_path):
    with pytest.raises(DataError, match=rf"(?s)nowhere: folder does not exist.*{GROUND_TRUTH_CSV}"):
        load_index(tmp_path / "nowhere")


def test_wrong_folder_says_what_is_expected_and_where_to_look(data, tmp_path):
    with pytest.raises(DataError, match=rf"no {GROUND_TRUTH_CSV}.*images folder: pass its parent"):
        load_index(data / IMAGES_DIR)
    with pytest.raises(DataError, match=rf"no {GROUND_TRUTH_CSV}.*Did you mean .*data\?"):
        load_index(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=rf"{tmp_path / 'notes.txt'}: is a file, not a folder"):
        load_index(tmp_path / "notes.txt")


def test_folder_without_images_folder_says_so(data):
    shutil.rmtree(data / IMAGES_DIR)
    with pytest.raises(DataError, match=rf"no {IMAGES_DIR}/ folder"):
        load_index(data)
    assert len(load_index(data, check_files=False)) == 160  # the CSVs alone still read


def test_a_multi_picture_jpeg_is_read_as_a_jpeg(data):
    path = image_path(data, 10)
    original = Image.open(path).convert("RGB")
    original.save(path, format="MPO", save_all=True, append_images=[original])  # as some cameras write
    assert Image.open(path).format == "MPO"
    assert open_image(path).size == original.size
    assert check_dataset(data, progress=False).ok
