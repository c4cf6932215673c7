"""Core: params.yaml's config, the error family, files, paths, locks, console lines and CPU shares."""
