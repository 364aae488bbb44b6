"""Exceptions a user can act on. The CLI prints these as one line (exit 2) instead of a traceback."""

from __future__ import annotations

import sys


class GTCompressError(Exception):
    """Base class for every error caused by user input (bad file, bad tensor, bad option)."""


class GraphValidationError(GTCompressError, ValueError):
    """A graph tensor has the wrong dtype, shape or content; the message names the tensor."""


class CheckpointError(GTCompressError):
    """A checkpoint is missing, unreadable or does not match the model it claims to be."""


class DataFormatError(GTCompressError):
    """A dataset file on disk is missing or malformed; the message names the file."""


class UnsupportedModelError(GTCompressError):
    """A model (e.g. a PyG model to import) contains a module pattern we cannot convert."""


class ConfigError(GTCompressError, ValueError):
    """An option or configuration value is invalid (names the option and the accepted values)."""


class DataMismatchError(ConfigError):
    """A dataset cannot be read in a layout the model takes; raised where it is read, and named with the
    model by the caller, which knows the checkpoint."""


class ModelFileError(GTCompressError):
    """A model file given as input (ONNX, engine) is missing, unreadable, truncated or not a model."""


def json_limit(e: RecursionError | ValueError) -> str:
    """What a JSON text that :func:`json.loads` cannot read, though well-formed, goes past: nesting
    deeper than the interpreter's recursion limit, or an integer of more than
    ``sys.get_int_max_str_digits()`` digits (4300). Both are ``json.loads`` exceptions that are no
    ``JSONDecodeError``, so a file or metadata entry holding one escaped every reader as a traceback."""
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return f"a number has more than {sys.get_int_max_str_digits()} digits"
