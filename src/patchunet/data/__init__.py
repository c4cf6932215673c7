"""Data: the MoNuSeg files, label maps, the split, augmentation and the patch sets."""
