"""Data: the INbreast reader, the phantom that imitates it, and the patch store.

One concept per module:

* :mod:`.inbreast`  -- DICOM images, XML regions of interest, INbreast.csv, case lists
* :mod:`.dicom`     -- one DICOM mammogram, parsed once, any transfer syntax with its decoder
* :mod:`.breast`    -- breast mask, largest region, the 8-bit window primitives
* :mod:`.intensity` -- ``to_network_input``: any image -> the network's 8-bit input and mask
* :mod:`.images`    -- the one reading path of ``scan`` and the page (ScanImage)
* :mod:`.renditions` -- one DICOM saved as every container (format tests, benchmark)
* :mod:`.clusters`  -- microcalcification clusters (>= 3 calcifications within 1 cm^2)
* :mod:`.phantom`   -- synthetic mammograms written in the INbreast layout
* :mod:`.augment`   -- the paper's four geometric transforms
* :mod:`.split`     -- train/validation/test split by patient, and the leakage audit
* :mod:`.pngfolder` -- a folder of PNG patches with class subfolders ``0/`` and ``1/``
* :mod:`.patches`   -- patch extraction, the ``.npz`` patch store, ``shallowcnn patches``

Import the submodules directly (``from shallowcnn.data.patches import load_patches``);
nothing heavy is imported here.
"""
