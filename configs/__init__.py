"""ml_collections config files: each has get_config(preset) with presets tiny, default, paper."""
