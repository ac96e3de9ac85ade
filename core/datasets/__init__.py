"""Dataset archives: safe extraction under limits, layout inspection, normalised packing."""
