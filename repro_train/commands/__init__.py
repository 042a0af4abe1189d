"""The console commands, one module each (`repro-train <command>`, see cli.py). Nothing in the package imports them."""
