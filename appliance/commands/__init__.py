"""The ``appliance`` commands, one module per group; ``appliance.cli`` assembles them.

Each command takes the invocation's :class:`~appliance.commands.context.AppContext` from
``ctx.obj`` (settings, the one container, the running server's client, output helpers). Modules
here import the context module, never ``appliance.cli``, and hold no state of their own.
"""
