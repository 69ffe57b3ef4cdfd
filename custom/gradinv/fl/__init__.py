"""NVFlare glue: the client training script, the server filter and the job builders.

``from gradinv.fl import GradInversionAggregatorFilter``
"""


def __getattr__(name: str):
    # Lazy, so that importing gradinv.fl.* helpers does not import NVFlare's server stack.
    if name == "GradInversionAggregatorFilter":
        from gradinv.fl.filter import GradInversionAggregatorFilter

        return GradInversionAggregatorFilter
    raise AttributeError(name)


__all__ = ["GradInversionAggregatorFilter"]
