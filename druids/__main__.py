"""`python -m druids` = the `druids` command."""

from druids.cli import app

app(prog_name="druids")
