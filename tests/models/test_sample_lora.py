"""``difftune sample`` of a LoRA checkpoint samples the tuned model: the adapter kept beside the pipeline
(``lora/``) is attached to the base weights the folder holds (it used to be ignored)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from models import checkpoints as ckpt

from .conftest import build_trainer

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def _grid(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.mark.parametrize("family", ["dit", "sd"])
def test_a_lora_checkpoint_samples_with_its_adapter(family, make_config, make_sd_config, image_folder,
                                                    caption_folder, tmp_path):
    make = make_config if family == "dit" else make_sd_config
    data = image_folder if family == "dit" else caption_folder
    config = make(peft="lora", lora_rank=4, max_steps=3, checkpoint_every=3, sample_every=100, learning_rate=0.2)
    build_trainer(config, data, tmp_path / "run", tmp_path / "c").fit()
    checkpoint = ckpt.latest_checkpoint(tmp_path / "run")
    what = ["--labels", "0,1"] if family == "dit" else ["--prompt", "a red cat"]
    for name, folder in (("tuned", checkpoint), ("base", config.base_model)):
        result = runner.invoke(app, ["sample", str(folder), *what, "--steps", "2", "--device", "cpu",
                                     "--out", str(tmp_path / f"{name}.png")])
        assert result.exit_code == 0, result.output
    assert not np.array_equal(_grid(tmp_path / "tuned.png"), _grid(tmp_path / "base.png"))
