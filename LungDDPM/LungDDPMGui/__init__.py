"""The Qt side of the LungDDPM module: parameter node, widget, background-task polling and the module logic class.

Why a package: Slicer registers every ``.py`` file at the top of a module folder as a module of its own, so the
module file's parts live here (like the qt-free :mod:`LungDDPMLogic`). Slicer loads ``LungDDPM.py``, and with it
this package, at every start: at module level these files import only ``qt``, ``ctk``, ``slicer`` and ``vtk``;
the logic package and the engine are imported inside the methods that need them.
"""
