"""The error raised for data that cannot be used as the spec asks."""


class DataError(ValueError):
    """A dataset problem a user can fix: a missing column, an unreadable file, labels out of range.

    The message names the spec field or file, the bad value and what is accepted."""
