"""Round safeguards: RAR_ALIGNMENT_TEMPERATURE, RAR_ALIGNMENT_PROBE_TURNS and RAR_ALIGNMENT_DPO_PAIRS reach the round config (a
diffuse retriever needs T < 1 to draw targets), and a retriever with non-finite weights never passes the gate."""

import pydantic
import pytest
import torch

from assets.alignment import _round_config
from rar_pipeline.settings import get_settings
from training.alignment import gumbel_topk_sets


@pytest.mark.parametrize(("variable", "field", "default", "value", "parsed", "invalid"), [
    ("RAR_ALIGNMENT_TEMPERATURE", "temperature", 0.2, "0.25", 0.25, "0"),  # default: see the setting
    ("RAR_ALIGNMENT_PROBE_TURNS", "probe_turns", None, "64", 64, "0"),  # default: every gate turn
    ("RAR_ALIGNMENT_DPO_PAIRS", "dpo_pairs", "extremes", "all", "all", "every"),
])
def test_round_settings_reach_the_round_config(rar_home, monkeypatch, variable, field, default, value, parsed, invalid):
    assert getattr(_round_config(), field) == default
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    assert getattr(_round_config(), field) == parsed
    monkeypatch.setenv(variable, invalid)
    get_settings.cache_clear()
    with pytest.raises(pydantic.ValidationError):
        get_settings()


def test_lower_temperature_draws_the_top_film_more_often():
    torch.manual_seed(0)
    logits = torch.randn(64, 5000) * 0.5  # a diffuse retriever over many films
    top = logits.argmax(-1, keepdim=True)

    def hit_rate(temperature):
        sets = gumbel_topk_sets(logits, 20, 4, temperature, torch.Generator().manual_seed(1))
        return (sets == top.unsqueeze(-1)).any(-1).float().mean().item()

    assert hit_rate(1.0) < 0.1 < 0.9 < hit_rate(0.05)


def test_weights_finite_flags_a_diverged_retriever():
    from training.alignment_round import weights_finite

    model = torch.nn.Linear(3, 2)
    assert weights_finite(model)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    assert not weights_finite(model)
