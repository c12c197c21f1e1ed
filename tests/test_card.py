"""The model card: the possible leaks validate found, listed when the model still uses them."""

from __future__ import annotations

from mlcycle.card import card_data, card_markdown
from mlcycle.schema.leaks import leak_warnings
from mlcycle.stages.package import used_leaks
from tests.conftest import TINY_SIGNATURE
from tests.test_validate import leaky_frame


def test_the_card_lists_the_possible_leaks_the_model_still_uses() -> None:
    """validate's leaks, as metrics/validation.json holds them, reach the card for the columns
    the model uses; a column since excluded (not in the signature) is not listed."""
    frame = leaky_frame().rename(columns={"status": "colour"})  # a feature of TINY_SIGNATURE
    (leak,) = leak_warnings(frame, "label", classification=True)
    validation = {
        "leaks": [
            {"column": c, "class": "yes", "score": leak.score, "message": f"{c}: {leak.why}"}
            for c in ("colour", "dropped_since")
        ]
    }
    used = used_leaks(validation, TINY_SIGNATURE)
    assert [k["column"] for k in used] == ["colour"]
    page = card_markdown(card_data({"name": "m", "possible_leaks": used}))
    assert "## Possible leaks" in page
    assert "- colour: alone it nearly determines class 'yes': out-of-fold ROC AUC 0.9" in page
    assert "dropped_since" not in page
    assert "## Possible leaks" not in card_markdown(card_data({"name": "m"}))
