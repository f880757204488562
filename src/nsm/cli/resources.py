"""What a run can use: ``nsm fetch`` downloads a dataset into the data folder, ``nsm models``
lists the registered models."""

from __future__ import annotations


def _fetch(args) -> int:
    from ..data import fetch_mnist
    from ..data.cifar import fetch_cifar
    from ..data.emnist import fetch_emnist
    from ..data.fashion import fetch_fashion_mnist
    from ..data.nmnist import fetch_nmnist

    if args.split is not None and args.dataset != "emnist":
        raise ValueError(f"--split chooses an EMNIST split; {args.dataset} has none")
    fetchers = {
        "mnist": lambda: fetch_mnist(args.data_dir),
        "fashion-mnist": lambda: fetch_fashion_mnist(args.data_dir),
        "emnist": lambda: fetch_emnist(args.data_dir, args.split or "letters"),
        "nmnist": lambda: fetch_nmnist(args.data_dir),
        "cifar10": lambda: fetch_cifar(10, args.data_dir),
        "cifar100": lambda: fetch_cifar(100, args.data_dir),
    }
    folder = fetchers[args.dataset]()
    print(f"{args.dataset} is in {folder}")
    return 0


def _models(args) -> int:
    from ..models import MODELS

    width = max(len(n) for n in MODELS.names())
    for name in MODELS.names():
        print(f"{name:<{width}}  {MODELS.get(name).description}")
    return 0
