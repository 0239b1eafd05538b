"""The fusion item tower with audio and video tokens: missing ones are masked, present ones are read."""

from __future__ import annotations

from dataclasses import replace

import torch

from recsys_core.encoders.features import SequenceFeatures
from recsys_core.encoders.sequence import TimeSteps
from recsys_core.model.content import media_tokens
from recsys_core.model.fusion import FusionConfig, ItemContent, ItemTower


def _content(n: int = 3, *, audio_dim: int = 5) -> ItemContent:
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(n, 4, audio_dim, generator=g)
    audio_mask = torch.ones(n, 4, dtype=torch.bool)
    audio_mask[1] = False  # item 1 has no audio
    return ItemContent(text_tokens=torch.randn(n, 3, 6, generator=g), text_mask=torch.ones(n, 3, dtype=torch.bool),
                       regions=torch.randn(n, 4, 4, generator=g), has_image=torch.ones(n, dtype=torch.bool),
                       audio_tokens=audio, audio_mask=audio_mask)


def _tower(**options) -> ItemTower:
    torch.manual_seed(0)
    return ItemTower(FusionConfig(text_dim=6, image_dim=4, width=8, heads=2, dropout=0.0, **options)).eval()


def test_missing_audio_tokens_are_masked_out_of_the_attention() -> None:
    tower, content = _tower(audio_dim=5), _content()
    before = tower(content).vectors
    noisy = content.audio_tokens.clone()
    noisy[1] = 100.0  # garbage in the masked slots of the item without audio
    noisy[0, 0, 0] += 3.0  # and a real change for item 0 (not a constant shift, which LayerNorm removes)
    after = tower(replace(content, audio_tokens=noisy)).vectors
    assert torch.allclose(before[1], after[1], atol=1e-6)
    assert not torch.allclose(before[0], after[0], atol=1e-4)
    assert torch.allclose(before[2], after[2], atol=1e-6)


def test_a_text_and_image_config_keeps_its_parameters() -> None:
    plain, with_audio = _tower(), _tower(audio_dim=5)
    assert not any("audio" in k or "media" in k for k in plain.state_dict())
    assert {k for k in with_audio.state_dict()} - set(plain.state_dict()) == {
        "audio_proj.0.weight", "audio_proj.0.bias", "audio_proj.1.weight", "audio_proj.1.bias", "media_modality"}


def test_media_tokens_pool_each_item_over_time_and_mask_the_rest() -> None:
    steps = [TimeSteps(torch.arange(12.0).reshape(6, 2), torch.zeros(6), torch.zeros(6), torch.ones(6)), None,
             TimeSteps(torch.ones(1, 2), torch.zeros(1), torch.zeros(1), torch.ones(1))]
    seq = SequenceFeatures(torch.zeros(3, 2), torch.tensor([True, False, True]), tuple(steps), "k")
    tokens, mask = media_tokens(seq, 3)
    assert mask.tolist() == [[True, True, True], [False, False, False], [True, False, False]]
    assert tokens[0].float().tolist() == [[1.0, 2.0], [5.0, 6.0], [9.0, 10.0]]  # pairs of steps averaged
    assert tokens[2, 0].float().tolist() == [1.0, 1.0]
