"""Random-weight stand-ins for downloaded backbones, written where the real loaders look.

Each writer saves a state dict with exactly the keys and shapes the library's own loader expects, at
``$TORCH_HOME/hub/checkpoints/<the real file name>`` under the ``torch_home`` it is given, so the
unchanged loading code (``torch.hub.load_state_dict_from_url`` finds the file and never downloads;
the hash in the name is only checked on download) runs offline. Deterministic: seeded per file.

Scores computed with these weights mean nothing; they only exercise the code paths.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from unittest import mock

import torch

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision AlexNet_Weights.IMAGENET1K_V1
VGG16_FILE = "vgg16-397923af.pth"  # torchvision VGG16_Weights.IMAGENET1K_V1
INCEPTION_FID_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch_fidelity URL_INCEPTION_V3


def _checkpoint(torch_home: str | Path, filename: str) -> Path:
    path = Path(torch_home) / "hub" / "checkpoints" / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _save(state_dict: dict, path: Path) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state_dict, tmp)
    tmp.replace(path)
    return path


def write_alexnet(torch_home: str | Path, seed: int = 0) -> Path:
    """torchvision AlexNet state dict (random init) as lpips' ``net='alex'`` trunk loads it."""
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.alexnet(weights=None)
    return _save(model.state_dict(), _checkpoint(torch_home, ALEXNET_FILE))


def write_vgg16(torch_home: str | Path, seed: int = 0) -> Path:
    """torchvision VGG16 state dict (random init) as lpips' ``net='vgg'`` trunk loads it."""
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.vgg16(weights=None)
    return _save(model.state_dict(), _checkpoint(torch_home, VGG16_FILE))


def random_inception_fid_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """State dict of torch-fidelity's ``FeatureExtractorInceptionV3`` built from the class itself.

    The constructor always loads weights, so it runs with loading stubbed out (nothing is read or
    fetched). PyTorch's default init gives ~1e-7 pool features, which makes every FID ~0, so convs
    and the final linear layer are re-initialised Kaiming-normal: features then separate sets.
    """
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    cls = fe.FeatureExtractorInceptionV3

    def no_fetch(*args, **kwargs):
        return {}

    with mock.patch.object(fe, "load_state_dict_from_url", no_fetch), mock.patch.object(
        cls, "load_state_dict", lambda self, *a, **k: None
    ):
        model = cls("inception-v3-compat", ["2048"])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=gen)
                if module.bias is not None:
                    module.bias.zero_()
    return {k: v.detach().clone().float() for k, v in model.state_dict().items()}


def write_inception_fid(torch_home: str | Path, seed: int = 0) -> Path:
    """The FID Inception (torch-fidelity / torchmetrics ``inception-v3-compat``) checkpoint."""
    return _save(random_inception_fid_state_dict(seed), _checkpoint(torch_home, INCEPTION_FID_FILE))


def hub_snapshot(staged: Path, hub: Path, repo_id: str, revision: str) -> Path:
    """Lay `staged`'s files out as huggingface_hub does under `hub` (HF_HUB_CACHE): blobs by hash, snapshot
    symlinks, refs/main. Returns the snapshot folder."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    for file in sorted(staged.iterdir()):
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    return snapshot
