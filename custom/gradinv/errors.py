"""Exception types with messages meant for users: each names the problem and what to do about it."""


class GradinvError(Exception):
    """Base class for errors the CLI reports as one line (no traceback)."""


class AttackInputError(GradinvError, ValueError):
    """The attacker's inputs (global model, diff, recipe, number of images) are malformed or inconsistent."""


class DataError(GradinvError):
    """An image folder, datalist or dataset file cannot be used as asked."""


class AssetMissingError(GradinvError):
    """An offline asset (LPIPS weights, the sample data set) has not been built; run `gradinv assets`."""


class ConfigurationError(GradinvError, ValueError):
    """Settings that cannot work (an unknown option, a model class that cannot be built): raised at construction."""
