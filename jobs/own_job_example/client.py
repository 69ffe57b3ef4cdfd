"""A hospital's NVFlare Client API training script: plain PyTorch, RGB images, normalised input, SGD.

The one gradinv line is marked: it adds what the server's leakage audit needs to know about local training
(optimiser, number of images, batch size, input shape, normalisation; never images or labels) to the meta.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import nvflare.client as flare
import torch
from model import HospitalNet
from nvflare.app_common.abstract.fl_model import FLModel
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from gradinv.fl import training_meta

SIZE = 64
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ImageFiles(Dataset):
    """Images listed in a datalist ({"training": [{"image": path, "label": int}, ...]}), normalised tensors."""

    def __init__(self, datalist: Path, key: str = "training"):
        entries = json.loads(datalist.read_text()).get(key, [])
        self.items = [(datalist.parent / entry["image"], int(entry["label"])) for entry in entries]
        self.mean, self.std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        path, label = self.items[index]
        image = Image.open(path).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (pixels - self.mean) / self.std, label


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="folder holding datalists/<site>.json")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()

    flare.init()
    site = flare.get_site_name()
    dataset = ImageFiles(Path(args.data) / "datalists" / f"{site}.json")
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True)
    model = HospitalNet()
    loss_function = torch.nn.CrossEntropyLoss()

    while flare.is_running():
        received = flare.receive()
        model.load_state_dict({name: torch.as_tensor(value) for name, value in received.params.items()})
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
        model.train()
        steps = 0
        for _ in range(args.epochs):
            for images, labels in loader:
                optimizer.zero_grad()
                loss_function(model(images), labels).backward()
                optimizer.step()
                steps += 1
        meta = {"NUM_STEPS_CURRENT_ROUND": steps}
        meta.update(training_meta(optimizer, loader, epochs=args.epochs, normalize=(MEAN, STD)))  # gradinv
        flare.send(FLModel(params=model.cpu().state_dict(), meta=meta))


if __name__ == "__main__":
    main()
