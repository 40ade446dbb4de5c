"""The nnU-Net v2 baseline (method ``nnunet``): the real nnU-Net, 2D configuration, on our cross-sections.

`plaque.baselines.nnunet.run` drives it (``python -m plaque.baselines.nnunet``; data flow and environment
variables in its docstring); `export` converts our slices to nnU-Net's raw layout and its predictions back;
`settings` reads the ``nnunet`` section; `trainer` is the short-schedule trainer nnU-Net finds through
``nnUNet_extTrainer`` (folder ``ext/``). Importing this package does not import nnunetv2.
"""
