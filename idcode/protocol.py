"""The numbers terminals and the service agree on, defined once for both sides: how far
their clocks may differ, how long a trust bundle may stay fresh, how many events one upload
carries. (The request token itself is ``idcode.terminaltoken``.)"""

from __future__ import annotations

#: Seconds a terminal's clock may differ from the service's. The service judges a terminal's
#: request token within it (so a terminal that drifted while offline can still sync and learn
#: so), and a terminal refuses trust signed further than this in its own future.
MAX_CLOCK_DRIFT = 600

#: The longest a trust bundle may stay fresh (``IDCODE_BUNDLE_MAX_AGE_SECONDS`` at most): a
#: terminal decides offline for up to this long, and may upload events that old.
MAX_BUNDLE_MAX_AGE = 30 * 86_400

#: Events in one upload, at most.
MAX_EVENTS_PER_BATCH = 1000

#: The header a terminal reports its journal's backlog in (events not yet uploaded) on each
#: sync and upload request, for the fleet's metrics (docs/operations.md); a decimal count up to
#: MAX_JOURNAL_BACKLOG (a journal holding more reports that much).
JOURNAL_BACKLOG_HEADER = "Idcode-Journal-Backlog"
MAX_JOURNAL_BACKLOG = 2**31 - 1
