"""A device study: how a trained NSM stands up to the non-idealities of in-memory hardware.

Trains a small fully connected bNSM on 10,000 MNIST images, then measures its test accuracy
with its weights stored on devices with few conductance levels, with a spread of the
blank-out probability from synapse to synapse, and with read noise.

    python examples/device_study.py [DATA_DIR]      # MNIST in DATA_DIR/mnist (fetched if missing)
"""

import sys

import torch
import torch.nn.functional as F

import nsm
from nsm.data import load_dataset
from nsm.studies.devices import DeviceModel, accuracy_under

torch.manual_seed(0)
data = load_dataset("mnist", sys.argv[1] if len(sys.argv) > 1 else None, train_subset=10_000, test_subset=1000)
model = nsm.build_model("bnsm-fc")  # 784-300-300-300, Bernoulli synapses p = 0.5
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(2):
    for idx in torch.randperm(data.train_x.shape[0]).split(100):
        loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

devices = {
    "ideal": DeviceModel(),
    "8 levels": DeviceModel(levels=8),
    "3 levels": DeviceModel(levels=3, clip_std=2.0),
    "p spread 0.1": DeviceModel(p_spread=0.1),
    "read noise 0.1": DeviceModel(read_noise=0.1),
}
acc = accuracy_under(model, data.test_x, data.test_y, devices, samples=20, generator=torch.Generator().manual_seed(0))
for name, a in acc.items():
    print(f"{name:>15}: test accuracy {100 * a:.1f}%")
