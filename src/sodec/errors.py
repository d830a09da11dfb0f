"""Exceptions raised by sodec; the CLI maps every :class:`SodecError` to one stderr line and exit code 2."""

from __future__ import annotations


class SodecError(Exception):
    """Base class of every error a user can cause (bad file, bad image, wrong model)."""

    exit_code = 2


class FormatError(SodecError):
    """A `.sodec` file is not valid: bad magic, truncated, corrupted, unknown version, ..."""


class LimitError(FormatError):
    """An input declares more pixels than the configured limits allow."""


class ImageInputError(SodecError):
    """An input that should be an image is not one Pillow can read, or has an unsupported mode."""


class ModelError(SodecError):
    """A model cannot be found or loaded, or does not match the file being decoded."""


class OutputExistsError(SodecError):
    """The output path exists and ``--force`` was not given."""


class MetricUnavailable(SodecError):
    """A metric cannot be computed here; the message says why (shown as ``unavailable: <reason>``)."""
