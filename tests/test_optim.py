"""The shared optimizer and schedule: fused where torch allows, cosine over the run Lightning plans."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from lightning_modules.core.optim import adam, cosine_schedule


def test_adam_is_fused_on_cpu_and_keeps_groups():
    net = torch.nn.Linear(4, 2)
    optimizer = adam([{"params": [net.weight], "weight_decay": 0.1, "name": "w"},
                      {"params": [net.bias], "weight_decay": 0.0, "name": "b"}], lr=1e-3)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["fused"] is True
    assert [g["name"] for g in optimizer.param_groups] == ["w", "b"]
    plain = adam(net.parameters(), decoupled_weight_decay=False, lr=1e-3, weight_decay=5e-4)
    assert type(plain) is torch.optim.Adam and plain.defaults["fused"] is True


def test_fused_adam_takes_the_same_steps_as_the_loop():
    torch.manual_seed(0)
    nets = [torch.nn.Linear(8, 3) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    optimizers = [adam(nets[0].parameters(), lr=1e-2, weight_decay=1e-2),
                  torch.optim.AdamW(nets[1].parameters(), lr=1e-2, weight_decay=1e-2, foreach=False)]
    x, y = torch.randn(16, 8), torch.randn(16, 3)
    for _ in range(20):
        for net, optimizer in zip(nets, optimizers):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(net(x), y).backward()
            optimizer.step()
    torch.testing.assert_close(nets[0].weight, nets[1].weight, rtol=1e-5, atol=1e-6)


def test_meta_parameters_fall_back_to_the_loop():
    net = torch.nn.Linear(4, 2, device="meta")
    assert adam(net.parameters(), lr=1e-3).defaults["fused"] is False


class _Tiny(L.LightningModule):
    def __init__(self, warmup: int):
        super().__init__()
        self.layer, self.warmup, self.rates = torch.nn.Linear(2, 1), warmup, []

    def training_step(self, batch, batch_idx):
        self.rates.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return cosine_schedule(self, adam(self.parameters(), lr=0.1), self.warmup)


@pytest.mark.parametrize("warmup", [0, 3])
def test_cosine_schedule_warms_up_then_decays_to_zero_over_the_planned_steps(tmp_path, warmup):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=2)
    module = _Tiny(warmup)
    L.Trainer(max_steps=11, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=tmp_path).fit(module, data)
    assert len(module.rates) == 11
    expected = [0.1 * (k + 1) / warmup if k < warmup else
                0.1 * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (11 - warmup))) for k in range(11)]
    assert module.rates == pytest.approx(expected)
    assert module.rates[-1] < 0.01 and max(module.rates) == pytest.approx(0.1)
