"""The trainable and what it stands on: data sources, the decode-once cache, backbones, heads,
losses, augmentation, staged fine-tuning, Adaptive Sparse Training and metrics."""

from ._ast import ASTController
from ._augment import AUGMENT_LEVELS, augment_batch, build_augment, mix_batch, preprocess
from ._cache import DataConfig, Dataset, load_dataset, open_cached
from ._errors import ConfigError, check_keys, did_you_mean
from ._groups import pool_by_group
from ._heads import HEADS, Classifier, FoldAverage, build_classifier, build_member, create_head
from ._losses import LOSSES, create_loss, list_losses, register_loss
from ._metrics import METRICS, compute_metrics, metric_mode
from ._model import check_backbone, create_model
from ._optim import OPTIMIZERS, SCHEDULERS, create_optimizer, create_scheduler
from ._params import TrainParams
from ._registry import Interval, Options, Registry, StrOptions, registries
from ._sampling import SAMPLERS
from ._prior import PRIOR_CORRECTIONS, prior_logit_bias
from ._probe import Speed, measure_speed
from ._dicom import DicomSource
from ._sources import IMAGE_EXTENSIONS, SOURCES, CSVSource, FolderSource, MedMNISTSource, Source, create_source, read_image_file
from ._volumes import NiftiSource
from ._tta import TTA_FLIPS, flip_average, flip_views, trained_flips
from ._train import Trainer, TrainingDiverged, drop_resume_state, predictions_frame, train
from ._params import DEADLINE_KEY, TUNE_KEY

__all__ = [
    "DEADLINE_KEY",
    "TUNE_KEY",
    "Interval",
    "Options",
    "Registry",
    "SAMPLERS",
    "SOURCES",
    "Source",
    "StrOptions",
    "registries",
    "AUGMENT_LEVELS",
    "ASTController",
    "CSVSource",
    "Classifier",
    "ConfigError",
    "DataConfig",
    "Dataset",
    "FoldAverage",
    "DicomSource",
    "FolderSource",
    "HEADS",
    "IMAGE_EXTENSIONS",
    "LOSSES",
    "METRICS",
    "MedMNISTSource",
    "NiftiSource",
    "OPTIMIZERS",
    "PRIOR_CORRECTIONS",
    "SCHEDULERS",
    "Speed",
    "TTA_FLIPS",
    "TrainParams",
    "Trainer",
    "TrainingDiverged",
    "augment_batch",
    "build_augment",
    "build_classifier",
    "build_member",
    "check_backbone",
    "check_keys",
    "compute_metrics",
    "create_head",
    "create_loss",
    "create_model",
    "create_optimizer",
    "create_scheduler",
    "create_source",
    "did_you_mean",
    "drop_resume_state",
    "flip_average",
    "flip_views",
    "list_losses",
    "load_dataset",
    "measure_speed",
    "metric_mode",
    "mix_batch",
    "open_cached",
    "pool_by_group",
    "predictions_frame",
    "preprocess",
    "prior_logit_bias",
    "read_image_file",
    "register_loss",
    "train",
    "trained_flips",
]
