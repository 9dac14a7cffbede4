"""Every subcommand of ``crux-gen``, one function each, gathered from the modules
that hold them by what they do to flows:

- :mod:`~crux_gen.cli.queries` reads and changes nothing: ``list``, ``count``, ``show``,
  ``doctor``;
- :mod:`~crux_gen.cli.control` changes stored flows without running them:
  ``signal``, ``cancel``, ``retry``, ``delete``, ``prune``;
- :mod:`~crux_gen.cli.pause` pauses and unpauses one flow: ``pause``, ``unpause``;
- :mod:`~crux_gen.cli.deploy` imports the user's MODULE: ``replay``, ``worker``;
- :mod:`~crux_gen.cli.start` creates a flow of the user's MODULE: ``start``;
- :mod:`~crux_gen.cli.fork` creates a flow from another's history: ``fork``;
- :mod:`~crux_gen.cli.migrate` copies every flow to another store: ``migrate``;
- :mod:`~crux_gen.cli.ui` serves the dashboard: ``ui``;
- :mod:`~crux_gen.cli.schedules` lists and changes cron schedules: ``schedules``,
  ``schedule pause|resume|trigger|backfill``.

A new subcommand goes into the module of its kind and into ``COMMANDS``.
"""

from __future__ import annotations

from .control import cancel_command, delete_command, prune_command, retry_command, signal_command
from .deploy import replay_command, worker_command
from .fork import fork_command
from .limits import limits_command
from .migrate import migrate_command
from .pause import pause_command, unpause_command
from .queries import count_command, doctor_command, list_command, show_command
from .schedules import schedule_group, schedules_command
from .start import start_command
from .ui import ui_command

COMMANDS = (
    list_command,
    count_command,
    show_command,
    start_command,
    signal_command,
    cancel_command,
    pause_command,
    unpause_command,
    retry_command,
    fork_command,
    delete_command,
    prune_command,
    doctor_command,
    limits_command,
    replay_command,
    worker_command,
    migrate_command,
    ui_command,
    schedules_command,
    schedule_group,
)
