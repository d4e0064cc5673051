"""Dataset layout reader, label-budget subsets and MONAI transforms."""

from .dataset import (
    DatasetError,
    DatasetInfo,
    labeled_datalist,
    load_datalist,
    load_transfer_set,
    load_unlabeled,
    read_dataset_info,
    read_split,
    sample_dataset_dir,
    select_labeled,
    unlabeled_train_datalist,
    validate_dataset,
    validation_datalist,
)
from .transforms import CheckLabeld, ConvertChannelsd, LoadSliceOrImaged, augmentation, preprocessing
