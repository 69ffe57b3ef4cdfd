"""The attack core: pure PyTorch, no NVFlare. See :func:`attack_update` for the one-call entry point."""

from gradinv.attack.inputs import AttackInputs, validate_attack_inputs
from gradinv.attack.invert import InversionResult, attack_update, invert, resolve_device
from gradinv.attack.presets import (
    AUTO_PRESET,
    PRESET_NAMES,
    PRESETS,
    AttackConfig,
    ExchangeSearch,
    check_preset,
    get_preset,
    resolve_preset,
)
from gradinv.attack.replay import FunctionalReplay, replay_running_stats

__all__ = [
    "AUTO_PRESET",
    "AttackConfig",
    "AttackInputs",
    "ExchangeSearch",
    "FunctionalReplay",
    "InversionResult",
    "PRESETS",
    "PRESET_NAMES",
    "attack_update",
    "check_preset",
    "get_preset",
    "invert",
    "replay_running_stats",
    "resolve_preset",
    "resolve_device",
    "validate_attack_inputs",
]
