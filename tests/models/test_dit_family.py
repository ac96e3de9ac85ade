"""DiT family: label mapping, the null/source label, built-in dropout off, DiffFit, export."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DiTPipeline

from contract.train_config import ConfigError
from models.families import load_family
from models.families.dit import DiTFamily
from models.peft import apply_difffit, merge_difffit
from models.tiny import build_tiny_dit_pipeline


def _tables(family):
    return [m.embedding_table.weight for m in family.denoiser.modules() if type(m).__name__ == "LabelEmbedding"]


def test_small_target_reuses_the_first_rows(make_config):
    family = load_family(make_config())
    before = [t.clone() for t in _tables(family)]
    family.setup_labels(["a", "b", "c"])
    assert family.null_label == 1000 and family.source_label is None
    for old, new in zip(before, _tables(family), strict=True):
        assert torch.equal(old, new)  # nothing resized, rows 0..2 are the base's rows 0..2
    assert len(before) == 2  # one table per block in diffusers' DiT


def test_large_target_extends_the_table_from_the_null_row(tmp_path, make_config):
    base = build_tiny_dit_pipeline(tmp_path / "b", num_classes=4, resolution=16)
    family = DiTFamily.from_pretrained(str(base))
    old = _tables(family)[0].clone()  # (5, D): 4 classes + null
    family.setup_labels([f"c{i}" for i in range(6)])
    new = _tables(family)[0]
    assert new.shape[0] == 7 and family.null_label == 6
    assert torch.equal(new[:4], old[:4])
    for row in (4, 5, 6):  # new classes and the null row start from the base null embedding
        assert torch.equal(new[row], old[4])
    assert family.denoiser.config.num_embeds_ada_norm == 6


def test_source_token_gets_its_own_row(make_config):
    family = load_family(make_config())
    old_null = _tables(family)[0][1000].clone()
    family.setup_labels(["a", "b"], bank_label="source")
    assert (family.source_label, family.null_label) == (1000, 1001)
    table = _tables(family)[0]
    assert torch.equal(table[1000], old_null) and torch.equal(table[1001], old_null)
    bank = family.bank_conditions(torch.tensor([3, 4, 0]))
    assert bank.tolist() == [1000, 1000, 1000]


def test_bank_rows_use_the_null_label_by_default(make_config):
    family = load_family(make_config())
    family.setup_labels(["a", "b"])
    assert family.bank_conditions(torch.tensor([0, 1, 2, 3])).tolist() == [1000] * 4


def test_builtin_label_dropout_is_off(make_config):
    family = load_family(make_config())
    model = family.denoiser.train()
    x, t, y = torch.randn(64, 4, 8, 8), torch.full((64,), 500), torch.zeros(64, dtype=torch.long)
    with torch.no_grad():
        a, b = family.predict(model, x, t, y), family.predict(model, x, t, y)
    assert torch.equal(a, b)  # diffusers' random per-block 10% drop would make these differ


def test_learned_sigma_models_predict_only_epsilon(tmp_path):
    base = build_tiny_dit_pipeline(tmp_path / "s", resolution=16, learned_sigma=True)
    family = DiTFamily.from_pretrained(str(base))
    out = family.predict(family.denoiser, torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 1]))
    assert out.shape == (2, 4, 8, 8)


def test_difffit_trains_few_parameters_and_merges_exactly(make_config):
    family = load_family(make_config())
    model = family.denoiser
    total = sum(p.numel() for p in model.parameters())
    trainable = apply_difffit(model)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.endswith("attn1.difffit_gamma") for n in names)
    assert any("class_embedder" in n for n in names)
    frozen_linear = ("to_q.weight", "to_out.0.weight", "ff.net.2.weight", "proj_out_2.weight", "proj.weight")
    assert not any(n.endswith(frozen_linear) for n in names)
    tables = sum(t.numel() for t in _tables(family))
    assert sum(p.numel() for p in trainable) - tables < 0.1 * (total - tables)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("difffit_gamma"):
                p.fill_(1.7)
    x, t, y = torch.randn(3, 4, 8, 8), torch.tensor([10, 500, 900]), torch.tensor([0, 1, 2])
    merged = merge_difffit(model)
    assert not any("difffit" in n for n in merged.state_dict())
    with torch.no_grad():
        assert torch.allclose(family.predict(model, x, t, y), family.predict(merged, x, t, y), atol=1e-5)
        changed = family.predict(family.export_denoiser(model), x, t, y)
    assert torch.allclose(changed, family.predict(merged, x, t, y), atol=1e-5)


def test_saved_pipeline_loads_in_diffusers_with_labels(tmp_path, make_config):
    family = load_family(make_config())
    family.setup_labels(["zebra", "yak"])
    family.save_pretrained(family.denoiser, tmp_path / "ckpt")
    pipe = DiTPipeline.from_pretrained(tmp_path / "ckpt")
    assert pipe.labels == {"zebra": 0, "yak": 1}
    images = pipe(class_labels=[0, 1], num_inference_steps=2, guidance_scale=1.0, output_type="np").images
    assert images.shape == (2, 16, 16, 3)
    index = json.loads((tmp_path / "ckpt" / "model_index.json").read_text())
    assert index["id2label"] == {"0": "zebra", "1": "yak"}


def test_bank_is_drawn_from_the_classes_the_base_knows(make_config):
    family = load_family(make_config())
    latents, labels = family.generate_bank_batch(16, make_config(), torch.Generator().manual_seed(0))
    assert latents.shape == (16, 4, 8, 8)
    assert set(labels.tolist()) <= {0, 1, 2, 3, 4}  # id2label of the tiny base names classes 0-4
    family.setup_labels(["a"])
    with pytest.raises(RuntimeError, match="base model"):
        family.generate_bank_batch(1, make_config(), torch.Generator())


def test_unloadable_base_model_names_the_field(tmp_path, make_config):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="base_model: .* not a diffusers DiT folder"):
        load_family(make_config(base_model=str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match="base_model: no base model"):
        load_family(make_config(base_model=""))
