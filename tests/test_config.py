"""Recipe parsing across Transformers releases: a renamed training key reaches whichever name is installed."""

from dataclasses import dataclass, field

import pytest

from xtask_safety.config import parse_recipe
from xtask_safety.errors import ConfigError


@dataclass
class OldTrainingArguments:
    """The shape of TrainingArguments before 5.23: only the old names of activation checkpointing."""

    gradient_checkpointing: bool = False
    gradient_checkpointing_kwargs: dict | None = field(default=None)
    learning_rate: float = 1e-4


@dataclass
class NewTrainingArguments(OldTrainingArguments):
    activation_checkpointing: bool = False


def _recipe(tmp_path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_new_key_in_a_recipe_sets_the_old_field(tmp_path):
    recipe = _recipe(tmp_path, "activation_checkpointing: true\nlearning_rate: 3.0e-4\n")
    (args,) = parse_recipe((OldTrainingArguments,), ["--config", recipe], prog="t")
    assert args.gradient_checkpointing is True and args.learning_rate == 3e-4


@pytest.mark.parametrize("flags", [["--activation_checkpointing", "false"], ["--activation-checkpointing=false"]])
def test_new_flag_overrides_the_recipe_through_the_old_field(tmp_path, flags):
    recipe = _recipe(tmp_path, "activation_checkpointing: true\n")
    (args,) = parse_recipe((OldTrainingArguments,), ["--config", recipe, *flags], prog="t")
    assert args.gradient_checkpointing is False


def test_new_key_is_kept_where_it_exists(tmp_path):
    recipe = _recipe(tmp_path, "activation_checkpointing: true\n")
    (args,) = parse_recipe((NewTrainingArguments,), ["--config", recipe], prog="t")
    assert args.activation_checkpointing is True and args.gradient_checkpointing is False


def test_renamed_key_is_still_type_checked(tmp_path):
    recipe = _recipe(tmp_path, "activation_checkpointing: [1, 2]\n")
    with pytest.raises(ConfigError, match="expected true or false"):
        parse_recipe((OldTrainingArguments,), ["--config", recipe], prog="t")


def test_unknown_key_still_fails(tmp_path):
    recipe = _recipe(tmp_path, "activation_checkpointing: true\nactivation_checkpoint: true\n")
    with pytest.raises(ConfigError, match=r"unknown recipe key\(s\) \['activation_checkpoint'\]"):
        parse_recipe((OldTrainingArguments,), ["--config", recipe], prog="t")
