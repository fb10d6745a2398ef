"""Subcommands beyond list/show/run: one module per command, each using `kzoo.cli.command`.

`kzoo.cli` imports every module in this package, so adding a command is adding a file.
"""
