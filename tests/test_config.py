"""Forge1Config: presets, validation messages, dict round trip."""

from __future__ import annotations

import pytest

from aethermind.model.config import PRESETS, VARIANTS, Forge1Config


def test_presets_match_the_guide_tables():
    nano, mini = Forge1Config.nano(), Forge1Config.mini()
    assert (nano.n_layers, nano.dim, nano.n_heads, nano.n_kv_heads, nano.ffn_dim,
            nano.max_seq_len) == (12, 768, 12, 4, 2048, 1024)
    assert (mini.n_layers, mini.dim, mini.n_heads, mini.n_kv_heads, mini.ffn_dim,
            mini.max_seq_len) == (24, 1024, 16, 4, 2816, 2048)
    assert Forge1Config.tiny().n_layers < nano.n_layers


@pytest.mark.parametrize(("overrides", "words"), [
    ({"dim": 100, "n_heads": 12}, ["dim=100", "divisible by n_heads"]),
    ({"n_heads": 12, "n_kv_heads": 5}, ["n_heads=12", "n_kv_heads=5"]),
    ({"dim": 36, "n_heads": 4, "n_kv_heads": 2}, ["head_dim=9", "even"]),
    ({"n_layers": 0}, ["n_layers=0", "positive"]),
    ({"vocab_size": -5}, ["vocab_size=-5", "positive"]),
    ({"ffn_dim": 2.5}, ["ffn_dim=2.5", "integer"]),
    ({"rope_theta": 0}, ["rope_theta=0", "positive"]),
    ({"dropout": 1.5}, ["dropout=1.5"]),
])
def test_invalid_shapes_name_the_field_and_rule(overrides, words):
    with pytest.raises(ValueError) as err:
        Forge1Config.nano(**overrides)
    for word in words:
        assert word in str(err.value)


def test_dict_round_trip():
    cfg = Forge1Config.mini(vocab_size=1024, rope_theta=50000.0)
    assert Forge1Config.from_dict(cfg.to_dict()) == cfg


def test_unknown_dict_key_is_an_error():
    data = Forge1Config.tiny().to_dict() | {"n_expert": 8}
    with pytest.raises(ValueError, match="unknown key.*n_expert"):
        Forge1Config.from_dict(data)


def test_unknown_variant_lists_choices():
    with pytest.raises(ValueError, match="tiny, nano, mini"):
        Forge1Config.from_variant("huge")


def test_matches_reports_shape_fields_only():
    a, b = Forge1Config.nano(), Forge1Config.nano(dropout=0.1, dim=768)
    assert a.matches(b) == []
    assert a.matches(Forge1Config.mini()) == ["dim", "n_layers", "n_heads", "ffn_dim"]


def test_preset_name_reads_the_shape_not_the_vocab():
    for name in VARIANTS:
        assert Forge1Config.from_variant(name, vocab_size=448).preset_name() == name
    assert Forge1Config.nano(n_layers=13).preset_name() is None
    assert Forge1Config.tiny(max_seq_len=64).preset_name() == "tiny"  # length is not shape


def test_every_variant_choice_comes_from_the_presets(capsys):
    import argparse

    from aethermind.artifacts import loading
    from aethermind.training import plan, train

    assert tuple(PRESETS) == VARIANTS
    parser = argparse.ArgumentParser()
    loading.add_model_args(parser)
    choices = {a.dest: a.choices for a in parser._actions}
    assert tuple(choices["variant"]) == VARIANTS
    for module in (plan, train):
        with pytest.raises(SystemExit):
            module.main(["--variant", "huge"])
        err = capsys.readouterr().err
        assert "invalid choice: 'huge'" in err and all(repr(v) in err for v in VARIANTS)
