"""Figures about the code itself (module sizes, which stages a change reruns), for any checkout."""
