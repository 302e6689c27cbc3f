"""The commands of the ``stagecache`` console script (wired in ``stagecache.cli``)."""
