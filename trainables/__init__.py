"""The trainable and what it stands on: data sources, the decode-once cache, backbones, heads,
losses, augmentation, staged fine-tuning, Adaptive Sparse Training and metrics."""

from ._ast import ASTController
from ._augment import AUGMENT_LEVELS, augment_batch, build_augment, mix_batch, preprocess
from ._cache import DataConfig, Dataset, load_dataset
from ._errors import ConfigError
from ._heads import HEADS, Classifier, build_classifier, create_head
from ._losses import LOSSES, create_loss
from ._metrics import compute_metrics
from ._model import check_backbone, create_model
from ._optim import OPTIMIZERS, SCHEDULERS, create_optimizer, create_scheduler
from ._params import TrainParams
from ._sources import CSVSource, FolderSource, MedMNISTSource, create_source, read_image_file
from ._train import TrainingDiverged, drop_resume_state, predictions_frame, train

__all__ = [
    "AUGMENT_LEVELS",
    "ASTController",
    "CSVSource",
    "Classifier",
    "ConfigError",
    "DataConfig",
    "Dataset",
    "FolderSource",
    "HEADS",
    "LOSSES",
    "MedMNISTSource",
    "OPTIMIZERS",
    "SCHEDULERS",
    "TrainParams",
    "TrainingDiverged",
    "augment_batch",
    "build_augment",
    "build_classifier",
    "check_backbone",
    "compute_metrics",
    "create_head",
    "create_loss",
    "create_model",
    "create_optimizer",
    "create_scheduler",
    "create_source",
    "drop_resume_state",
    "load_dataset",
    "mix_batch",
    "predictions_frame",
    "preprocess",
    "read_image_file",
    "train",
]
