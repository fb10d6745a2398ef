"""Subcommands beyond list/show/run: one module per command, each registering itself with
`kzoo.commands.base.command`.

`kzoo.cli` imports every module in this package, so adding a command is adding a file. A
command module imports `kzoo.commands.base`, never `kzoo.cli` (which imports it).
"""
