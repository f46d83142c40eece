"""Model packages: train once, ship the model with its card, install offline, export.

* :mod:`.card`: the model card (``model.json``) schema, building and validation;
* :mod:`.build`: ``transunet package`` (run or checkpoint -> ``NAME.zip``);
* :mod:`.verify`: the safety checks every package passes before use;
* :mod:`.store`: the local store under ``$TRANSUNET_HOME`` (install, list, show, remove);
* :mod:`.export`: ONNX, TorchScript and MONAI bundle exports.

Imports are lazy so ``--help`` stays instant.
"""
