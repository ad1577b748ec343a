"""Training: config, loop (AdamW, schedules, AMP, DDP), checkpoints, metrics, plots, CLI.

Import the submodules directly (``from spiking.training.loop import train``); importing this
package loads nothing heavy.
"""
