"""Built-in datasets."""

from .toy import CHECKERBOARD_ENTROPY, checkerboard, checkerboard_log_prob

__all__ = ["CHECKERBOARD_ENTROPY", "checkerboard", "checkerboard_log_prob"]
