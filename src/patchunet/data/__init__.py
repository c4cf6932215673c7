"""Data: the MoNuSeg files, label maps, the split, augmentation, the patch sets, and the dataset with its targets."""
