"""Typed, validated configuration, built once by the CLI or the caller and saved with every run
as config.json: the dataclasses (schema.py), reading files and dicts (io.py), and the command
line's view of the fields (options.py)."""

from accel_signs.config.io import (  # noqa: F401
    CONFIG_VERSION,
    SEED_RECIPE,
    current_version,
    default_cache_dir,
    from_dict,
    load_config_file,
    upgrade_v1,
)
from accel_signs.config.options import (  # noqa: F401
    ConfigOption,
    config_fields,
    config_options,
    get_path,
    set_path,
)
from accel_signs.config.schema import (  # noqa: F401
    BEST_METRICS,
    COMPILE_MODES,
    DEBUG_DEFAULTS,
    EVAL_PRECISION,
    HEAD_SIZES,
    INPUT_KINDS,
    LR_SCALING,
    MIXED_PRECISION,
    OPTIMIZERS,
    SCHEDULES,
    AugmentConfig,
    DataConfig,
    EvalConfig,
    InputConfig,
    ModelConfig,
    ModelSize,
    OptimConfig,
    Section,
    TrainConfig,
    check_choices,
    normalize_signer,
    option,
    parse_signers,
    parse_signs,
)
