"""An NSM layer in your own model: a small classifier with one layer of noisy binary units.

NSMLinear works like nn.Linear: its output is a sample of +-1 states whose firing probability
is 1/2 (1 + erf(t)) of a weight-normalized drive t; training back-propagates through that
probability; predictions average the softmax over Monte-Carlo passes.

    python examples/nsm_layer_in_your_model.py      # about 10 s on a laptop CPU
"""

import torch
import torch.nn.functional as F
from torch import nn

import nsm

torch.manual_seed(0)

# two interleaved spirals, 2-D points, two classes
n = 2000
t = torch.rand(n) * 3 * torch.pi
label = torch.randint(0, 2, (n,))
radius = t / (3 * torch.pi)
x = torch.stack([radius * torch.cos(t + torch.pi * label), radius * torch.sin(t + torch.pi * label)], 1)
x = x + 0.03 * torch.randn_like(x)
train_x, train_y, test_x, test_y = x[:1500], label[:1500], x[1500:], label[1500:]

model = nn.Sequential(
    nn.Linear(2, 64),  # a real-valued first layer reads the coordinates
    nsm.NSMLinear(64, 256, p=0.5),  # 256 stochastic binary units, Bernoulli (blank-out) synapses
    nn.Linear(256, 2),  # a real-valued readout
)
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
for epoch in range(30):
    for idx in torch.randperm(1500).split(100):
        loss = F.cross_entropy(model(train_x[idx]), train_y[idx])  # one stochastic pass
        opt.zero_grad()
        loss.backward()  # through P: the gradient of 2P - 1
        opt.step()

probs = nsm.mc_predict(model, test_x, n_samples=50)  # mean softmax over 50 noisy passes
print(f"test error with 50 samples: {100 * nsm.error_rate(probs, test_y):.1f}%")
with nsm.forward_mode(model, "threshold"), torch.no_grad():  # the noise switched off, explicitly
    err = (model(test_x).argmax(-1) != test_y).float().mean()
print(f"test error of the noise-free threshold network: {100 * err:.1f}%")
print(model[1])  # reads like the paper's table: noise, sampler, estimator
