"""The one training augmentation: the same pixels from a JPEG and from the prepared cache."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from skinlib.augment import TrainAugment, train_transform
from skinlib.config import TrainConfig
from skinlib.data import load_index
from skinlib.images import stored_form
from skinlib.loaders import make_loaders
from skinlib.splits import grouped_split


@pytest.fixture(scope="module")
def both_ways(synthetic_dir, synthetic_cache):
    """The training dataset of one split, built from the JPEGs and from a prepared cache."""
    cache = synthetic_cache
    frame = load_index(synthetic_dir)
    split = grouped_split(frame, seed=0)
    built = {}
    for name, cache_dir in (("jpeg", None), ("cache", str(cache))):
        config = TrainConfig(data=str(synthetic_dir), out="unused", cache=cache_dir, num_workers=0)
        built[name] = make_loaders(frame, split, config, device="cpu")["train"].dataset
    return built


def test_jpeg_and_cache_give_identical_training_images_for_the_same_seed(both_ways):
    jpeg, cached = both_ways["jpeg"], both_ways["cache"]
    assert len(jpeg) == len(cached)
    for index, seed in [(0, 1), (3, 2), (17, 123456789), (len(jpeg) - 1, 7)]:
        from_jpeg, label = jpeg[(index, seed)]
        from_cache, cached_label = cached[(index, seed)]
        assert from_jpeg.dtype == torch.uint8 and from_jpeg.shape == (3, 224, 224)
        assert torch.equal(from_jpeg, from_cache) and label == cached_label


def test_another_seed_gives_another_view(both_ways):
    jpeg = both_ways["jpeg"]
    assert not torch.equal(jpeg[(0, 1)][0], jpeg[(0, 2)][0])


def test_a_pil_image_is_augmented_from_its_stored_form(synthetic_dir):
    path = load_index(synthetic_dir)["path"].iloc[0]
    image = Image.open(path).convert("RGB")
    torch.manual_seed(5)
    from_pil = train_transform()(image)
    torch.manual_seed(5)
    from_array = TrainAugment()(stored_form(image))
    assert torch.equal(from_pil, from_array)


def test_stored_form_is_the_centre_square_of_the_short_side_resize():
    columns = (np.arange(400) // 2).astype(np.uint8)  # a 400 x 200 ramp: column c holds c // 2
    wide = Image.fromarray(np.ascontiguousarray(np.broadcast_to(columns[None, :, None], (200, 400, 3))))
    square = stored_form(wide, 100)
    assert square.shape == (100, 100, 3) and square.dtype == np.uint8
    # the centre square is columns 100..299 (values 50..149), halved to 100 columns
    assert abs(int(square[0, 0, 0]) - 50) <= 1 and abs(int(square[0, -1, 0]) - 149) <= 1
