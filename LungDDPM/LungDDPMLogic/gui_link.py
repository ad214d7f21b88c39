"""The one connection between the parameter node and the widgets bound to it, made and unmade by the module.

Why not ``connectGui``: on Slicer 5.6 and 5.8 ``connectGui`` returns None instead of the tag that ``disconnectGui``
needs, so each ``enter()`` connected the widgets once more and nothing was ever disconnected: every widget change
was written N times and every node change redrawn N times. And in every version each ``connectGui`` adds an
observer to the node that nothing removes. Here the connection is ours: the widgets' connectors (Slicer's
``createGuiConnector`` in the GUI; anything with ``read``, ``write`` and ``onChanged``) and the one node observer
are stored and removed again, so enter/exit/enter leaves exactly one connection. Qt-free (tested on a real MRML
node); the parameter node wrapper is used through ``getValue``, ``setValue`` and ``parameterNode`` only.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional

import vtk


class ParameterGuiLink:
    """At most one live connection; :meth:`connect` replaces the previous one, :meth:`disconnect` ends it."""

    def __init__(self) -> None:
        self.parameters: Optional[Any] = None
        self.connectors: Dict[str, Any] = {}
        self._node: Optional[Any] = None
        self._observer: Optional[int] = None
        self._writing = False

    @property
    def connected(self) -> bool:
        return self.parameters is not None

    def connect(self, parameters: Any, connectors: Mapping[str, Any]) -> None:
        """Show the parameters in the widgets and keep both in step until :meth:`disconnect`."""
        self.disconnect()
        self.parameters, self.connectors = parameters, dict(connectors)
        self._write_widgets()
        for name, connector in self.connectors.items():
            connector.onChanged(self._reader(name, connector))
        self._node = parameters.parameterNode
        self._observer = self._node.AddObserver(vtk.vtkCommand.ModifiedEvent, self._on_node_modified)

    def disconnect(self) -> None:
        """Detach every connector from its widget and the observer from the node (safe to call twice)."""
        for connector in self.connectors.values():
            connector.onChanged(None)
        if self._node is not None and self._observer is not None:
            self._node.RemoveObserver(self._observer)
        self.parameters, self.connectors, self._node, self._observer = None, {}, None, None

    def _on_node_modified(self, caller: Any = None, event: Any = None) -> None:
        self._write_widgets()

    def _write_widgets(self) -> None:
        """Parameter values -> widgets; the widgets' change signals meanwhile write nothing back."""
        if self._writing or self.parameters is None:
            return
        self._writing = True
        node = self.parameters.parameterNode
        was_modifying = node.StartModify()
        try:
            for name, connector in self.connectors.items():
                connector.write(self.parameters.getValue(name))
        finally:
            node.EndModify(was_modifying)
            self._writing = False

    def _reader(self, name: str, connector: Any) -> Callable[[], None]:
        def changed() -> None:
            if not self._writing and self.parameters is not None:
                self.parameters.setValue(name, connector.read())

        return changed
