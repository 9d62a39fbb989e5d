"""The DifIISR-DWT pipeline (``pipeline_difiisr_dwt``) and its sibling files ``image_processor``, ``tiling``
and ``fidelity``: the Hub folder's pipeline code files (``difiisr-dwt export`` writes them there)."""
