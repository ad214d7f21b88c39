"""The device selector's items and the remembered choice, without Qt.

Why: the device choice was never remembered. ``QComboBox.addItem`` on an empty box makes item 0 current and
emits ``currentIndexChanged(0)``; with the handler connected before the items were added, that first insert wrote
"auto" over the stored choice before it was read. Here writes are ignored while the items are (re)filled, and
the widget connects its handler only after the first fill (a static test checks the order in ``LungDDPM.py``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, MutableMapping, Optional, Sequence, Tuple

SETTINGS_DEVICE = "LungDDPM/Device"
DEFAULT_DEVICES: Tuple[Tuple[str, str], ...] = (("auto", "auto (GPU if available)"), ("cpu", "CPU"))


class DeviceChoice:
    """Items (value, label) for the device box and the stored choice in ``settings`` (QSettings in Slicer)."""

    def __init__(self, settings: MutableMapping[str, Any], key: str = SETTINGS_DEVICE) -> None:
        self.settings = settings
        self.key = key
        self.filling = False

    @property
    def remembered(self) -> str:
        return str(self.settings.get(self.key) or "auto")

    @staticmethod
    def items(devices_event: Optional[Dict[str, Any]] = None) -> List[Tuple[str, str]]:
        """The choices from a ``devices`` probe event (auto and CPU when there is none yet)."""
        found = (devices_event or {}).get("devices") or DEFAULT_DEVICES
        return [(str(value), str(label)) for value, label in found]

    def index_to_select(self, values: Sequence[str]) -> int:
        """Where the remembered device is among ``values`` (0, auto, when it is gone, e.g. a GPU removed)."""
        remembered = self.remembered
        return list(values).index(remembered) if remembered in values else 0

    @contextmanager
    def filling_items(self) -> Iterator[None]:
        """While the box is cleared and refilled, changes are not choices and are not remembered."""
        self.filling = True
        try:
            yield
        finally:
            self.filling = False

    def chosen(self, value: Optional[str]) -> None:
        """The user picked ``value``: remember it (ignored while filling, and for the empty value of a cleared box)."""
        if not self.filling and value:
            self.settings[self.key] = value
