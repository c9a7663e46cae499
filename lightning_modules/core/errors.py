"""Errors the user can fix, raised wherever the mistake is found (a reader of a dataset
folder, a loss that stops being finite). The stage runtime reports them in one line."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's params or inputs (not a bug in subjectlab)."""


class InputDataError(UserError):
    """An input folder or file (subjects, scenes, images, masks) is missing or invalid."""
