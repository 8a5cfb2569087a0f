"""Officer pages: sign-in in ``login``, review and decisions in ``review``."""
