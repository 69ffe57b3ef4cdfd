"""Write the example's data: RGB medical pictures that scikit-image ships, as PNG files and one datalist per site.

Two classes from two kinds of colour medical image: ``fundus`` (crops of scikit-image's retina photograph) and
``histology`` (crops of its immunohistochemistry micrograph). site-1 holds one image, site-2 two
(one of each class); each datalist's ``test`` list holds crops no site trains on.

    python prepare_data.py --out DIR
"""

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

SIZE = 64  # the files are at the size the clients train at


def crops(picture: np.ndarray, count: int, seed: int) -> list[np.ndarray]:
    """``count`` square crops, a third of the picture's side, from the middle region of ``picture``.

    The seed is fixed: the same files every time."""
    rng = np.random.default_rng(seed)
    height, width = picture.shape[:2]
    side = min(height, width) // 3
    out = []
    for _ in range(count):
        top = int(rng.integers(height // 8, height - height // 8 - side))
        left = int(rng.integers(width // 8, width - width // 8 - side))
        out.append(picture[top : top + side, left : left + side, :3])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    images_dir, lists_dir = args.out / "images", args.out / "datalists"
    images_dir.mkdir(parents=True, exist_ok=True)
    lists_dir.mkdir(parents=True, exist_ok=True)
    by_class = {
        0: crops(data.retina(), 6, seed=0),
        1: crops(data.immunohistochemistry(), 6, seed=1),
    }
    entries = {label: [] for label in by_class}
    for label, pictures in by_class.items():
        for index, picture in enumerate(pictures):
            name = f"{'fundus' if label == 0 else 'histology'}_{index}.png"
            Image.fromarray(picture).resize((SIZE, SIZE), Image.BOX).save(images_dir / name)
            entries[label].append({"image": f"../images/{name}", "label": label})
    test = entries[0][3:] + entries[1][3:]
    sites = {"site-1": [entries[0][0]], "site-2": [entries[0][1], entries[1][0]]}
    for site, training in sites.items():
        (lists_dir / f"{site}.json").write_text(json.dumps({"training": training, "test": test}, indent=2))
    print(args.out)


if __name__ == "__main__":
    main()
