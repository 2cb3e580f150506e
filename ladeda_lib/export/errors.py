"""The one exception type of the export package.

Introduced in notebook 08.
"""

from __future__ import annotations


class ExportError(ValueError):
    """An export, conversion or verification step that cannot go on; the message says what and why.

    A ``ValueError`` so that ``ladeda export`` turns it into a one-line error and exit status 1.
    """
