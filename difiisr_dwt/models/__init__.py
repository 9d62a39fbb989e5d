"""The DWT encoder (``modeling_dwt_encoder``): the Hub folder's ``dwt_encoder/modeling_dwt_encoder.py``."""
