"""TAGF model: shapes, gates, recursion, CCC, and that training on the teacher data learns."""

from __future__ import annotations

import pytest
import torch

from vibescope.stream.tagf.model import FUSIONS, StepGate, TagfConfig, TagfModel, TimeGate, ccc, ccc_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _inputs(b: int = 2, t: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, 12, generator=g), torch.randn(b, t, 25, generator=g)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_outputs_are_valence_arousal_in_unit_range(fusion: str) -> None:
    model = TagfModel(TagfConfig(fusion=fusion)).eval()
    v, a = _inputs()
    with torch.no_grad():
        y = model(v, a)
        ys = model.forward_sliding(v[:, :23], a[:, :23])
    assert y.shape == (2, 40, 2) and ys.shape == (2, 23, 2)
    assert y.abs().max() <= 1 and ys.abs().max() <= 1


def test_model_is_small_enough_for_many_sessions() -> None:
    assert all(TagfModel(TagfConfig(fusion=f)).n_params() < 500_000 for f in FUSIONS)


def test_recursion_keeps_input_and_every_iteration() -> None:
    model = TagfModel(TagfConfig(fusion="gate_steps", recursions=2)).eval()
    v, a = _inputs()
    with torch.no_grad():
        ev, ea = model.encode(v, a)
        sv, sa = model.stacks(ev, ea)
    assert sv.shape[2] == 3 and sa.shape[2] == 3
    assert torch.equal(sv[:, :, 0], ev) and torch.equal(sa[:, :, 0], ea)
    assert not torch.allclose(sv[:, :, 1], sv[:, :, 2])  # iterations have their own weights


@pytest.mark.parametrize("gate_cls", [StepGate, TimeGate])
def test_gate_weights_are_a_softmax_over_recursion_steps(gate_cls) -> None:
    torch.manual_seed(0)
    gate = StepGate(16, 8) if gate_cls is StepGate else TimeGate(16, 3, 8)
    stack = torch.randn(2, 10, 3, 16)
    fused, w = gate(stack)
    assert w.shape == (2, 10, 3)
    assert torch.allclose(w.sum(-1), torch.ones(2, 10), atol=1e-5)
    assert torch.allclose(fused, (stack * w.unsqueeze(-1)).sum(2), atol=1e-6)


def test_ccc_is_one_for_identical_and_minus_one_for_mirrored_series() -> None:
    x = torch.linspace(-1, 1, 50)
    assert ccc(x, x).item() == pytest.approx(1.0, abs=1e-5)
    assert ccc(x, -x).item() == pytest.approx(-1.0, abs=1e-5)
    assert ccc(x, x * 0.5).item() < 0.9  # scale errors are penalised, unlike Pearson


def test_ccc_loss_ignores_unlabelled_frames() -> None:
    t = torch.randn(1, 30, 2)
    p = t.clone()
    p[0, :10] = 5.0  # garbage where the mask says "no label"
    mask = torch.ones(1, 30, dtype=torch.bool)
    mask[0, :10] = False
    assert ccc_loss(p, t, mask).item() == pytest.approx(0.0, abs=1e-5)
    assert ccc_loss(p, t).item() > 0.1


def test_training_on_teacher_data_lowers_the_ccc_loss() -> None:
    from vibescope.stream.tagf.synthetic import make_batch
    from vibescope.stream.tagf.train import train_synthetic

    torch.set_num_threads(1)
    model, meta = train_synthetic("gate_steps", steps=40, batch=4, n_frames=80, progress=False)
    b = make_batch(123, 8, 120)
    untrained = TagfModel(TagfConfig(fusion="gate_steps")).eval()
    with torch.no_grad():
        loss_trained = ccc_loss(
            model.forward_sliding(torch.from_numpy(b.visual), torch.from_numpy(b.audio)), torch.from_numpy(b.target)
        )
        loss_untrained = ccc_loss(
            untrained.forward_sliding(torch.from_numpy(b.visual), torch.from_numpy(b.audio)), torch.from_numpy(b.target)
        )
    assert loss_trained < loss_untrained - 0.1
