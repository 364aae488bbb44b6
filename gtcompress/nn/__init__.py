"""Building blocks shared by every model (one attention definition, encoders, FFN, MPNN)."""
