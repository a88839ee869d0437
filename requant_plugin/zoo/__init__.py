"""Model zoo: CIFAR-10 ResNets and a MobileNetV2 (weights shipped) with safe weight loading, and a tiny CNN."""

from requant_plugin.zoo.registry import (
    MODELS_DIR_ENV,
    available_models,
    build_model,
    default_weights_path,
    is_model_name,
    load_model,
    load_state_dict_file,
    packaged_weights_path,
)
from requant_plugin.zoo.resnet_cifar import (
    BasicBlock,
    CifarResNet,
    LambdaShortcut,
    OptionAShortcut,
    count_parameters,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
)
from requant_plugin.zoo.small_cnn import SmallCNN, train_small_cnn

__all__ = [
    "MODELS_DIR_ENV",
    "BasicBlock",
    "CifarResNet",
    "LambdaShortcut",
    "OptionAShortcut",
    "SmallCNN",
    "available_models",
    "build_model",
    "count_parameters",
    "default_weights_path",
    "is_model_name",
    "load_model",
    "load_state_dict_file",
    "packaged_weights_path",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "train_small_cnn",
]
