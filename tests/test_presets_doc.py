"""docs/presets.md is what the configs and docs/preset_sources.yaml say, and every departure is explained."""

from __future__ import annotations

from runners import presets_doc


def test_presets_page_is_generated_from_the_configs():
    """Editing a preset (or the page) by hand without regenerating it fails here."""
    sources = presets_doc.load_sources()
    assert presets_doc.OUT.read_text() == presets_doc.render(sources), \
        "docs/presets.md is stale: run python -m runners.presets_doc"


def test_every_preset_has_a_source_entry_and_every_departure_a_note():
    sources = presets_doc.load_sources()
    presets = {p.stem for p in (presets_doc.CONF_DIR / "experiment").glob("*.yaml")}
    assert presets <= set(sources), f"no source entry for: {sorted(presets - set(sources))}"
    for preset in presets:
        for row in presets_doc.rows_of(preset, sources[preset]):
            assert row["where"], f"{preset}: {row['setting']} names no source file"
            if not row["same"]:
                assert row.get("note"), f"{preset}: {row['setting']} differs from its source without a note"


def test_a_changed_setting_shows_as_a_departure():
    sources = presets_doc.load_sources()
    entry = {"settings": [{"setting": "lr", "key": "train.lr", "source": 2.0, "where": "x"}]}
    (row,) = presets_doc.rows_of("zaremba_small", entry)
    assert row["ours"] == 1.0 and not row["same"]
    assert sources["zaremba_small"]["settings"]  # the real entry exists and is not empty
