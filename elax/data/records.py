"""Random-access image records for the streamed pipeline: record i -> (image, label), where the image is encoded
bytes (JPEG folders, TFDS array_record) or a decoded uint8 array (a dataset held in memory). Picklable, since
Grain's worker processes receive them; no JAX here.
"""

import dataclasses
import os

import numpy as np

from elax.data import catalog
from elax.data.datasets import default_roots, tfds_version

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp")


def _images_in(folder: str) -> list:
    """Sorted names of the image files in `folder`, hidden ones left out; a broken link or an image name on
    something that is not a file (a folder, a pipe that would block the reader for ever) is an error now, not an
    hour into training."""
    images = []
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or not entry.name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        if entry.is_symlink() and not os.path.exists(entry.path):
            raise FileNotFoundError(f"{entry.path} is a broken symbolic link. Replace or delete it.")
        if not entry.is_file():
            raise ValueError(f"{entry.path} has an image's name but is not a file (a folder, pipe or device). "
                             "Move it out of the class folder.")
        images.append(entry.name)
    return sorted(images)


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """`root/<class>/<image>` (torchvision's ImageFolder layout): classes are the sorted sub-folder names."""

    root: str
    classes: tuple
    files: np.ndarray       # '<class>/<file>' of every image, sorted
    labels: np.ndarray      # int32
    encoded = True

    @classmethod
    def scan(cls, root: str, classes: tuple | None = None) -> "ImageFolder":
        """Index `root`; `classes` (the train split's) fixes the label of each folder name for other splits."""
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{root} does not exist: an ImageFolder split is a folder of class folders "
                                    "(train/<class>/*.JPEG, val/<class>/*.JPEG).")
        # Hidden entries (.ipynb_checkpoints, macOS's ._ files) are not data; a hidden folder would take label 0.
        found = tuple(sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")))
        training = classes is None
        classes = found if training else tuple(classes)
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise ValueError(f"{root} has class folders the training split lacks: {unknown[:5]}. Both splits "
                             "need the same class folder names.")
        files, labels = [], []
        for label, name in enumerate(classes):
            folder = os.path.join(root, name)
            images = _images_in(folder) if os.path.isdir(folder) else []
            if training and not images:
                raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}): a class without "
                                 "training images would get a label the network never sees. Delete the folder or "
                                 "add its images.")
            files += [f"{name}/{f}" for f in images]
            labels += [label] * len(images)
        if not files:
            loose = len(_images_in(root))   # outside class folders
            hint = (f" It holds {loose} images directly: sort them into one folder per class ({root}/<class>/; "
                    "ImageNet's validation images come unsorted, and its devkit's labels say which class each "
                    "is).") if loose else ""
            raise FileNotFoundError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in class "
                                    f"folders.{hint}")
        if training and len(classes) < 2:
            raise ValueError(f"{root} has {len(classes)} class folder {list(classes)}: classification needs at "
                             "least two (train/<class>/*.JPEG, one folder per class).")
        return cls(root, classes, np.asarray(files), np.asarray(labels, np.int32))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[bytes, int]:
        with open(self.where(index), "rb") as f:
            return f.read(), int(self.labels[index])

    def where(self, index: int) -> str:
        """Where record `index` is stored, for messages: its file."""
        return os.path.join(self.root, str(self.files[index]))


@dataclasses.dataclass(frozen=True)
class TFDSRecords:
    """A prepared TFDS dataset in array_record format (`tfds.data_source`), images left encoded."""

    name: str
    split: str
    data_dir: str
    encoded = True

    @property
    def _source(self):
        # Opened lazily in each process (file handles do not pickle), once per process.
        source = _TFDS_OPEN.get(self)
        if source is None:
            import tensorflow_datasets as tfds
            source = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir, download=False,
                                      decoders={"image": tfds.decode.SkipDecoding()})
            _TFDS_OPEN[self] = source
        return source

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> tuple[bytes, int]:
        example = self._source[int(index)]
        return example["image"], int(example["label"])

    def where(self, index: int) -> str:
        """Where record `index` is stored, for messages."""
        return f"record {index} of {self.name}'s {self.split} split in {self.data_dir}"

    @property
    def num_classes(self) -> int:
        import tensorflow_datasets as tfds
        return tfds.builder(self.name, data_dir=self.data_dir).info.features["label"].num_classes


_TFDS_OPEN: dict = {}


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayRecords:
    """Decoded uint8 images [N, H, W, C] held in memory (a small dataset read through the streamed path)."""

    images: np.ndarray
    labels: np.ndarray
    encoded = False

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])


# -- finding a streamed dataset on disk ---------------------------------------------------------------------------

IMAGENET_MEAN = (0.485, 0.456, 0.406)   # of images / 255 (torchvision's); used for every ImageFolder dataset
IMAGENET_STD = (0.229, 0.224, 0.225)
_EVAL_SPLITS = ("val", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Splits:
    """The records of a streamed dataset and what normalises them."""

    train: object
    test: object
    num_classes: int
    mean: tuple
    std: tuple
    where: str


def open_splits(name: str, data_dir: str) -> Splits:
    """A streamed dataset's records: an ImageFolder tree (DIR/train/<class>/*, DIR/val/<class>/*) or, for datasets
    that may be prepared by tensorflow_datasets (`imagenet2012`), an array_record data dir. Never downloads; a
    missing dataset names every place looked and how to provide it."""
    if data_dir and not os.path.isdir(os.path.expanduser(data_dir)):
        raise FileNotFoundError(f"data dir {data_dir!r} does not exist (or is not a directory)")
    prepared = "tfds-array_record" in catalog.get(name).formats
    roots = [data_dir] if data_dir else default_roots()
    looked = []
    for root in roots:
        root = os.path.abspath(os.path.expanduser(root))
        if prepared:
            looked.append(f"{os.path.join(root, name, '<version>')} (tensorflow_datasets, array_record)")
            if tfds_version(root, name) is not None:
                return _tfds_splits(name, root)
        for folder in ([root] if not prepared or data_dir else [root, os.path.join(root, name)]):
            looked.append(f"{folder}/train and {folder}/val (ImageFolder: <split>/<class>/<image>)")
            if os.path.isdir(os.path.join(folder, "train")):
                return _folder_splits(folder)
            if data_dir and os.path.exists(os.path.join(folder, "train")):
                raise FileNotFoundError(f"{os.path.join(folder, 'train')} is a file, not a folder: an ImageFolder "
                                        "tree is DIR/train/<class>/<image> and DIR/val/<class>/<image>.")
    advice = ("pass config.data.dir=DIR with DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG (the val images "
              "sorted into class folders)")
    if prepared:
        advice += (f", or DIR a tensorflow_datasets data dir where `{name}` was prepared in array_record format "
                   "(needs TensorFlow once: see docs/data.md)")
    if tree := _tree_of_split(data_dir):
        advice = f"data.dir names a split of an ImageFolder tree; pass the tree, config.data.dir={tree}"
    places = "\n".join(f"  - {p}" for p in looked)
    raise FileNotFoundError(f"dataset {name!r} not found. Looked in:\n{places}\nTo provide it: {advice}.")


def _tree_of_split(data_dir: str) -> str | None:
    """The ImageFolder tree whose train/ or val/ folder `data_dir` is, if it is one."""
    if not data_dir:
        return None
    folder = os.path.abspath(os.path.expanduser(data_dir))
    tree = os.path.dirname(folder)
    split = os.path.basename(folder)
    return tree if split in ("train", *_EVAL_SPLITS) and os.path.isdir(os.path.join(tree, "train")) else None


def _folder_splits(folder: str) -> Splits:
    train = ImageFolder.scan(os.path.join(folder, "train"))
    split = next((s for s in _EVAL_SPLITS if os.path.isdir(os.path.join(folder, s))), None)
    if split is None:
        raise FileNotFoundError(f"{folder} has train/ but no evaluation split ({', '.join(_EVAL_SPLITS)}/ with the "
                                "same class folders).")
    test = ImageFolder.scan(os.path.join(folder, split), train.classes)
    absent = [name for label, name in enumerate(train.classes) if label not in set(test.labels.tolist())]
    classes = f"{len(absent)} class{'es' if len(absent) > 1 else ''}: {', '.join(absent[:3])}" + (
        ", ..." if len(absent) > 3 else "")
    note = f" (its {split}/ has no images of {classes})" if absent else ""
    return Splits(train, test, len(train.classes), IMAGENET_MEAN, IMAGENET_STD, f"ImageFolder {folder}{note}")


def _tfds_splits(name: str, root: str) -> Splits:
    train = TFDSRecords(name, "train", root)
    try:
        len(train)
    except Exception as e:  # tfds raises various types for a dataset prepared as tfrecord or damaged
        raise ValueError(f"{name} in {root} cannot be read as array_record ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]}). Prepare it with `tfds build {name} "
                         "--file_format=array_record`.") from None
    return Splits(train, TFDSRecords(name, "validation", root), train.num_classes, IMAGENET_MEAN, IMAGENET_STD,
                  f"tensorflow_datasets {root}")
