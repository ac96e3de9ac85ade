"""Aspect-ratio buckets: the geometry, the dataset check, one bucket per batch, the bank across buckets,
SDXL's recorded crop, and exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from contract import buckets
from contract.train_config import ConfigError, parse_config
from models.bank import BucketedBank, bank_for, bank_shares
from models.data import DatasetError, fit_crop
from models.data_order import BucketSampler
from models.distributed import DistInfo
from models.families import load_family, scan_dataset
from models.run import run_training

from .conftest import check_exact_resume, tiny_config, write_caption_folder

pytestmark = pytest.mark.usefixtures("one_thread")

# at 16 px with 4 px steps and at most 2:1 the buckets are (H, W) 20×12, 16×16 and 12×20
LANDSCAPE, PORTRAIT, SQUARE = (40, 24), (24, 40), (20, 20)  # (width, height) of the test images
SIZES = [LANDSCAPE, PORTRAIT, SQUARE, LANDSCAPE, LANDSCAPE]
BUCKETED = dict(aspect_buckets=True, bucket_step=4, batch_size=2, max_steps=4)


@pytest.fixture
def mixed_folder(tmp_path):
    return write_caption_folder(tmp_path / "mixed", [f"image {i}" for i in range(len(SIZES))], sizes=SIZES,
                                controls=True)


def test_buckets_hold_about_the_area_in_steps_within_the_aspect_limit():
    sizes = buckets.bucket_sizes(1024, 64, 2.0)
    assert (1024, 1024) in sizes and (832, 1216) in sizes and (1216, 832) in sizes
    for h, w in sizes:
        assert h % 64 == 0 and w % 64 == 0 and h * w <= 1024 * 1024 and max(h, w) <= 2 * min(h, w)
        assert (h + 64) * w > 1024 * 1024 or h * (w + 64) > 1024 * 1024  # the largest at its aspect
    assert buckets.nearest_bucket(1536, 1024, sizes) == (832, 1216)  # 3:2 landscape
    assert buckets.nearest_bucket(1000, 4000, sizes) == (1408, 704)  # 1:4 portrait: the tallest allowed
    assert buckets.bucket_sizes(16, 4, 2.0) == [(20, 12), (16, 16), (12, 20)]
    assert buckets.bucket_sizes(100, 64, 1.0) == [(64, 64)]  # always at least the square
    assert buckets.histogram([(12, 20), (16, 16), (12, 20)]) == {"16x16": 1, "20x12": 2}


def test_fit_crop_covers_the_bucket_and_takes_the_centre():
    pixels = np.random.default_rng(0).integers(0, 256, (16, 30, 3), dtype=np.uint8)  # 30 wide, 16 high
    assert buckets.crop_geometry(30, 16, (16, 24)) == (30, 16, 0, 3)  # no resize: 3 px off each side
    assert np.array_equal(np.asarray(fit_crop(Image.fromarray(pixels), (16, 24))), pixels[:, 3:27])
    assert buckets.crop_geometry(100, 40, (16, 24)) == (40, 16, 0, 8)  # halved to 50×20, scaled to cover
    assert fit_crop(Image.fromarray(pixels), (12, 20)).size == (20, 12)


def test_every_batch_comes_from_one_bucket_and_an_epoch_visits_every_row():
    groups = [torch.tensor([0, 3, 4, 6, 7]), torch.tensor([1]), torch.tensor([2, 5])]
    sampler = BucketSampler(groups, seed=3, info=DistInfo(), per_rank=2)
    seen = []
    for _ in range(len(sampler._epoch_batches(0))):  # one epoch: 3 + 1 + 1 batches
        index = sampler.next(2)
        assert len(index) == 2 and set(index.tolist()) <= set(groups[sampler.bucket].tolist())
        seen += index.tolist()
    assert set(seen) == set(range(8)) and sampler.epoch == 1 and sampler.position == 0
    assert seen.count(1) == 2  # a bucket smaller than a batch repeats its rows
    again = BucketSampler(groups, seed=3, info=DistInfo(), per_rank=2)
    again.load_state_dict({"epoch": 0, "position": 2})
    replay = BucketSampler(groups, seed=3, info=DistInfo(), per_rank=2)
    replay.next(2), replay.next(2)
    assert all(torch.equal(again.next(2), replay.next(2)) for _ in range(7))
    again.skip_to(1)
    assert again.next(2).tolist() == [1, 1]  # the epoch's batch of bucket 1
    halves = [BucketSampler(groups, seed=3, info=DistInfo(rank=r, world_size=2), per_rank=1).next(1) for r in (0, 1)]
    assert torch.cat(halves).tolist() == BucketSampler(groups, seed=3, info=DistInfo(), per_rank=2).next(2).tolist()


def test_bank_shares_follow_the_target_and_give_every_bucket_one():
    assert bank_shares(10, [3, 1, 1]) == [6, 2, 2]
    assert bank_shares(2, [10, 1, 1]) == [1, 1, 1]
    assert sum(bank_shares(101, [7, 5, 3])) == 101


def test_an_image_smaller_than_its_bucket_is_named(make_family_config, tmp_path):
    root = write_caption_folder(tmp_path / "small", ["wide", "ok"], sizes=[(30, 10), (20, 20)])
    config = make_family_config("sdxl", **BUCKETED)
    with pytest.raises(DatasetError, match=r"0\.png: image is 30x10, smaller than its 20x12 aspect-ratio bucket"):
        scan_dataset(config, root)
    folder = scan_dataset(config.model_copy(update={"upscale_small_images": True}), root)
    assert folder.sizes == [(12, 20), (16, 16)]
    # without buckets the same images are checked against the square (and 30x10 is too small)
    with pytest.raises(DatasetError, match="smaller than the training resolution"):
        scan_dataset(make_family_config("sdxl"), root)


def test_buckets_are_for_text_families_and_sizes_the_model_can_train(make_family_config, make_config, mixed_folder,
                                                                       tmp_path):
    with pytest.raises(ConfigError, match="aspect_buckets: dit is class-conditional"):
        parse_config({"family": "dit", "aspect_buckets": True})
    with pytest.raises(ConfigError, match="bucket_step: 32px is larger than the resolution 16px"):
        make_family_config("sdxl", aspect_buckets=True, bucket_step=32)
    config = make_family_config("flux", **{**BUCKETED, "bucket_step": 2})  # Flux packs 2×2 latents: 4 px
    odd = write_caption_folder(tmp_path / "odd", ["a", "b"], sizes=[(36, 28), (20, 20)])  # 36×28 -> 14×18
    with pytest.raises(ValueError, match="bucket_step: 2px makes buckets this base model cannot train .*not 14px"):
        run_training(config, data_dir=odd, out_dir=tmp_path / "o", cache_dir=tmp_path / "c")


def test_sdxl_trains_each_bucket_at_its_size_with_its_crop_and_a_bank_per_bucket(make_family_config, mixed_folder,
                                                                                 tmp_path):
    config = make_family_config("sdxl", bank_label="prompt", **BUCKETED)
    family = load_family(config)
    dataset = scan_dataset(config, mixed_folder)
    assert dataset.sizes == [(12, 20), (20, 12), (16, 16), (12, 20), (12, 20)]
    family.attach_dataset(dataset, config)
    bank = bank_for(family, config, tmp_path / "c", dataset)
    assert isinstance(bank, BucketedBank) and bank.sizes == [(12, 20), (16, 16), (20, 12)]
    assert [len(p) for p in bank.parts] == bank_shares(config.bank.size, [3, 1, 1])
    for (h, w), part in zip(bank.sizes, bank.parts, strict=True):
        assert part.latents.shape[-2:] == (h // 2, w // 2)
        assert part.conditions[:, 1:].tolist() == [[h, w, 0, 0, h, w]] * len(part)  # uncropped at the bucket size
    target = family.prepare_target(dataset, config, bank, cache_dir=tmp_path / "c")
    # 40×24 -> scaled to cover 20×12 (no halving: 40 < 2·20) is 20×12: no crop; 20×20 -> 16×16
    assert target.labels[:3, 1:].tolist() == [[24, 40, 0, 0, 12, 20], [40, 24, 0, 0, 20, 12],
                                              [20, 20, 0, 0, 16, 16]]
    assert [p.mean.shape[-2:] for p in target.parts] == [(6, 10), (8, 8), (10, 6)]
    trainer = check_exact_resume(config, mixed_folder, tmp_path, stop_at=2)
    assert trainer.target_order.bucket in (0, 1, 2)
    latents, _, cond = trainer.next_batch()  # target and bank rows of one bucket, one shape
    assert latents.shape[0] == 2 and cond[0, 5:].tolist() == cond[1, 5:].tolist()


@pytest.mark.parametrize("family", ["sd", "sd3", "flux", "controlnet", "controlnet_sdxl"])
def test_every_text_family_trains_in_buckets(family, tiny_pipeline, mixed_folder, tmp_path):
    config = tiny_config(tiny_pipeline({"controlnet": "sd", "controlnet_sdxl": "sdxl"}.get(family, family)),
                         **{**BUCKETED, "family": family, "max_steps": 2, "checkpoint_every": 2, "sample_every": 2,
                            "max_sequence_length": 16 if family in ("sd3", "flux") else None})
    result = run_training(config, data_dir=mixed_folder, out_dir=tmp_path / "o", cache_dir=tmp_path / "c")
    assert result.fit.step == 2 and (result.fit.last_checkpoint / "meta.json").is_file()
    assert (tmp_path / "o" / "samples").is_dir()  # validation grids still sample the square


def test_the_memory_plan_measures_the_bucket_of_most_pixels(make_family_config, mixed_folder, tmp_path, monkeypatch):
    from models import plan

    measured = []
    real = plan.measure_step
    monkeypatch.setattr(plan, "measure_step", lambda trainer: measured.append(trainer.next_batch()[0].shape)
                        or real(trainer))
    result = plan.plan_memory(make_family_config("sdxl", **BUCKETED), mixed_folder, device="cpu",
                              cache_dir=tmp_path / "c")
    assert measured[0][-2:] == (8, 8)  # 16×16 px (256 px²) beats 20×12 and 12×20 (240 px²)
    assert result.parts["activations"] > 0
