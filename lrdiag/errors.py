"""The one user-error exception: caught at the CLI boundary, printed as one line, exit 2."""


class LrdiagError(Exception):
    """A usage, config or input mistake that the user can fix; never a bug."""
