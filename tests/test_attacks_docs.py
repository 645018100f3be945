"""docs/attacks.md is generated from the registry, presets and config docs, and is up to date."""

from pathlib import Path

from tfattack.attacks import components, docs
from tfattack.attacks.presets import PRESETS


def test_attacks_doc_is_up_to_date():
    written = (Path(__file__).parents[1] / "docs" / "attacks.md").read_text()
    assert written == docs.render(), "docs/attacks.md is stale: run python scripts/make_docs.py"


def test_every_component_and_preset_is_documented():
    text = docs.render()
    for role in components.ROLES:
        for name in components.available(role):
            assert f"**`{name}`**" in text, (role, name)
    for name in PRESETS:
        assert f"| `{name}` |" in text
