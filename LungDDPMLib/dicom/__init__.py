"""Other people's DICOM: CT series in (:mod:`.series`) and LIDC-IDRI reader XML to layouts (:mod:`.lidc_import`).

pydicom is an optional dependency (``pip install 'lungddpm[dicom]'``), imported only where a DICOM file is read,
so ``import LungDDPMLib`` and every command that needs no DICOM work without it. Import the submodules directly
(``from LungDDPMLib.dicom.series import read_ct_series``); this package's ``__init__`` stays empty on purpose.
"""
