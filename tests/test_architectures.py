"""The one table of architectures (models.config.ARCHITECTURES): every reader agrees with every row.

Parametrized over the table, so a new row is tested by adding it: its config class and module, the layout
data loading gives it, the CLI choice and default widths, and a tiny training run that writes a checkpoint
which loads back.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_helpers import manifest_json, train

from models import architectures
from models.architectures import build_model
from models.checkpoint import load_checkpoint
from models.config import ARCHITECTURES, Architecture, Common, config_from_dict, config_to_dict
from training.cli import build_parser
from training.data import load_dataset
from training.errors import InputError
from training.options import resolve_options

ROWS = list(ARCHITECTURES.values())
IDS = list(ARCHITECTURES)


def test_cli_offers_exactly_the_table_with_each_rows_default_widths() -> None:
    parser = build_parser()
    (arch_action,) = [action for action in parser._actions if action.dest == "arch"]
    assert list(arch_action.choices or ()) == IDS
    help_text = " ".join(parser.format_help().split())  # argparse wraps lines
    for row in ROWS:
        assert f"{row.name}: {row.widths_meaning} (default {','.join(map(str, row.default_widths))})" in help_text


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_config_class_and_module_of_the_row(row: Architecture) -> None:
    data = load_dataset("synthetic", row.name)  # 480 rows of 16 features, images 1x4x4
    assert data.input_shape == row.input_shape(16, (1, 4, 4))
    config = row.config_type.for_input(data.input_shape, 3, (4, 6), Common(norm="batch", dropout=0.1))
    assert config.arch == row.name
    assert config.input_shape == data.input_shape
    assert config.widths == (4, 6)
    assert config_from_dict(config_to_dict(config)) == config
    model = build_model(config)
    assert type(model) is getattr(architectures, row.module)
    model.eval()
    assert tuple(model(data.features[:5]).shape) == (5, 3)  # (N, *input_shape) -> (N, num_classes)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_layout_decides_which_data_the_row_takes(row: Architecture, tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,label\n1,2,x\n3,4,y\n")
    if row.layout == "flat":
        assert load_dataset(str(csv), row.name).input_shape == (2,)
        return
    assert row.input_shape(2, None) is None
    with pytest.raises(InputError, match=f"--arch {row.name} takes image rows"):
        load_dataset(str(csv), row.name)
    raw = vars(build_parser().parse_args(["--data", str(csv), "--arch", row.name]))
    with pytest.raises(InputError, match=f"--arch {row.name} needs image-shaped data"):
        resolve_options(raw)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_training_writes_a_loadable_checkpoint_for_the_row(row: Architecture, tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    assert train(repository, "--arch", row.name, "--name", row.name, "--epochs", "1") == 0
    manifest = manifest_json(repository / row.name / "1")
    assert manifest["architecture"]["arch"] == row.name
    assert manifest["training"]["hidden"] == [16]
    assert manifest["training"]["standardization"] == row.standardization
    model, loaded = load_checkpoint(repository / row.name / "1")
    assert type(model) is getattr(architectures, row.module)
    assert loaded.input.shape == row.input_shape(16, (1, 4, 4))
    model.eval()
    assert model(torch.zeros(2, *loaded.input.shape)).shape == (2, 3)


def test_defaults_come_from_the_table() -> None:
    for row in ROWS:
        options = resolve_options(vars(build_parser().parse_args(["--arch", row.name])))
        assert options.hidden == row.default_widths


def test_unknown_architecture_in_a_manifest_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown architecture 'transformer'; expected one of \['cnn', 'mlp'\]"):
        config_from_dict({"arch": "transformer"})
