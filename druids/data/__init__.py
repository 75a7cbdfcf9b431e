"""Data sources: the Held–Suarez world, ERA5 readers, and the training dataset."""
