"""NVFlare glue: the client training script, the server filter and the job builders.

``from gradinv.fl import GradInversionAggregatorFilter`` (the server line) and
``from gradinv.fl import training_meta`` (the client line).
"""


def __getattr__(name: str):
    # Lazy, so that importing gradinv.fl.* helpers does not import NVFlare's server stack.
    if name == "GradInversionAggregatorFilter":
        from gradinv.fl.filter import GradInversionAggregatorFilter

        return GradInversionAggregatorFilter
    if name == "training_meta":
        from gradinv.fl.meta import training_meta

        return training_meta
    raise AttributeError(name)


__all__ = ["GradInversionAggregatorFilter", "training_meta"]
