"""From an image to nuclei: sliding windows, post-processing, scale, `patchunet predict`."""
