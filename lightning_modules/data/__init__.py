"""Readers of users' dataset folders (a subjects folder, a Market-1501-style re-ID folder),
usable from a notebook without the stage layer."""
