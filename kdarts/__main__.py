"""Run the engine CLI as `python -m kdarts`."""

from kdarts.cli import main

main()
