"""docs/configuration.md is generated from the config dataclasses and cannot drift."""

from dataclasses import fields
from pathlib import Path

from l2o.config_reference import field_comments, missing_descriptions, reference
from l2o.meta.train import MetaTrainConfig
from l2o.optimizers import LSTMConfig
from l2o.tasks import TASK_FAMILIES

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_the_committed_reference_is_what_the_code_generates():
    assert PAGE.read_text() == reference(), (
        "docs/configuration.md is stale: run `python -m l2o.config_reference > "
        "docs/configuration.md`"
    )


def test_every_option_of_every_section_is_listed_and_described():
    page = reference()
    for cls in [LSTMConfig, MetaTrainConfig, *TASK_FAMILIES.values()]:
        for field in fields(cls):
            if field.name != "name":
                assert f"| `{field.name}` |" in page, (cls.__name__, field.name)
    assert missing_descriptions() == []


def test_comments_above_and_beside_a_field_are_its_description():
    from dataclasses import dataclass

    @dataclass
    class Example:
        # explained above,
        # on two lines
        a: int = 1  # and beside
        b: str = "x#y"  # a hash inside a string is not a comment
        c: float = 0.5

    assert field_comments(Example) == {
        "a": "explained above, on two lines and beside",
        "b": "a hash inside a string is not a comment",
        "c": "",
    }
