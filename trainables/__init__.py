"""The trainable and what it stands on: data sources, the decode-once cache, backbones, metrics."""

from ._cache import DataConfig, Dataset, load_dataset
from ._errors import ConfigError
from ._metrics import compute_metrics
from ._model import check_backbone, create_model
from ._params import TrainParams
from ._sources import CSVSource, FolderSource, MedMNISTSource, create_source, read_image_file
from ._train import predictions_frame, train

__all__ = [
    "CSVSource",
    "ConfigError",
    "DataConfig",
    "Dataset",
    "FolderSource",
    "MedMNISTSource",
    "TrainParams",
    "check_backbone",
    "compute_metrics",
    "create_model",
    "create_source",
    "load_dataset",
    "predictions_frame",
    "read_image_file",
    "train",
]
