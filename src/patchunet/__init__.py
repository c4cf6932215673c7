"""PatchUNet: nuclei segmentation on MoNuSeg H&E images, tracked with DVC and MLflow."""
