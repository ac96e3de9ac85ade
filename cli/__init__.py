"""The ``difftune`` console script (:mod:`cli.main`)."""
