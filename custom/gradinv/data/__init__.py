"""Data for gradinv: the offline sample set, per-site datalists, image loading and user-data loaders.

* :func:`build_sample` assembles real medical images from installed packages (a two-class task,
  ``mri`` vs ``xray_ct``, with train / public / test splits and the attacker's prior); see
  :mod:`gradinv.data.sample`.
* :func:`make_site_datalists`, :func:`demo_datalists`, :func:`load_datalist`: MONAI decathlon-style
  JSON datalists, one per FL site.
* :func:`load_image`, :func:`load_images`: any PNG/JPEG/BMP/TIFF/DICOM as grayscale or RGB [0, 1] arrays/tensors
  of any height x width.
* :func:`list_images` (and the per-format ``list_*``): folders (COVID-19 Radiography Database layout,
  class folders, flat), MedMNIST ``.npz``, CSV and JSON datalists as an :class:`ImageList`.

No NVFlare imports; torch is imported only by :func:`load_images`.
"""

from gradinv.data.datalists import hold_out, load_datalist, make_site_datalists
from gradinv.data.images import IMAGE_SUFFIXES, load_image, load_images, read_image_unit
from gradinv.data.sample import (
    CLASS_NAMES,
    SPLITS,
    build_sample,
    demo_datalists,
    load_prior,
    prior_path,
    read_provenance,
    sample_split,
)
from gradinv.data.sources import ImageList, list_csv, list_datalist, list_folder, list_images, list_medmnist_npz

__all__ = [
    "CLASS_NAMES",
    "IMAGE_SUFFIXES",
    "SPLITS",
    "ImageList",
    "build_sample",
    "demo_datalists",
    "hold_out",
    "list_csv",
    "list_datalist",
    "list_folder",
    "list_images",
    "list_medmnist_npz",
    "load_datalist",
    "load_image",
    "load_images",
    "make_site_datalists",
    "load_prior",
    "prior_path",
    "read_image_unit",
    "read_provenance",
    "sample_split",
]
