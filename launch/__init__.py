"""Thin absl launchers: parse --config and --workdir, call one function of nasr.experiment."""
